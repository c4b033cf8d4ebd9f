"""The true-convolution reference (rewriter/true_conv.py) checked on its own.

Identity under test: a true convolution with the spatially reversed kernel is
onnxruntime's Conv (a cross-correlation) with the original kernel; same for
ConvTranspose. Every kernel is random, hence asymmetric: a symmetric or
all-ones kernel would hide a flip bug. Each case also checks that the
unflipped kernel gives a *different* answer, so the comparison can fail.
"""

from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from rewriter.true_conv import TrueConvolutionEvaluator, true_conv_transpose, true_convolution
from compat import TEST_OPSET

RTOL = 1e-5
# An unflipped asymmetric kernel is off by O(1) of the output's magnitude.
MIN_FLIP_ERROR = 1e-2


def flip(w: np.ndarray) -> np.ndarray:
    """Reverse every spatial axis (2:) of a conv weight."""
    return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, w.ndim))))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _make_model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])
    model.ir_version = 10
    return model


def single_node_model(op: str, x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray], attrs: dict) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    node = helper.make_node(op, ["x", "w"] + (["b"] if b is not None else []), ["y"], **attrs)
    return _make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )


def ort_single(op: str, x, w, b, attrs) -> np.ndarray:
    return _session(single_node_model(op, x, w, b, attrs)).run(None, {"x": x})[0]


def _data(seed: int, x_shape, w_shape, with_bias: bool):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if with_bias else None
    return x, w, b


# (id, x shape, w shape, attributes); group is an attribute, default 1.
CONV_CASES = [
    ("1d-stride-asympad", (2, 4, 11), (6, 4, 3), dict(strides=[2], pads=[2, 1])),
    ("1d-depthwise-dil", (1, 4, 13), (4, 1, 4), dict(group=4, dilations=[2], pads=[0, 3])),
    ("1d-g2-same_upper", (1, 4, 10), (6, 2, 3), dict(group=2, strides=[3], auto_pad="SAME_UPPER")),
    ("1d-same_lower-even-k", (1, 3, 9), (2, 3, 4), dict(strides=[2], auto_pad="SAME_LOWER")),
    ("1d-valid-dil", (1, 3, 12), (2, 3, 3), dict(strides=[2], dilations=[2], auto_pad="VALID")),
    # ceil(11/4) = 3 windows need -2 pads: clamped to 0 (ORT and the spec agree).
    ("1d-same-negative-need", (1, 2, 11), (3, 2, 1), dict(strides=[4], auto_pad="SAME_UPPER")),
    ("2d-all", (1, 3, 9, 8), (5, 3, 3, 2), dict(strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])),
    ("2d-depthwise", (1, 4, 7, 9), (4, 1, 3, 3), dict(group=4, pads=[0, 1, 1, 2])),
    ("2d-depthwise-mult2", (1, 3, 6, 6), (6, 1, 3, 2), dict(group=3, pads=[1, 1, 0, 0], strides=[1, 2])),
    ("2d-g2-same_upper", (2, 4, 8, 7), (6, 2, 2, 3), dict(group=2, strides=[2, 3], auto_pad="SAME_UPPER")),
    ("2d-same_lower", (1, 2, 7, 8), (3, 2, 4, 3), dict(strides=[1, 2], auto_pad="SAME_LOWER")),
    ("2d-valid-dil", (1, 2, 9, 9), (3, 2, 3, 2), dict(strides=[2, 2], dilations=[2, 1], auto_pad="VALID")),
    ("3d-all", (1, 2, 5, 6, 7), (3, 2, 3, 2, 3), dict(strides=[1, 2, 1], pads=[1, 0, 0, 0, 1, 2], dilations=[1, 1, 2])),
    ("3d-depthwise-same_lower", (1, 3, 6, 5, 4), (3, 1, 2, 3, 2), dict(group=3, auto_pad="SAME_LOWER")),
    ("3d-g2-same_upper", (1, 4, 5, 5, 5), (4, 2, 3, 3, 2), dict(group=2, strides=[2, 1, 2], auto_pad="SAME_UPPER")),
    ("3d-valid", (1, 2, 5, 4, 6), (2, 2, 2, 3, 2), dict(auto_pad="VALID", strides=[2, 1, 1])),
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_true_convolution_of_flipped_kernel_is_onnx_conv(case, with_bias):
    name, x_shape, w_shape, attrs = case
    x, w, b = _data(zlib.crc32(name.encode()), x_shape, w_shape, with_bias)
    ref = ort_single("Conv", x, w, b, attrs)

    got = true_convolution(x, flip(w), b, **attrs)
    assert got.dtype == np.float32
    assert rel_err(got, ref) <= RTOL

    # Same kernel without the flip: a true convolution is NOT ONNX's Conv
    # (unless the kernel is 1x..x1, where reversal is the identity).
    if max(w_shape[2:]) > 1:
        assert rel_err(true_convolution(x, w, b, **attrs), ref) > MIN_FLIP_ERROR


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_with_dilation_uses_dilated_extent(auto_pad):
    # onnxruntime 1.32 rejects SAME_* with dilation > 1 ("Dilation not
    # supported for AutoPadType::SAME_UPPER or AutoPadType::SAME_LOWER"), so
    # compare with onnx.reference, which pads for the dilated kernel extent
    # as the spec says.
    attrs = dict(auto_pad=auto_pad, dilations=[2, 3], strides=[2, 1])
    x, w, b = _data(7, (1, 2, 9, 10), (3, 2, 3, 2), True)
    ref = ReferenceEvaluator(single_node_model("Conv", x, w, b, attrs)).run(None, {"x": x})[0]
    assert ref.shape == (1, 3, 5, 10)  # ceil(in / stride)
    assert rel_err(true_convolution(x, flip(w), b, **attrs), ref) <= RTOL


