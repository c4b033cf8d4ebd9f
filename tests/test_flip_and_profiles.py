"""--flip-kernels (true-convolution backends) and --allow target profiles with the op audit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import STRICT_OPS, input_suites, op_types, pool_model, run
from onnx import TensorProto, helper, numpy_helper

from rewriter import rewrite_model
from rewriter.audit import audit_ops
from rewriter.flip import FlipError, flip_conv_kernels
from rewriter.true_conv import TrueConvolutionEvaluator

RNG = np.random.default_rng(11)


def assert_true_convolution_matches(flipped, model, shape) -> None:
    """The flipped model on the numpy true-convolution reference equals the original on onnxruntime."""
    x = RNG.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(TrueConvolutionEvaluator(flipped).run({"x": x})["y"], run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def weight(name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def cnn(rank: int = 2) -> onnx.ModelProto:
    """Asymmetric conv kernels, then MaxPool (ceil, dilated), AveragePool and global pools."""
    k = [3, 2, 3][:rank]
    spatial = [13, 12, 11][:rank]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * rank + [0] * rank),
        helper.make_node("MaxPool", ["c1"], ["m1"], name="maxpool", kernel_shape=[3] * rank, strides=[2] * rank, ceil_mode=1),
        helper.make_node("Conv", ["m1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * (2 * rank), group=2),
        helper.make_node("MaxPool", ["c2"], ["m2"], name="dilated", kernel_shape=[2] * rank, dilations=[2] * rank, pads=[1] * (2 * rank)),
        helper.make_node("AveragePool", ["m2"], ["a"], name="avgpool", kernel_shape=[3] * rank, pads=[1] * (2 * rank), ceil_mode=1, strides=[2] * rank),
        helper.make_node("GlobalMaxPool", ["a"], ["g1"], name="gmp"),
        helper.make_node("GlobalAveragePool", ["a"], ["g2"], name="gap"),
        helper.make_node("Add", ["g1", "g2"], ["y"], name="add"),
    ]
    inits = [weight("w1", [4, 2] + k), weight("w2", [4, 2] + k[::-1]), weight("b2", [4])]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2] + spatial)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4] + [1] * rank)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_flipped_model_equals_original_under_true_convolution(rank):
    model = cnn(rank)
    rewritten, report = rewrite_model(model)
    assert len(report.rewritten) == 5
    flipped, flip_report = flip_conv_kernels(rewritten)
    assert {"conv1", "conv2"} <= set(flip_report.flipped)
    assert {p.key: p.value for p in flipped.metadata_props}["conv_semantics"] == "convolution"
    true_conv = TrueConvolutionEvaluator(flipped)
    for suite, x in input_suites([1, 2] + [13, 12, 11][:rank]).items():
        expected = run(model, {"x": x})[0]
        np.testing.assert_allclose(true_conv.run({"x": x})["y"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(), err_msg=suite)
    x = input_suites([1, 2] + [13, 12, 11][:rank])["normal"]
    as_cross_correlation = run(flipped, {"x": x})[0]
    assert np.abs(as_cross_correlation - run(model, {"x": x})[0]).max() > 1e-2, "flipping changed nothing?"


def test_dequantize_linear_weight_is_flipped_at_its_initializer():
    q = numpy_helper.from_array(RNG.integers(-100, 100, (3, 2, 2, 3)).astype(np.int8), "wq")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"], name="dq"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 4])],
        [q, numpy_helper.from_array(np.array(0.02, np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    flipped, report = flip_conv_kernels(model)
    assert report.tensors == ["wq"]
    assert_true_convolution_matches(flipped, model, (1, 2, 6, 6))


def test_runtime_weight_is_an_error(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(FlipError, match="computed at run time"):
        flip_conv_kernels(model)
    onnx.save(model, tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-m", "rewriter", tmp_path / "m.onnx", tmp_path / "o.onnx", "--flip-kernels"], capture_output=True, text=True)
    assert proc.returncode == 2 and "computed at run time" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_conv_transpose_is_flipped():
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", strides=[2, 2], pads=[0, 1, 1, 0])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [weight("w", [2, 3, 3, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    flipped, _ = flip_conv_kernels(model)
    assert_true_convolution_matches(flipped, model, (1, 2, 4, 4))


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewriter", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_flip_kernels_and_compare(tmp_path):
    onnx.save(cnn(2), tmp_path / "in.onnx")
    proc = cli(tmp_path / "in.onnx", tmp_path / "out.onnx", "--flip-kernels", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["flip"]["validation"]["passed"] is True and "conv1" in report["flip"]["convs"]
    assert cli("--compare", tmp_path / "in.onnx", tmp_path / "out.onnx", "--flip-kernels").returncode == 0
    assert cli("--compare", tmp_path / "in.onnx", tmp_path / "out.onnx").returncode == 1  # as cross-correlation it differs


PROFILE_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3, 2], dilations=[2, 1], pads=[2, 1, 1, 0])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=0)),
    ("AveragePool", dict(kernel_shape=[2, 3], pads=[1, 0, 0, 2], count_include_pad=1)),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
]


@pytest.mark.parametrize("allow", [["Max"], ["Pad"], ["Mul"], ["Div"], ["Pad", "Max", "Div"]], ids=str)
@pytest.mark.parametrize("op,attrs", PROFILE_CASES, ids=str)
def test_profiles_stay_exact_and_in_their_op_set(op, attrs, allow):
    shape = [1, 3, 9, 8]
    model = pool_model(op, shape, attrs, opset=17)
    new, report = rewrite_model(model, allow=allow)
    assert report.nodes[0].status == "rewritten"
    assert op_types(new) <= STRICT_OPS | set(allow)
    onnx.checker.check_model(new, full_check=True)
    for suite, x in input_suites(shape).items():
        expected, actual = run(model, {"x": x})[0], run(new, {"x": x})[0]
        if "Max" in allow and "Max" in op:
            np.testing.assert_array_equal(actual, expected, err_msg=f"Max profile is bit-exact ({suite})")
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max(), err_msg=suite)


def test_profiles_use_their_ops():
    model = pool_model("MaxPool", [1, 3, 9, 8], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), opset=17)
    assert "Pad" in op_types(rewrite_model(model, allow=["Pad"])[0])
    assert "Max" in op_types(rewrite_model(model, allow=["Max"])[0])
    avg = pool_model("AveragePool", [1, 3, 9, 8], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), opset=17)
    assert "Mul" in op_types(rewrite_model(avg, allow=["Mul"])[0])
    assert "Div" in op_types(rewrite_model(avg, allow=["Div"])[0])


def test_audit_lists_exactly_the_ops_outside_the_set(tmp_path):
    model = cnn(2)
    new, _ = rewrite_model(model)
    assert audit_ops(new) == {}  # the cnn's own ops are Conv and Add, inside the strict set
    nodes = list(model.graph.node) + [helper.make_node("Sigmoid", ["y"], ["s"], name="sig"), helper.make_node("Sigmoid", ["s"], ["s2"], name="sig2")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.output[0].name = "s2"
    new, _ = rewrite_model(model, allow=["Max"])
    audit = audit_ops(new, ["Max"])
    assert audit == {"Sigmoid": {"count": 2, "nodes": ["sig", "sig2"]}}
    onnx.save(model, tmp_path / "m.onnx")
    proc = cli(tmp_path / "m.onnx", tmp_path / "o.onnx", "--exclude", "MaxPool", "--audit", "--report", tmp_path / "r.json", "--no-validate")
    assert proc.returncode == 0 and "Sigmoid" in proc.stdout
    assert set(json.loads((tmp_path / "r.json").read_text())["audit"]) == {"MaxPool", "Sigmoid"}
    relu_only = tmp_path / "relu.onnx"
    onnx.save(pool_model("Tanh", [1, 2, 4, 4]), relu_only)
    proc = cli(relu_only, tmp_path / "o2.onnx", "--audit")
    assert proc.returncode == 0 and "Tanh" in proc.stdout  # works with nothing to rewrite


def test_convs_inside_local_functions_are_flipped_at_their_call_sites():
    body = [helper.make_node("Conv", ["inp", "w"], ["out"], name="c", pads=[1, 0, 1, 1])]
    function = helper.make_function("local", "Block", ["inp", "w"], ["out"], body, [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("Block", ["x", "w1"], ["y"], name="block", domain="local")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 5])], [weight("w1", [3, 2, 3, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], ir_version=8, functions=[function])
    flipped, report = flip_conv_kernels(model)
    assert report.inlined == ["local.Block"] and report.tensors == ["w1"]
    assert_true_convolution_matches(flipped, model, (1, 2, 6, 6))


def test_weight_behind_identity_is_flipped():
    nodes = [
        helper.make_node("Identity", ["w0"], ["w"], name="id"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 5])], [weight("w0", [3, 2, 3, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    flipped, report = flip_conv_kernels(model)
    assert report.tensors == ["w0"]
    assert_true_convolution_matches(flipped, model, (1, 2, 6, 6))


def test_weight_also_read_elsewhere_is_an_error():
    nodes = [
        helper.make_node("Identity", ["w0"], ["w"], name="id"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        helper.make_node("ReduceSum", ["w"], ["s"], name="other_reader"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 5]), helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [weight("w0", [3, 2, 3, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(FlipError, match="'w' is also used by a non-convolution node"):
        flip_conv_kernels(model)


def test_true_convolution_runner_runs_other_ops_on_onnxruntime():
    """Every op but the convs runs on onnxruntime: onnx.reference's BatchNormalization
    (opset 13) does not match it, and neither do its pools. Kept nodes, like this
    MaxPool with its Indices output, run there too."""
    from rewriter.validate import TrueConvolutionRunner

    stats = [numpy_helper.from_array((RNG.random(3) + 0.5).astype(np.float32), n) for n in ("scale", "bias", "mean", "var")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 0, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("MaxPool", ["bn"], ["y", "idx"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4]), helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 3, 4, 4])],
        [weight("w", [3, 2, 3, 2])] + stats,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    rewritten, report = rewrite_model(model)
    assert report.nodes[0].status == "kept"
    flipped, _ = flip_conv_kernels(rewritten)
    x = RNG.standard_normal((2, 2, 8, 8)).astype(np.float32)
    expected = run(model, {"x": x})
    actual = TrueConvolutionRunner(flipped).run({"x": x})
    np.testing.assert_allclose(actual["y"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(actual["idx"], expected[1])
