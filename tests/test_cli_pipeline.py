"""A CLI that pipelines can trust (issue 13, section 5): --fail-on-kept, typos are errors,
no abbreviations, a table that reads well, progress apart from the table."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import pool_model
from onnx import TensorProto, helper

from rewriter import PoolRewritePass, cli
from rewriter.builder import PROFILE_OPS
from rewriter.selection import SelectionError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo_cnn.onnx"


def two_pool_model() -> onnx.ModelProto:
    """A rewritable MaxPool, then an LpPool that no exact lowering exists for."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], name="stem/pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("LpPool", ["m"], ["y"], name="head/lp", kernel_shape=[2, 2], p=2),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def if_model() -> onnx.ModelProto:
    """Pools only inside the branches of an If."""
    def branch(name: str, op: str) -> onnx.GraphProto:
        node = helper.make_node(op, ["x"], [f"{name}_y"], name=f"{name}/pool", kernel_shape=[2, 2], strides=[2, 2])
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 2, 4, 4])])

    nodes = [helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("then", "MaxPool"), else_branch=branch("else", "AveragePool"))]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def one_line_error(capsys, code: int, expected_code: int = 2) -> str:
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- --fail-on-kept -----------------------------------------------------------------


def test_fail_on_kept_exits_3_writes_no_model_and_says_which_and_why(tmp_path, capsys):
    src, out, report = save(two_pool_model(), tmp_path / "in.onnx"), tmp_path / "out.onnx", tmp_path / "r.json"
    code = cli.main([str(src), str(out), "--fail-on-kept", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert not out.exists()
    (line,) = captured.err.strip().splitlines()
    assert "head/lp" in line and "piecewise-linear" in line and "not written" in line and "stem/pool" not in line
    assert re.search(r"^head/lp\s+LpPool\s+k2x2 L2\s+kept", captured.out, re.M), captured.out
    data = json.loads(report.read_text())
    assert [(n["name"], n["status"]) for n in data["nodes"]] == [("stem/pool", "rewritten"), ("head/lp", "kept")]
    assert "piecewise-linear" in data["nodes"][1]["reason"]
    assert data["validation"]["passed"] is None and "--fail-on-kept" in data["validation"]["skipped"]


def test_without_fail_on_kept_the_same_model_is_written(tmp_path, capsys):
    src, out = save(two_pool_model(), tmp_path / "in.onnx"), tmp_path / "out.onnx"
    assert cli.main([str(src), str(out), "-q"]) == 0
    assert out.exists()


def test_fail_on_kept_with_dry_run_and_with_nothing_rewritten(tmp_path, capsys):
    src = save(pool_model("LpPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2], p=2), name="lp"), tmp_path / "lp.onnx")
    assert cli.main([str(src), "--dry-run", "--fail-on-kept"]) == 3
    out = tmp_path / "out.onnx"
    assert cli.main([str(src), str(out), "--fail-on-kept", "-q"]) == 3  # not even the unchanged copy
    assert not out.exists()
    assert "lp" in capsys.readouterr().err


def test_fail_on_kept_passes_when_everything_is_rewritten_or_left_out_on_request(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert cli.main([str(DEMO), str(out), "--fail-on-kept", "-q"]) == 0 and out.exists()
    out2 = tmp_path / "out2.onnx"
    assert cli.main([str(DEMO), str(out2), "--fail-on-kept", "--exclude", "head/gap", "-q"]) == 0 and out2.exists()
    assert cli.main([str(DEMO), str(tmp_path / "o3.onnx"), "--fail-on-kept", "--only", "MaxPool", "-q"]) == 0


def test_exit_code_3_is_documented():
    help_text = cli.build_parser().format_help()
    assert re.search(r"^\s+3\s+--fail-on-kept", help_text, re.M), help_text
    assert "3 pool nodes kept" in cli.__doc__
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^\| 3 \|.*--fail-on-kept", readme, re.M)


# -- typos are errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--only", "stem/maxpol"], ["--only 'stem/maxpol'", "did you mean 'stem/maxpool'", "pool nodes: stem/maxpool, block1/avgpool"]),
        (["--exclude", "MaxPool,GlobalMaxPool"], ["--exclude 'GlobalMaxPool'", "pool op types: AveragePool, GlobalAveragePool, MaxPool"]),
        (["--only", "head/gap,nope", "--exclude", "also-nope"], ["--only 'nope'", "--exclude 'also-nope'"]),
    ],
)
def test_names_matching_no_pool_node_exit_2_listing_what_exists(tmp_path, capsys, args, needles):
    out = tmp_path / "out.onnx"
    line = one_line_error(capsys, cli.main([str(DEMO), str(out), *args]))
    for needle in needles:
        assert needle in line, line
    assert not out.exists()


def test_names_inside_if_branches_count(tmp_path, capsys):
    src = save(if_model(), tmp_path / "if.onnx")
    report = tmp_path / "r.json"
    # --dry-run: validation of a scalar bool input is another part of issue 13
    assert cli.main([str(src), "--dry-run", "--exclude", "then/pool", "--report", str(report), "-q"]) == 0
    nodes = {n["name"]: n["status"] for n in json.loads(report.read_text())["nodes"]}
    assert nodes == {"then/pool": "kept", "else/pool": "rewritten"}
    line = one_line_error(capsys, cli.main([str(src), "--dry-run", "--only", "if"]))
    assert "'if'" in line and "then/pool" in line and "else/pool" in line


def test_names_of_inlined_function_pools_count(tmp_path, capsys):
    src = ROOT / "tests" / "data" / "torch" / "resnet18.ts15_funcs.onnx"
    report = tmp_path / "r.json"
    # The pools live in model-local functions; after inlining they have these names.
    assert cli.main([str(src), "--dry-run", "--exclude", "MaxPool_1__1", "--report", str(report), "-q"]) == 0
    statuses = {n["name"]: n["status"] for n in json.loads(report.read_text())["nodes"]}
    assert statuses == {"MaxPool_1__1": "kept", "GlobalAveragePool_0__2": "rewritten"}


def test_no_pool_nodes_at_all_is_said(tmp_path, capsys):
    src = save(pool_model("Relu", [1, 2, 4, 4]), tmp_path / "relu.onnx")
    line = one_line_error(capsys, cli.main([str(src), str(tmp_path / "o.onnx"), "--exclude", "MaxPool"]))
    assert "the model has no pool nodes" in line


@pytest.mark.parametrize(
    "allow,needles",
    [
        ("max", ["'max' (did you mean 'Max'?)", "Div, Max, Mul, Pad"]),
        ("Max,pad", ["'pad' (did you mean 'Pad'?)"]),
        ("Maxx", ["'Maxx'", "Div, Max, Mul, Pad"]),
    ],
)
def test_unknown_allow_ops_exit_2(tmp_path, capsys, allow, needles):
    out = tmp_path / "out.onnx"
    line = one_line_error(capsys, cli.main([str(DEMO), str(out), "--allow", allow]))
    for needle in needles:
        assert needle in line, line
    assert not out.exists()


def test_other_onnx_ops_may_be_allowed_for_the_audit(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert cli.main([str(DEMO), "--dry-run", "--allow", "Max,Gemm,Flatten", "--report", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["audit"] == {}  # the demo's Gemm and Flatten are inside the target now
    assert any(n["op_counts"].get("Max") for n in data["nodes"])


def test_python_api_raises_a_value_error_subclass(tmp_path):
    assert issubclass(SelectionError, ValueError)
    with pytest.raises(SelectionError, match="did you mean 'Max'"):
        PoolRewritePass(allow=["max"])
    model = onnx.load(DEMO)
    before = model.SerializeToString()
    with pytest.raises(SelectionError, match="'stem/maxpol'"):
        PoolRewritePass(only=["stem/maxpol"]).run(model, in_place=True)
    assert model.SerializeToString() == before, "raised before anything was changed"
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    with pytest.raises(SelectionError, match="--exclude 'gap'"):
        PoolRewritePass(exclude=["gap"]).run_graph(graph)
    assert sorted(n.op for n in graph.nodes if "Pool" in n.op) == ["AveragePool", "GlobalAveragePool", "MaxPool", "MaxPool"]


def test_every_op_a_lowering_asks_about_is_a_profile_op():
    from rewriter.builder import SubgraphBuilder

    b = SubgraphBuilder("p", channels=1, dtype=np.float32, rank=2, allowed=PROFILE_OPS)
    assert all(b.can(op) for op in PROFILE_OPS)
    with pytest.raises(ValueError, match="PROFILE_OPS"):
        b.can("Min")


# -- no abbreviations ---------------------------------------------------------------


@pytest.mark.parametrize("abbreviation", ["--flip", "--fail", "--no-val", "--rep=r.json"])
def test_options_cannot_be_abbreviated(tmp_path, abbreviation):
    out = tmp_path / "out.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "rewriter", str(DEMO), str(out), abbreviation], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "unrecognized arguments" in line and abbreviation in line
    assert not out.exists()


# -- the table ------------------------------------------------------------------------


def test_long_reasons_are_printed_in_full_as_numbered_notes(tmp_path, capsys):
    src = save(pool_model("MaxPool", [1, 3, "H", "W"], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), name="stem/pool"), tmp_path / "dyn.onnx")
    report = tmp_path / "r.json"
    assert cli.main([str(src), "--dry-run", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    reason = json.loads(report.read_text())["nodes"][0]["reason"]
    assert len(reason) > 60
    assert re.search(r"^stem/pool\s+MaxPool\s+k3x3 s2x2 p1,1/1,1\s+kept\s+see \[1\]\s+0$", out, re.M), out
    notes = out[out.index("\n[1] ") + 1 :]
    assert " ".join(notes.split()).startswith(f"[1] stem/pool: {reason}")  # whole, whatever the wrapping
    assert out.count("...") == reason.count("...")  # nothing clipped
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith(("name", "---", "stem/pool")))


def test_short_reasons_stay_in_the_row_and_kept_nodes_show_attributes(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert cli.main([str(DEMO), "--dry-run", "--exclude", "head/gap,stem/maxpool", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^stem/maxpool\s+MaxPool\s+k3x3 s2x2 p1,1/1,1\s+kept\s+excluded by --exclude\s+0$", out, re.M), out
    assert re.search(r"^head/gap\s+GlobalAveragePool\s+k4x4 s1x1 p0,0/0,0 cip=0\s+kept", out, re.M), out


def test_kept_global_pools_refused_early_still_show_attributes(tmp_path, capsys):
    src = save(pool_model("GlobalMaxPool", [1, 2, 6, 6], dtype=TensorProto.DOUBLE, name="gmp"), tmp_path / "gmp.onnx")
    report = tmp_path / "r.json"
    assert cli.main([str(src), "--dry-run", "--report", str(report)]) == 0
    (node,) = json.loads(report.read_text())["nodes"]
    assert node["status"] == "kept" and node["attributes"] == "global"
    assert re.search(r"^gmp\s+GlobalMaxPool\s+global\s+kept\s+see \[1\]", capsys.readouterr().out, re.M)


def test_verbose_rows_are_aligned_columns_with_headers(tmp_path, capsys):
    assert cli.main([str(DEMO), str(tmp_path / "o.onnx"), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    outputs = lines.index(next(l for l in lines if l.split()[:3] == ["output", "suite", "result"]))
    nodes = lines.index(next(l for l in lines if l.split()[:3] == ["node", "op", "result"]))
    output_rows = lines[outputs + 2 : nodes]
    node_rows = lines[nodes + 2 : nodes + 6]
    assert len(output_rows) == 4 and all(r.split()[0] == "logits" for r in output_rows)
    assert [r.split()[0] for r in node_rows] == ["stem/maxpool", "block1/avgpool", "block2/maxpool", "head/gap"]
    for header, rows in ((lines[outputs], output_rows), (lines[nodes], node_rows)):
        column = header.index("result")
        assert all(r[column:].split()[0] == "ok" for r in rows), rows
        assert all(r[column - 2 : column] == "  " for r in rows)


def test_progress_goes_to_stderr_after_stdout_is_flushed(monkeypatch):
    events: list[str] = []

    class Stream(io.StringIO):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def write(self, text: str) -> int:
            if text.strip():  # print() writes the newline apart
                events.append(f"{self.name} write {text.strip()}")
            return super().write(text)

        def flush(self) -> None:
            events.append(f"{self.name} flush")

    monkeypatch.setattr(sys, "stdout", Stream("stdout"))
    monkeypatch.setattr(sys, "stderr", Stream("stderr"))
    console = cli._Console(quiet=False)
    console.started -= 10  # progress is shown once work has run a moment
    sys.stdout.write("partial table line")  # e.g. a print elsewhere that did not flush
    console.progress("validating")
    writes = [e for e in events if " write " in e]
    assert writes == ["stdout write partial table line", "stderr write validating"]
    assert events.index("stdout flush") < events.index("stderr write validating")
