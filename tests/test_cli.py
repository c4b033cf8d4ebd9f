"""The command line contract: outputs, exit codes, one-line errors, the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from helpers import STRICT_OPS, inject_zero_padding_bug, op_types, pool_model

from rewriter import cli
from rewriter.lower import max_pool


def cli_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewriter", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "in.onnx"
    onnx.save(pool_model("MaxPool", [1, 3, 9, 9], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), name="stem/pool"), path)
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_rewrite_validates_and_reports(model_path, tmp_path):
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    before = model_path.read_bytes()
    proc = cli_run(model_path, out, "--report", report_path)
    assert proc.returncode == 0, proc.stderr
    assert "stem/pool" in proc.stdout and "rewritten" in proc.stdout and "validation passed" in proc.stdout
    assert model_path.read_bytes() == before
    assert op_types(onnx.load(out)) <= STRICT_OPS
    report = json.loads(report_path.read_text())
    (node,) = report["nodes"]
    assert node["name"] == "stem/pool" and node["op_type"] == "MaxPool"
    assert node["status"] == "rewritten" and node["reason"] is None
    assert report["validation"]["passed"] is True
    assert report["validation"]["worst"]["rel_error"] <= 1e-5


def test_nothing_to_rewrite_copies_input(tmp_path):
    src = tmp_path / "relu.onnx"
    onnx.save(pool_model("Relu", [1, 2, 4, 4]), src)
    out = tmp_path / "out.onnx"
    proc = cli_run(src, out)
    assert proc.returncode == 0 and "nothing to rewrite" in proc.stdout
    assert out.read_bytes() == src.read_bytes()


def test_kept_node_is_reported_with_reason(tmp_path):
    src = tmp_path / "lp.onnx"
    onnx.save(pool_model("LpPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2], p=2)), src)
    proc = cli_run(src, tmp_path / "out.onnx", "--report", tmp_path / "r.json")
    assert proc.returncode == 0
    node = json.loads((tmp_path / "r.json").read_text())["nodes"][0]
    assert node["status"] == "kept" and "piecewise-linear" in node["reason"]


def test_dry_run_writes_no_model(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    proc = cli_run(model_path, out, "--dry-run", "--report", tmp_path / "plan.json")
    assert proc.returncode == 0 and "dry run" in proc.stdout and "stem/pool" in proc.stdout
    assert not out.exists()
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["nodes"][0]["status"] == "rewritten" and plan["validation"]["skipped"] == "--dry-run"


def test_only_and_exclude(model_path, tmp_path):
    report = tmp_path / "r.json"
    proc = cli_run(model_path, tmp_path / "o.onnx", "--exclude", "MaxPool", "--report", report)
    assert proc.returncode == 0
    assert json.loads(report.read_text())["nodes"][0]["reason"] == "excluded by --exclude"
    proc = cli_run(model_path, tmp_path / "o2.onnx", "--only", "y,stem/pool", "--report", report)  # output name, node name
    assert json.loads(report.read_text())["nodes"][0]["status"] == "rewritten"


def test_quiet_prints_nothing(model_path, tmp_path):
    proc = cli_run(model_path, tmp_path / "o.onnx", "-q")
    assert proc.returncode == 0 and proc.stdout == ""


def test_validation_failure_exits_1_and_writes_nothing(model_path, tmp_path, monkeypatch, capsys):
    """A lowering with the classic bug (zero padding for MaxPool) must be caught."""

    inject_zero_padding_bug(monkeypatch)
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    code = cli.main([str(model_path), str(out), "--report", str(report)])
    assert code == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "validation FAILED" in err and "'y'" in err and "all-negative" in err
    assert json.loads(report.read_text())["validation"]["passed"] is False


def test_help_explains_exit_codes():
    proc = cli_run("--help")
    assert proc.returncode == 0
    for needle in ("exit codes", "--report", "--dry-run", "--only", "--exclude", "--no-validate"):
        assert needle in proc.stdout


@pytest.mark.parametrize(
    "make_input,needle",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"this is not onnx"), "not a valid ONNX model"),
        (lambda p: p.write_bytes(b""), "empty file"),
    ],
    ids=["missing", "not-onnx", "empty"],
)
def test_bad_input_is_one_line_exit_2(tmp_path, make_input, needle):
    src = tmp_path / "bad.onnx"
    make_input(src)
    out = tmp_path / "out.onnx"
    assert_one_line_error(cli_run(src, out), needle)
    assert not out.exists()


def test_truncated_protobuf(model_path, tmp_path):
    data = model_path.read_bytes()
    src = tmp_path / "truncated.onnx"
    src.write_bytes(data[: len(data) // 2])
    proc = cli_run(src, tmp_path / "out.onnx")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


def test_missing_output_folder(model_path, tmp_path):
    assert_one_line_error(cli_run(model_path, tmp_path / "nope" / "out.onnx"), "does not exist")


def test_output_equal_to_input_is_refused(model_path):
    before = model_path.read_bytes()
    assert_one_line_error(cli_run(model_path, model_path), "output is the input")
    assert model_path.read_bytes() == before


def test_usage_error_is_one_line(model_path):
    assert_one_line_error(cli_run(model_path, "--no-such-flag"), "unrecognized arguments")


def test_existing_output_survives_failed_run(model_path, tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous result")
    inject_zero_padding_bug(monkeypatch)
    assert cli.main([str(model_path), str(out), "-q"]) == 1
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "out.onnx"]


def test_output_file_has_ordinary_permissions(model_path, tmp_path):
    """Not mkstemp's 0600: the permissions any new file gets under the current umask."""
    out = tmp_path / "out.onnx"
    assert cli_run(model_path, out, "-q").returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_table_shows_flags(tmp_path):
    src = tmp_path / "ceil.onnx"
    onnx.save(pool_model("AveragePool", [1, 2, 9, 9], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, auto_pad="NOTSET")), src)
    proc = cli_run(src, tmp_path / "o.onnx")
    assert proc.returncode == 0 and "k3x3 s2x2 p0,0/0,0 cip=0 ceil" in proc.stdout


