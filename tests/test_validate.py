"""The validator: it rejects known-bad candidates, accepts correct ones, names the
failing node, and takes the user's inputs and shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import ZERO_PADDING_BUG, pool_model
from onnx import TensorProto, helper, numpy_helper

from rewriter import rewrite_model
from rewriter.model_io import InputError
from rewriter.lower import max_pool
from rewriter.validate import (
    ALL_NEGATIVE,
    ToleranceComparator,
    ValidationSetupError,
    describe_inputs,
    load_user_inputs,
    validate_models,
)

SHAPE = [1, 3, 9, 9]


def conv_pool_model(pool_op: str = "MaxPool", pool_attrs: dict | None = None, *, flip: bool = False, pad_first: bool = False) -> onnx.ModelProto:
    """x -> Conv (asymmetric kernel) -> pool -> y."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    if flip:
        w = w[:, :, ::-1, ::-1].copy()
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 0, 1, 1])]
    attrs = dict(pool_attrs or {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    src = "c"
    if pad_first:  # the classic bug: pad with zeros, then pool without pads
        rank = 2
        pads = attrs.pop("pads")
        nodes.append(helper.make_node("Pad", ["c", "pads"], ["c_padded"], name="pad", mode="constant"))
        src = "c_padded"
        pad_tensor = numpy_helper.from_array(np.array([0, 0] + pads[:rank] + [0, 0] + pads[rank:], np.int64), "pads")
    nodes.append(helper.make_node(pool_op, [src], ["y"], name="pool", **attrs))
    inits = [numpy_helper.from_array(w, "w")] + ([pad_tensor] if pad_first else [])
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


BAD_PAIRS = {
    "zero-padded-maxpool": (conv_pool_model(), conv_pool_model(pad_first=True)),
    "count-include-pad-1-for-0": (
        conv_pool_model("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
        conv_pool_model("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    ),
    "dropped-ceil-mode": (
        conv_pool_model("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
        conv_pool_model("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=0)),
    ),
    "flipped-conv-kernel": (conv_pool_model(), conv_pool_model(flip=True)),
}


@pytest.mark.parametrize("name", sorted(BAD_PAIRS))
def test_rejects_known_bad_candidates(name):
    original, candidate = BAD_PAIRS[name]
    result = validate_models(original, candidate)
    assert not result.passed, result.summary()


def test_zero_padding_is_caught_by_the_all_negative_suite():
    original, candidate = BAD_PAIRS["zero-padded-maxpool"]
    result = validate_models(original, candidate)
    assert {c.suite for c in result.comparisons if not c.passed}
    (node,) = result.nodes
    assert node.name == "pool" and node.passed is False and "at the node" in node.worst_suite
    # Through the random conv, whether a border window is all negative is chance;
    # fed straight into the pool, every border window of this suite is.
    (node,) = validate_models(original, candidate, suites=[ALL_NEGATIVE]).nodes
    assert node.passed is False and node.worst_suite == "all-negative at the node"


def test_accepts_identical_and_rounding_only_candidates():
    original = conv_pool_model("MaxPool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
    assert validate_models(original, original).passed
    rewritten, _ = rewrite_model(original)
    result = validate_models(original, rewritten)
    assert result.passed, result.summary()
    assert any(c.max_abs_error > 0 for c in result.comparisons), "expected rounding differences to be tolerated"
    assert [n.passed for n in result.nodes] == [True]


def test_failure_names_the_node():
    original = conv_pool_model()
    bad, _ = rewrite_model(original, strategies=ZERO_PADDING_BUG)
    result = validate_models(original, bad)
    assert not result.passed
    assert [n.name for n in result.failed_nodes] == ["pool"]
    assert "'pool'" in result.summary()


def test_tolerance_options():
    ref = np.array([1.0, -2.0, 4.0], np.float32)
    cand = ref + np.array([0, 0, 4.0 * 2**-22], np.float32)  # 2 ulps of 4.0
    assert ToleranceComparator(ulps=2).compare("y", "s", ref, cand).passed
    assert not ToleranceComparator(ulps=1).compare("y", "s", ref, cand).passed
    assert not ToleranceComparator(rtol=1e-7).compare("y", "s", ref, cand).passed
    assert ToleranceComparator(rtol=0, atol=1e-5).compare("y", "s", ref, cand).passed
    nan_moved = ToleranceComparator().compare("y", "s", np.array([np.nan, 1], np.float32), np.array([1, np.nan], np.float32))
    assert not nan_moved.passed and "non-finite" in nan_moved.note


def dynamic_model() -> onnx.ModelProto:
    return pool_model("MaxPool", ["N", 2, "H", 8], dict(kernel_shape=[2, 2], strides=[2, 2]))


def test_dynamic_dims_need_a_shape():
    with pytest.raises(ValidationSetupError, match="input 'x' has dynamic dimension 2 \\('H'\\).*--input-shape x:1,2,<H>,8"):
        describe_inputs(dynamic_model())
    assert describe_inputs(dynamic_model(), {"x": [2, 2, 6, 8]})[0].shape == (2, 2, 6, 8)
    with pytest.raises(ValidationSetupError, match="does not fit"):
        describe_inputs(dynamic_model(), {"x": [2, 3, 6, 8]})
    with pytest.raises(ValidationSetupError, match="unknown input"):
        describe_inputs(dynamic_model(), {"images": [1, 2, 6, 8]})


def test_user_inputs_npz_and_pb(tmp_path):
    model = pool_model("MaxPool", SHAPE, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    x = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    folder = tmp_path / "test_data_set_0"
    folder.mkdir()
    (folder / "input_0.pb").write_bytes(numpy_helper.from_array(x).SerializeToString())  # unnamed: by order
    for source in (tmp_path / "in.npz", folder, folder / "input_0.pb"):
        loaded = load_user_inputs(source, model)
        np.testing.assert_array_equal(loaded["x"], x)
    rewritten, _ = rewrite_model(model)
    result = validate_models(model, rewritten, user_inputs=load_user_inputs(tmp_path / "in.npz", model))
    assert result.passed and "user" in {c.suite for c in result.comparisons}


def test_user_inputs_errors(tmp_path):
    model = pool_model("MaxPool", SHAPE, dict(kernel_shape=[2, 2]))
    np.savez(tmp_path / "wrong.npz", images=np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match="missing \\['x'\\], unknown \\['images'\\]"):
        load_user_inputs(tmp_path / "wrong.npz", model)
    with pytest.raises(InputError, match="no such file"):
        load_user_inputs(tmp_path / "absent.npz", model)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read inputs"):
        load_user_inputs(tmp_path / "junk.npz", model)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewriter", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(BAD_PAIRS))
def test_compare_cli_exit_1_for_bad_pairs(name, tmp_path):
    original, candidate = BAD_PAIRS[name]
    onnx.save(original, tmp_path / "a.onnx")
    onnx.save(candidate, tmp_path / "b.onnx")
    proc = cli("--compare", tmp_path / "a.onnx", tmp_path / "b.onnx", "--report", tmp_path / "r.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "not equal" in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validation"]["passed"] is False and report["validation"]["worst"]["output"]


def test_compare_cli_exit_0_for_good_pair(tmp_path):
    original = conv_pool_model()
    onnx.save(original, tmp_path / "a.onnx")
    onnx.save(rewrite_model(original)[0], tmp_path / "b.onnx")
    proc = cli("--compare", tmp_path / "a.onnx", tmp_path / "b.onnx")
    assert proc.returncode == 0 and "validation passed" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]


def test_cli_input_shape_and_inputs(tmp_path):
    onnx.save(dynamic_model(), tmp_path / "dyn.onnx")
    proc = cli(tmp_path / "dyn.onnx", tmp_path / "out.onnx")  # rewritten (no padding), but H must be fixed to validate
    assert proc.returncode == 2 and "--input-shape x:1,2,<H>,8" in proc.stderr and not (tmp_path / "out.onnx").exists()
    proc = cli(tmp_path / "dyn.onnx", tmp_path / "out.onnx", "--input-shape", "x:2,2,6,8")
    assert proc.returncode == 0, proc.stderr
    model = pool_model("MaxPool", ["N", 3, 9, 9], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", x=np.ones((2, 3, 9, 9), np.float32))
    proc = cli(tmp_path / "m.onnx", tmp_path / "out2.onnx", "--inputs", tmp_path / "in.npz", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    comparisons = json.loads((tmp_path / "r.json").read_text())["validation"]["comparisons"]
    assert "user" in {c["suite"] for c in comparisons}
    proc = cli(tmp_path / "m.onnx", tmp_path / "out3.onnx", "--input-shape", "x:1,3,7,9")
    assert proc.returncode == 2 and "does not fit" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = cli(tmp_path / "m.onnx", tmp_path / "out3.onnx", "--input-shape", "x=1,3")
    assert proc.returncode == 2 and "NAME:D0,D1" in proc.stderr


def test_renamed_inputs_and_outputs_are_matched_by_position():
    original = conv_pool_model()
    candidate, _ = rewrite_model(original)
    candidate.graph.input[0].name = "images"
    candidate.graph.output[0].name = "scores"
    for node in candidate.graph.node:
        node.input[:] = ["images" if i == "x" else i for i in node.input]
        node.output[:] = ["scores" if o == "y" else o for o in node.output]
    assert validate_models(original, candidate).passed
    bad_original, shared = BAD_PAIRS["flipped-conv-kernel"]
    bad_candidate = onnx.ModelProto()
    bad_candidate.CopyFrom(shared)
    bad_candidate.graph.output[0].name = "scores"
    bad_candidate.graph.node[-1].output[0] = "scores"
    assert not validate_models(bad_original, bad_candidate).passed


def test_report_is_strict_json_even_on_failure(tmp_path):
    original, candidate = BAD_PAIRS["dropped-ceil-mode"]  # shape mismatch: infinite error
    onnx.save(original, tmp_path / "a.onnx")
    onnx.save(candidate, tmp_path / "b.onnx")
    assert cli("--compare", tmp_path / "a.onnx", tmp_path / "b.onnx", "--report", tmp_path / "r.json").returncode == 1
    text = (tmp_path / "r.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert json.loads(text)["validation"]["worst"]["max_abs_error"] is None


def test_overflowing_suites_are_inconclusive_not_failures():
    """x * 1e33 overflows to inf on the wide-range suite; a conv-based MaxPool then
    gives NaN where the native one gives inf. That suite cannot judge the rewrite."""
    nodes = [
        helper.make_node("Mul", ["x", "big"], ["m"], name="scale"),
        helper.make_node("MaxPool", ["m"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        [numpy_helper.from_array(np.array(1e33, np.float32), "big")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    rewritten, _ = rewrite_model(model)
    result = validate_models(model, rewritten)
    assert result.passed, result.summary()
    notes = {c.suite: c.note for c in result.comparisons if c.note}
    assert "inconclusive" in notes.get("wide-range", "")
    assert {c.suite for c in result.comparisons if c.passed and not c.note} >= {"signed-normal", "all-negative", "tie-heavy-int"}