def test_true_convolution_matches_textbook_definition():
    # numpy.convolve is the mathematical convolution; "valid" = no padding.
    rng = np.random.default_rng(3)
    sig, ker = rng.standard_normal(17), rng.standard_normal(5)
    got = true_convolution(sig[None, None], ker[None, None], strides=[1], pads=[0, 0], dilations=[1], group=1)
    np.testing.assert_allclose(got[0, 0], np.convolve(sig, ker, mode="valid"), rtol=1e-12)
    # Hand-worked: x=[1,2,3], K=[1,10]: O0 = x1*K0 + x0*K1 = 12, O1 = x2*K0 + x1*K1 = 23.
    small = true_convolution(np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 10.0]]]))
    np.testing.assert_array_equal(small, [[[12.0, 23.0]]])


def test_large_conv_is_fast():
    import time

    x, w, b = _data(0, (1, 64, 56, 56), (64, 64, 3, 3), True)
    start = time.perf_counter()
    true_convolution(x, w, b, strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
    assert time.perf_counter() - start < 1.0


# (id, x shape, w shape [C, M/group, *k], attributes)
CONVT_CASES = [
    ("1d-stride-pads-outpad", (1, 4, 5), (4, 3, 3), dict(strides=[2], pads=[1, 2], output_padding=[1])),
    ("1d-g2-dil", (2, 4, 6), (4, 2, 4), dict(group=2, strides=[3], dilations=[2], pads=[0, 1], output_padding=[2])),
    ("1d-depthwise", (1, 3, 5), (3, 1, 3), dict(group=3, pads=[2, 0])),
    ("2d-all", (1, 3, 4, 5), (3, 2, 3, 2), dict(strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2], dilations=[1, 2])),
    ("2d-g2", (1, 4, 3, 4), (4, 3, 2, 3), dict(group=2, strides=[2, 2], dilations=[2, 1], pads=[1, 1, 0, 0], output_padding=[1, 0])),
    ("3d-all", (1, 2, 3, 4, 3), (2, 2, 2, 3, 2), dict(strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0], output_padding=[1, 0, 1])),
    ("3d-depthwise-dil", (1, 2, 3, 3, 3), (2, 1, 3, 2, 2), dict(group=2, dilations=[1, 2, 1], pads=[1, 0, 0, 0, 1, 1])),
    # Crop resolved from auto_pad / output_shape (odd totals exercise the split).
    ("2d-same_upper", (1, 2, 4, 3), (2, 3, 2, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ("2d-same_lower", (1, 2, 4, 3), (2, 3, 2, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ("1d-output_shape", (1, 2, 4), (2, 2, 3), dict(strides=[3], dilations=[2], output_shape=[7])),
    ("1d-output_shape-same_upper", (1, 2, 4), (2, 2, 3), dict(strides=[3], output_shape=[7], auto_pad="SAME_UPPER")),
    ("2d-valid", (1, 2, 3, 3), (2, 2, 3, 2), dict(strides=[2, 1], auto_pad="VALID")),
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("case", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
def test_true_conv_transpose_of_flipped_kernel_is_onnx_conv_transpose(case, with_bias):
    name, x_shape, w_shape, attrs = case
    rng_seed = zlib.crc32(name.encode())
    x, w, _ = _data(rng_seed, x_shape, w_shape, False)
    m_out = w_shape[1] * attrs.get("group", 1)
    b = np.random.default_rng(rng_seed + 1).standard_normal(m_out).astype(np.float32) if with_bias else None
    ref = ort_single("ConvTranspose", x, w, b, attrs)

    got = true_conv_transpose(x, flip(w), b, **attrs)
    assert got.dtype == np.float32
    assert rel_err(got, ref) <= RTOL
    assert rel_err(true_conv_transpose(x, w, b, **attrs), ref) > MIN_FLIP_ERROR


@pytest.mark.parametrize(
    "x_shape,w_shape,attrs",
    [
        ((1, 2, 11), (4, 2, 3), dict(strides=[2], pads=[2, 1], dilations=[2])),
        ((2, 4, 7, 8), (6, 2, 3, 2), dict(group=2, strides=[2, 3], pads=[1, 0, 0, 2])),
        ((1, 3, 5, 6, 4), (3, 1, 2, 3, 2), dict(group=3, strides=[1, 2, 2], pads=[0, 1, 1, 1, 0, 0], dilations=[2, 1, 1])),
    ],
)
def test_conv_transpose_is_adjoint_of_true_convolution(x_shape, w_shape, attrs):
    """<conv(x), y> == <x, conv_transpose(y)>: the documented semantics, checked without ORT."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape)
    k = rng.standard_normal(w_shape)
    y_shape = true_convolution(x, k, **attrs).shape
    y = rng.standard_normal(y_shape)
    # Output padding that makes the transpose's output exactly x's shape.
    nd = len(x_shape) - 2
    strides = attrs.get("strides", [1] * nd)
    dil = attrs.get("dilations", [1] * nd)
    pads = attrs.get("pads", [0] * 2 * nd)
    op = [
        x_shape[2 + i] - (strides[i] * (y_shape[2 + i] - 1) + (w_shape[2 + i] - 1) * dil[i] + 1 - pads[i] - pads[nd + i])
        for i in range(nd)
    ]
    # ConvTranspose weight layout is [C_in_of_transpose, M/group, *k] = Conv's [M, C/group, *k].
    xt = true_conv_transpose(y, k, output_padding=op, **attrs)
    assert xt.shape == x.shape
    lhs = float(np.sum(true_convolution(x, k, **attrs) * y))
    rhs = float(np.sum(x * xt))
    assert abs(lhs - rhs) <= 1e-10 * max(abs(lhs), 1.0)


# -- whole model -----------------------------------------------------------------


def small_model(seed: int = 5) -> onnx.ModelProto:
    """x -> Conv(3x2, asym pads, bias) -> Relu -> Conv(g2, 2x3) -> Add(., conv1) -> y
    and y -> ConvTranspose(stride 2, output_padding) -> z."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((4, 2, 2, 3)).astype(np.float32)
    wt = rng.standard_normal((4, 2, 3, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=2, pads=[0, 1, 1, 1]),
        helper.make_node("Add", ["c2", "c1"], ["y"]),
        helper.make_node("ConvTranspose", ["y", "wt"], ["z"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (wt, "wt")]]
    return _make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        inits,
    )


def flip_model_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every Conv/ConvTranspose weight initializer spatially reversed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weights = {n.input[1] for n in out.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    for i, init in enumerate(out.graph.initializer):
        if init.name in weights:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(flip(numpy_helper.to_array(init)), init.name))
    return out


def test_evaluator_runs_flipped_model_like_onnxruntime_runs_original():
    model = small_model()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = dict(zip(["y", "z"], _session(model).run(None, {"x": x})))

    got = TrueConvolutionEvaluator(flip_model_weights(model)).run({"x": x})
    assert set(got) == {"y", "z"}
    for name in ("y", "z"):
        assert rel_err(got[name], ref[name]) <= RTOL, name

    # The evaluator really uses true-convolution semantics: the unflipped model differs.
    unflipped = TrueConvolutionEvaluator(model).run({"x": x})
    for name in ("y", "z"):
        assert rel_err(unflipped[name], ref[name]) > MIN_FLIP_ERROR, name