@pytest.mark.parametrize(
    "attrs,needle",
    [
        (dict(kernel_shape=[3, 3], pads=[3, 0, 0, 0]), "effective kernel"),
        (dict(kernel_shape=[3, 0]), "non-positive"),
        (dict(kernel_shape=[3]), "does not match"),
        (dict(kernel_shape=[2, 2], strides=[1, 0]), "must be positive"),
    ],
    ids=["pads-too-large", "zero-kernel", "wrong-rank", "zero-stride"],
)
def test_invalid_pool_attributes_exit_2(tmp_path, attrs, needle):
    src = tmp_path / "bad.onnx"
    onnx.save(pool_model("MaxPool", [1, 2, 6, 6], attrs), src)
    before = src.read_bytes()
    proc = cli_run(src, tmp_path / "out.onnx")
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out.onnx").exists() and src.read_bytes() == before


def test_unknown_op_and_checker_failures_exit_2(tmp_path):
    unknown = pool_model("MaxPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2]))
    unknown.graph.node[0].op_type = "MaxPoolFancy"
    onnx.save(unknown, tmp_path / "unknown.onnx")
    assert_one_line_error(cli_run(tmp_path / "unknown.onnx", tmp_path / "o.onnx"), "onnx.checker")
    dangling = pool_model("MaxPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2]))
    dangling.graph.node[0].input[0] = "nowhere"
    onnx.save(dangling, tmp_path / "dangling.onnx")
    assert_one_line_error(cli_run(tmp_path / "dangling.onnx", tmp_path / "o.onnx"), "onnx.checker")
    assert not (tmp_path / "o.onnx").exists()


def test_rewrite_double_needs_no_validate(tmp_path):
    src = tmp_path / "double.onnx"
    onnx.save(pool_model("MaxPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2]), dtype=onnx.TensorProto.DOUBLE), src)
    assert_one_line_error(cli_run(src, tmp_path / "o.onnx", "--rewrite-double"), "needs --no-validate")
    proc = cli_run(src, tmp_path / "o.onnx", "--rewrite-double", "--no-validate")
    assert proc.returncode == 0 and op_types(onnx.load(tmp_path / "o.onnx")) <= STRICT_OPS


def test_outputs_without_declared_shapes_are_accepted(tmp_path):
    """onnx.checker wants graph outputs to carry a shape; onnxruntime does not, and
    many hand-built models leave it out. Those are rewritten like any other."""
    model = pool_model("MaxPool", [1, 2, 6, 6], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    model.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(model, tmp_path / "noshape.onnx")
    proc = cli_run(tmp_path / "noshape.onnx", tmp_path / "out.onnx")
    assert proc.returncode == 0, proc.stderr
    assert op_types(onnx.load(tmp_path / "out.onnx")) <= STRICT_OPS
