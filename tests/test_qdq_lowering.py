"""Pools in QDQ regions (DQ -> pool -> Q): the rewrite is fully quantized and bit-exact.

Hand-built QDQ models, int8 and uint8 at several zero points, opsets 13 and 21, run on
onnxruntime with no graph optimizations and with all of them (where it runs its integer
kernels), on input suites that include the range's ends and integer ties; the integer
outputs must be equal (np.array_equal). The structure is checked from the ONNX graph:
every generated Conv reads its data and its weights (an int8 initializer) through
DequantizeLinear, every Conv/Add/Concat result is requantized before anything reads it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.target_limits import outside  # issue 15's limits, encoded independently of rewriter/
from rewriter.passes import rewrite_model
from tests.quantized import quantized_structure

LEVELS = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
ELEM = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}
RANGE = {np.int8: (-128, 127), np.uint8: (0, 255)}

# (name, op, attributes, input shape, number of chained pools)
MAX_SHAPES = [
    ("stem 3x3/s2/p1", "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [1, 3, 16, 16], 1),
    ("stem odd 3x3/s2/p1", "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [1, 2, 15, 15], 1),
    ("sppf 5x5/s1/p2 x3", "MaxPool", dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]), [1, 2, 10, 10], 3),
    ("2x2/s2", "MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), [1, 3, 8, 8], 1),
    ("3x3/s2 ceil", "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), [1, 2, 10, 10], 1),
    ("13x13/s1/p6", "MaxPool", dict(kernel_shape=[13, 13], strides=[1, 1], pads=[6, 6, 6, 6]), [1, 2, 9, 9], 1),
    ("global max 8x8", "GlobalMaxPool", {}, [1, 3, 8, 8], 1),
    ("global max 7x7", "GlobalMaxPool", {}, [1, 3, 7, 7], 1),
]
# (dtype, zero point): signed with an offset, the relu-like ends, uint8 centred.
QUANTIZATIONS = [(np.int8, 0), (np.int8, -128), (np.int8, 17), (np.uint8, 0), (np.uint8, 128)]


def qdq_model(
    op: str, attrs: dict, shape: Sequence[int], dtype, zero_point: int, *, chain: int = 1, opset: int = 13,
    scale: float = 0.0173, out_scale: Optional[float] = None, out_zero_point: Optional[int] = None,
) -> onnx.ModelProto:
    """xq -> DQ -> pool [-> Q -> DQ -> pool ...] -> Q -> yq: ``chain`` pools, each between a
    DQ and a Q (SPPF's chain), the last Q with ``out_scale``/``out_zero_point`` if given."""
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(np.array(zero_point, dtype), "z")]
    inits += [numpy_helper.from_array(np.array(out_scale or scale, np.float32), "so"),
              numpy_helper.from_array(np.array(zero_point if out_zero_point is None else out_zero_point, dtype), "zo")]
    nodes, q = [], "xq"
    for i in range(chain):
        last = i == chain - 1
        nodes.append(helper.make_node("DequantizeLinear", [q, "s", "z"], [f"x{i}"], name=f"dq{i}"))
        nodes.append(helper.make_node(op, [f"x{i}"], [f"y{i}"], name=f"pool{i}", **attrs))
        q = "yq" if last else f"q{i}"
        nodes.append(helper.make_node("QuantizeLinear", [f"y{i}", "so" if last else "s", "zo" if last else "z"], [q], name=f"q{i}"))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("xq", ELEM[dtype], list(shape))],
                              [helper.make_tensor_value_info("yq", ELEM[dtype], None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    return onnx.shape_inference.infer_shapes(model)


def suites(shape: Sequence[int], dtype) -> dict[str, np.ndarray]:
    """Input suites over the whole integer range: random, the ends, a narrow band around
    a value (many equal maxima), and ties (pairs of equal neighbours)."""
    lo, hi = RANGE[dtype]
    rng = np.random.default_rng(16)
    full = rng.integers(lo, hi + 1, shape)
    ties = np.repeat(rng.integers(lo, hi + 1, list(shape[:-1]) + [(shape[-1] + 1) // 2]), 2, axis=-1)[..., : shape[-1]]
    return {
        "random": full,
        "ends": rng.choice([lo, hi], shape),
        "lowest": np.full(shape, lo),
        "band": rng.integers(lo, lo + 3, shape),
        "ties": ties,
    } | {k: v for k, v in {"descending": np.sort(full, axis=-1)[..., ::-1]}.items()}


def run(model: onnx.ModelProto, x: np.ndarray, level: str) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"xq": x})[0]


def check_exact(model: onnx.ModelProto, dtype, **rewrite_options) -> tuple[onnx.ModelProto, list, int]:
    """Rewrite ``model``, check the structure, compare every suite at both levels; the
    rewritten model, the report rows, and how many outputs were compared."""
    written, report = rewrite_model(model, **rewrite_options)
    assert all(r.status == "rewritten" for r in report.nodes), [(r.name, r.reason) for r in report.nodes]
    assert quantized_structure(model, written) == []
    read = {i for n in written.graph.node for i in n.input} | {o.name for o in written.graph.output}
    assert [n.name for n in written.graph.node if not set(n.output) & read] == []  # no DQ left unread, the model's or ours
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    compared = 0
    for name, x in suites(shape, dtype).items():
        x = x.astype(dtype)
        for level in LEVELS:
            want, got = run(model, x, level), run(written, x, level)
            assert want.dtype == got.dtype and want.dtype in (np.dtype(dtype), np.float32)
            assert np.array_equal(want, got), (name, level, int(np.sum(want != got)))
            compared += want.size
    return written, report.nodes, compared


@pytest.mark.parametrize("opset", [pytest.param(13, marks=pytest.mark.slow), 21])  # the default run keeps one opset
@pytest.mark.parametrize("dtype,zero_point", QUANTIZATIONS, ids=[f"{d.__name__}-zp{z}" for d, z in QUANTIZATIONS])
@pytest.mark.parametrize("name,op,attrs,shape,chain", MAX_SHAPES, ids=[s[0] for s in MAX_SHAPES])
def test_max_pools_bit_exact(name, op, attrs, shape, chain, dtype, zero_point, opset):
    model = qdq_model(op, attrs, shape, dtype, zero_point, chain=chain, opset=opset)
    written, rows, compared = check_exact(model, dtype)
    assert compared > 0
    assert all(r.strategy.startswith("qdq ") and "nested" not in r.strategy and "border" not in r.strategy for r in rows), [r.strategy for r in rows]
    ops = {n.op_type for n in written.graph.node if n.name not in {m.name for m in model.graph.node}}
    assert ops <= {"Conv", "Relu", "Add", "Concat", "QuantizeLinear", "DequantizeLinear"}, ops


@pytest.mark.parametrize("out_scale,out_zero_point", [(0.031, 5), (0.009, -20), (0.0173, 40)])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_output_scale_differs(dtype, out_scale, out_zero_point):
    """A pool whose output Q has another scale or zero point than its input DQ: the rewrite
    hands the model's Q the very float the original max returns, so its own Q rounds it
    the same (saturation included)."""
    zero_point = 0 if dtype == np.uint8 else -3
    out_zero_point = out_zero_point if dtype == np.int8 else abs(out_zero_point)
    model = qdq_model("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [1, 3, 12, 12], dtype, zero_point,
                      out_scale=out_scale, out_zero_point=out_zero_point)
    _, _, compared = check_exact(model, dtype)
    assert compared == 6 * 2 * 3 * 6 * 6


TARGET_CASES = [
    ("tidl", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), [1, 2, 10, 10], "conv.depthwise_kernels"),
    ("tidl", dict(kernel_shape=[8, 8], strides=[8, 8]), [1, 2, 40, 40], "conv.depthwise_kernels"),
    ("rknn", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), [1, 2, 10, 10], "conv.pad_below_kernel"),
    ("rknn", dict(kernel_shape=[9, 9], strides=[3, 3], pads=[4, 4, 4, 4]), [1, 2, 20, 20], "conv.pad_below_kernel"),
    ("nvidia-dla", dict(kernel_shape=[13, 13], strides=[1, 1], pads=[6, 6, 6, 6]), [1, 2, 20, 20], None),
]


@pytest.mark.parametrize("target,attrs,shape,fitted", TARGET_CASES)
def test_target_limits_kept_quantized(target, attrs, shape, fitted):
    """With --target the quantized construction is laid out within the profile like the
    float one (the legalized convs still read their weights as int8 through
    DequantizeLinear), or is a cascade of the target's native pools between Q/DQ."""
    model = qdq_model("MaxPool", attrs, shape, np.int8, 9)
    written, rows, _ = check_exact(model, np.int8, target=target)
    assert outside(model, written, target) == []
    # The cheapest construction that fits is kept, so which rule it was laid out for may vary.
    assert fitted is None or any(rule.startswith("conv.") for rule in rows[0].fitted_to), rows[0].fitted_to


AVERAGES = [
    ("avg 2x2/s2", "AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), [1, 3, 8, 8]),
    ("avg 3x3/s1/p1 exclude pad", "AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), [1, 2, 7, 7]),
    ("global avg 8x8", "GlobalAveragePool", {}, [1, 3, 8, 8]),
    ("global avg 7x7", "GlobalAveragePool", {}, [1, 3, 7, 7]),
]


# What each average becomes at one scale in and out: a power of two, and quantize_static's kind.
AVERAGE_OUTCOMES = {
    "avg 2x2/s2": {2.0 ** -7: "qdq", 0.0173: "tie"},
    "avg 3x3/s1/p1 exclude pad": {2.0 ** -7: "counts", 0.0173: "counts"},
    "global avg 8x8": {2.0 ** -7: "qdq", 0.0173: "tie"},
    "global avg 7x7": {2.0 ** -7: "qdq model-scale conv", 0.0173: "qdq model-scale conv"},  # 49 values: no tie
}


def check_at_ties(model: onnx.ModelProto, dtype, strategy: str) -> None:
    """An average whose window means reach QuantizeLinear ties: rewritten (``strategy``),
    its structure quantized; at each level one step off at most, only at outputs whose
    exact mean lies within float32 rounding of a tie, and validation passes, counting them."""
    from rewriter.validate import validate_models
    from rewriter.validate.ties import TieSite, tie_mask

    written, report = rewrite_model(model)
    (row,) = report.nodes
    assert row.status == "rewritten" and row.strategy == strategy and "ties" in row.note, (row.strategy, row.reason, row.note)
    assert quantized_structure(model, written) == []
    pool = next(n for n in model.graph.node if n.name == "pool0")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    info = np.iinfo(dtype)
    piece = helper.make_model(helper.make_graph([pool], "pool", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, None)],
                                                [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)]), opset_imports=model.opset_import)
    site = TieSite("y0", piece, "xq", "x0", "yq", float(inits["s"]), float(inits["so"]), int(inits["zo"]), (int(info.min), int(info.max)))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    off, differing = 0, None
    for name, x in suites(shape, dtype).items():
        x = x.astype(dtype)
        mask = tie_mask(site, x.astype(np.float64) - float(inits["z"]))
        for level in LEVELS:
            want, got = run(model, x, level).astype(int), run(written, x, level).astype(int)
            assert np.abs(want - got).max(initial=0) <= 1 and not np.any((want != got) & ~mask), (name, level)
            off += int(np.sum(want != got))
            differing = x if differing is None and off else differing
    result = validate_models(model, written)
    assert result.passed and all(n.passed for n in result.nodes), result.summary()
    if differing is not None:  # where a tie is rounded the other way: passes, and fails when ties must be exact
        user = {"xq": differing}
        at_ties = validate_models(model, written, user_inputs=user, suites=())
        (check,) = at_ties.nodes
        assert at_ties.passed and check.tie_outputs_rounded_otherwise > 0 and check.tie_outputs >= check.tie_outputs_rounded_otherwise // 2
        assert not validate_models(model, written, user_inputs=user, suites=(), allow_ties=False).passed


@pytest.mark.parametrize("scale", [2.0 ** -7, 0.0173])
@pytest.mark.parametrize("dtype,zero_point", QUANTIZATIONS[:2] + QUANTIZATIONS[3:], ids=lambda v: str(v))
@pytest.mark.parametrize("name,op,attrs,shape", AVERAGES, ids=[a[0] for a in AVERAGES])
def test_averages_in_qdq_regions_follow_one_rule(name, op, attrs, shape, dtype, zero_point, scale):
    """AveragePool and GlobalAveragePool between DQ and Q follow one rule. Rewritten in
    integers where the scale is a power of two and every window holds the same
    power-of-two count (bit-exact on inputs with rounding ties); rewritten at the model's
    scales where no window sum lands on a tie (an odd count at one scale); otherwise
    kept, saying which windows or which tie (at scale 0.0173 the original itself rounds
    ties differently at the two optimization levels)."""
    want = AVERAGE_OUTCOMES[name][scale]
    model = qdq_model(op, attrs, shape, dtype, zero_point, scale=scale)
    if want in ("tie", "counts"):
        # Rewritten by default, one step off at most and only at ties; kept when asked.
        (row,) = rewrite_model(model, keep_tie_averages=True)[1].nodes
        assert row.status == "kept" and want in row.reason and "keep_tie_averages" in row.reason, row.reason
        check_at_ties(model, dtype, "qdq model-scale conv" if want == "tie" else "qdq model-scale conv per count")
        return
    _, (row,), compared = check_exact(model, dtype)
    assert row.strategy == want and row.note == "", (row.strategy, row.note)
    if want == "qdq":
        x = suites(shape, dtype)["random"] - zero_point
        k = 4 if op == "AveragePool" else 64
        sums = x.reshape(shape[0], shape[1], -1, 2, shape[3] // 2, 2).sum(axis=(3, 5)) if k == 4 else x.sum(axis=(2, 3))
        assert k == 64 or np.sum(sums % k == k // 2) > 0  # the 2x2 suite holds exact ties
    assert compared > 0


@pytest.mark.parametrize("zero_point", [-3, 17, 1])
def test_an_odd_zero_point_at_ties(zero_point):
    """At a power-of-two scale the means are exact, but with an odd zero point the original
    itself rounds its ties onto other integers at the two levels (QLinearAveragePool adds
    the zero point before rounding; the original's disagreement is shown): rewritten at the
    model's scales, one step off at ties only; with keep_tie_averages kept, saying so."""
    model = qdq_model("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), [1, 4, 16, 16], np.int8, zero_point, scale=0.25)
    (row,) = rewrite_model(model, keep_tie_averages=True)[1].nodes
    assert row.status == "kept" and f"odd zero point {zero_point}" in row.reason, row.reason
    check_at_ties(model, np.int8, "qdq model-scale conv")
    x = np.random.default_rng(0).integers(-128, 128, [1, 4, 16, 16]).astype(np.int8)
    levels = [run(model, x, level) for level in LEVELS]
    assert not np.array_equal(*levels)


# (in scale, in zero point, out scale, out zero point) as quantize_static gives them: a global
# average's output has a calibrated scale of its own; signed inputs; uint8 centred.
MODEL_SCALES = {
    np.int8: [(0.02364, -128, 0.00731, -128), (0.02364, -3, 0.0113, 5), (0.1, 17, 0.0371, -20)],
    np.uint8: [(0.0173, 0, 0.0041, 3), (0.0173, 128, 0.0291, 120)],
}
MODEL_SCALE_AVERAGES = [
    ("avg 2x2/s2", "AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), [1, 3, 8, 8]),
    ("avg 4x4/s4", "AveragePool", dict(kernel_shape=[4, 4], strides=[4, 4]), [1, 2, 16, 16]),
    ("avg 3x3/s2", "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2]), [1, 3, 11, 11]),
    ("avg 3x3/s1/p1 include pad", "AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), [1, 2, 7, 7]),
    ("global avg 8x8", "GlobalAveragePool", {}, [1, 8, 8, 8]),
    ("global avg 7x7", "GlobalAveragePool", {}, [1, 8, 7, 7]),
    ("global avg 4x4 batch 2", "GlobalAveragePool", {}, [2, 16, 4, 4]),
]


@pytest.mark.parametrize("dtype,quantization", [(d, q) for d, qs in MODEL_SCALES.items() for q in qs], ids=lambda v: str(v))
@pytest.mark.parametrize("name,op,attrs,shape", MODEL_SCALE_AVERAGES, ids=[a[0] for a in MODEL_SCALE_AVERAGES])
def test_averages_with_their_own_output_scale_are_one_conv_at_the_models_scales(name, op, attrs, shape, dtype, quantization):
    """An average whose output Q has its own scale reaches no rounding tie: one conv reads the
    model's DequantizeLinear with int8 weights 127 at scale 1/(127 K), the model's Q reads it, and
    the outputs are bit-exact at both levels."""
    scale, zero_point, out_scale, out_zero_point = quantization
    model = qdq_model(op, attrs, shape, dtype, zero_point, scale=scale, out_scale=out_scale, out_zero_point=out_zero_point)
    written, (row,), compared = check_exact(model, dtype)
    assert row.strategy == "qdq model-scale conv" and row.op_counts == {"Conv": 1, "DequantizeLinear": 1}, (row.strategy, row.op_counts)
    assert compared > 0
    (conv,) = [n for n in written.graph.node if n.op_type == "Conv"]
    assert conv.input[0] == "x0" and conv.output[0] == "y0"  # the model's DQ in, the model's Q out


def test_tie_margin_finds_the_exact_ties_a_brute_force_finds():
    """The rational tie test against enumerating every window sum with Fractions."""
    from fractions import Fraction

    from rewriter.lower.qdq_average import tie_margin
    from rewriter.site import Quantization

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(60):
        dtype = np.int8 if rng.random() < 0.5 else np.uint8
        lo, hi = RANGE[dtype]
        zero_point, out_zero_point = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        count = int(rng.choice([2, 3, 4, 9, 16]))
        scale = np.float32(2.0 ** -int(rng.integers(3, 9)) * rng.choice([1, 3, 5, 0.75]))
        out_scale = np.float32(scale * rng.choice([1, 2, 0.5, 1.5, 3, 0.7]))
        source = Quantization(scale, zero_point, np.dtype(dtype), np.dtype(np.float32))
        out = Quantization(out_scale, out_zero_point, np.dtype(dtype), np.dtype(np.float32))
        ratio = Fraction(float(scale)) / (Fraction(float(out_scale)) * count)
        ties = [s for s in range(count * (lo - zero_point), count * (hi - zero_point) + 1)
                if (2 * s * ratio).denominator == 1 and (2 * s * ratio).numerator % 2 and lo < s * ratio + out_zero_point < hi]
        found = tie_margin(source, [out], count, count).exact_tie
        assert (found is None) == (not ties), (scale, out_scale, count, zero_point, out_zero_point, ties[:3], found)
        if ties:
            assert found == min(ties, key=abs) or -found == min(ties, key=abs)
        checked += bool(ties)
    assert checked > 10


@pytest.mark.parametrize("op,attrs,shape,quantization,proven", [
    ("AveragePool", dict(kernel_shape=[4, 4], strides=[4, 4]), [2, 16, 16, 16], (0.1, 17, 0.0371, -20), False),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[3, 3]), [2, 16, 15, 15], (0.0173, -128, 0.0173, -128), True),
    ("GlobalAveragePool", {}, [2, 64, 5, 5], (0.0173, 3, 0.0173, 3), True),
])
def test_model_scale_mismatches_only_where_the_report_names_near_ties(op, attrs, shape, quantization, proven):
    """The float32 rounding bound is conservative: where the report proves the means miss
    every tie, many random inputs give no mismatch at either level; where it names sums
    near a tie, any mismatch is at a mean within 1e-4 steps of a tie."""
    scale, zero_point, out_scale, out_zero_point = quantization
    model = qdq_model(op, attrs, shape, np.int8, zero_point, scale=scale, out_scale=out_scale, out_zero_point=out_zero_point)
    written, report = rewrite_model(model)
    (row,) = report.nodes
    assert row.strategy == "qdq model-scale conv" and (row.note == "") == proven, row.note
    k = int(np.prod(attrs.get("kernel_shape", shape[2:])))
    ratio = float(np.float32(scale)) / (float(np.float32(out_scale)) * k)
    rng = np.random.default_rng(2)
    for draw in range(30):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        if draw % 2:
            x = np.maximum(x, zero_point).astype(np.int8)  # one sign, as after a Relu
        n = x.astype(np.int64) - zero_point
        if op == "GlobalAveragePool":
            sums = n.sum(axis=(2, 3), keepdims=True)
        else:
            s = attrs["kernel_shape"][0]
            h, w = shape[2] // s, shape[3] // s
            sums = n[:, :, : h * s, : w * s].reshape(shape[0], shape[1], h, s, w, s).sum(axis=(3, 5))
        for level in LEVELS:
            bad = run(model, x, level) != run(written, x, level)
            if proven:
                assert not bad.any(), (level, int(bad.sum()))
            means = sums[bad] * ratio
            assert np.all(np.abs(means - np.floor(means) - 0.5) < 1e-4), means


def shared_scale_model(op: str, attrs: dict, before: Sequence[tuple], after: Sequence[tuple], shape: Sequence[int], dtype,
                       quantization: tuple[float, int, float, int]) -> onnx.ModelProto:
    """xq -> DQ -> ``before`` ops -> pool -> ``after`` ops -> Q -> yq; each op is
    ``(op_type, attributes[, constant second input])``: the scale-sharing ops a
    quantizer (or an NHWC export) leaves between the pool and its DQ and Q."""
    scale, zero_point, out_scale, out_zero_point = quantization
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(np.array(zero_point, dtype), "z"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "so"), numpy_helper.from_array(np.array(out_zero_point, dtype), "zo")]
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["t0"], name="dq")]
    t = "t0"

    def chain(ops: Sequence[tuple], tag: str) -> None:
        nonlocal t
        for i, (kind, kind_attrs, *second) in enumerate(ops):
            inputs = [t]
            if second:
                inits.append(numpy_helper.from_array(np.array(second[0], np.int64), f"{tag}{i}_arg"))
                inputs.append(f"{tag}{i}_arg")
            nodes.append(helper.make_node(kind, inputs, [f"{tag}{i}"], name=f"{tag}{i}_node", **kind_attrs))
            t = f"{tag}{i}"

    chain(before, "b")
    nodes.append(helper.make_node(op, [t], ["pooled"], name="pool", **attrs))
    t = "pooled"
    chain(after, "a")
    nodes.append(helper.make_node("QuantizeLinear", [t, "so", "zo"], ["yq"], name="q"))
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("xq", ELEM[dtype], list(shape))],
                              [helper.make_tensor_value_info("yq", ELEM[dtype], None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


TO_NCHW, TO_NHWC = ("Transpose", dict(perm=[0, 3, 1, 2])), ("Transpose", dict(perm=[0, 2, 3, 1]))
SHARED_SCALE_CASES = [
    ("nhwc max 3x3/s2/p1", "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [TO_NCHW], [TO_NHWC], [1, 9, 9, 3]),
    ("nhwc avg 3x3/s3", "AveragePool", dict(kernel_shape=[3, 3], strides=[3, 3]), [TO_NCHW], [TO_NHWC], [2, 9, 9, 4]),
    ("nhwc global avg 9x9, flatten", "GlobalAveragePool", {}, [TO_NCHW], [("Flatten", {})], [2, 9, 9, 4]),
    ("reshape, identity, global max", "GlobalMaxPool", {}, [("Reshape", {}, [1, 4, 6, 6]), ("Identity", {})], [("Reshape", {}, [1, 4])], [1, 4, 36]),
    ("max 2x2/s2, squeeze-unsqueeze", "MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), [("Unsqueeze", {}, [0]), ("Squeeze", {}, [0])],
     [("Identity", {})], [1, 3, 8, 8]),
]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("name,op,attrs,before,after,shape", SHARED_SCALE_CASES, ids=[c[0] for c in SHARED_SCALE_CASES])
def test_pools_reached_through_scale_sharing_ops_are_in_the_qdq_region(name, op, attrs, before, after, shape, dtype):
    """A pool whose DQ or Q is reached through ops that only move values (Transpose of an
    NHWC export, Reshape, Flatten, Squeeze, Unsqueeze, Identity) is lowered quantized
    too: the rewrite requantizes the pool's input (giving back the model's integers) and
    hands the chain after it dequantized integers; bit-exact at both levels."""
    zero_point = -128 if dtype == np.int8 else 0
    max_pool = "Max" in op
    quantization = (0.02364, zero_point) + ((0.02364, zero_point) if max_pool else (0.0071, zero_point + 3))
    model = shared_scale_model(op, attrs, before, after, shape, dtype, quantization)
    written, (row,), _ = check_exact(model, dtype)
    assert row.strategy.startswith("qdq "), row.strategy
    # The node check starts at the DQ's integers (the pool never sees off-grid values) and
    # compares its output quantized as the region's Q does: no false alarm.
    from rewriter.validate import validate_models

    result = validate_models(model, written)
    assert result.passed and all(n.exact for n in result.nodes), result.summary()


def test_a_float_op_between_dq_and_pool():
    """A Relu computed in float between the DQ and the pool: a max is then quantized as
    its output (its Q), an average is a float region already (its float rewrite, with no
    QuantizeLinear of its own)."""
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2])
    quantization = (0.02364, 0, 0.02364, 0)
    model = shared_scale_model("MaxPool", attrs, [("Relu", {})], [], [1, 3, 8, 8], np.int8, quantization)
    written, (row,), _ = check_exact(model, np.int8)
    assert row.strategy.startswith("qdq"), row.strategy
    model = shared_scale_model("AveragePool", attrs, [("Relu", {})], [], [1, 3, 8, 8], np.int8, quantization)
    written, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten" and not report.nodes[0].strategy.startswith("qdq"), report.nodes[0].strategy
    assert [n.op_type for n in written.graph.node].count("QuantizeLinear") == 1


MODEL_SCALE_TARGET_CASES = [
    ("tidl", "AveragePool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2], count_include_pad=1), [1, 3, 9, 9]),
    ("rknn", "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2]), [1, 3, 11, 11]),
    ("rknn", "AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), [1, 3, 8, 8]),
    ("nvidia-dla", "GlobalAveragePool", {}, [1, 8, 20, 20]),
]


@pytest.mark.parametrize("target,op,attrs,shape", MODEL_SCALE_TARGET_CASES)
def test_model_scale_averages_within_target_limits(target, op, attrs, shape):
    """With --target, the one conv of a mean at the model's scales fits the profile's
    limits (checked by the independent encoding)."""
    model = qdq_model(op, attrs, shape, np.int8, -128, scale=0.02364, out_scale=0.00731, out_zero_point=-128)
    written, (row,), _ = check_exact(model, np.int8, target=target)
    assert row.strategy == "qdq model-scale conv"
    assert outside(model, written, target) == []


def test_model_scale_average_kept_naming_the_limit_its_one_conv_breaks():
    too_big = qdq_model("GlobalAveragePool", {}, [1, 8, 40, 40], np.int8, -128, scale=0.02364, out_scale=0.00731, out_zero_point=-128)
    (kept,) = rewrite_model(too_big, target="nvidia-dla")[1].nodes
    assert kept.status == "kept" and "conv.kernel 40 outside" in kept.reason, kept.reason


def chained_model(dtype, zero_point: int, quantization: tuple[float, float, int], last: str) -> onnx.ModelProto:
    """xq -> DQ -> MaxPool 5x5 -> MaxPool 5x5 -> ``last`` with no QDQ pair between the pools:
    ``last`` is "sppf" (a third MaxPool, then Concat(x, m0, m1, m2) -> Q), "mean" (an
    AveragePool 3x3/s3 -> Q) or "sigmoid" (a third MaxPool read by a float Sigmoid)."""
    scale, out_scale, out_zero_point = quantization
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(np.array(zero_point, dtype), "z"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "so"), numpy_helper.from_array(np.array(out_zero_point, dtype), "zo")]
    same = dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq"),
             helper.make_node("MaxPool", ["x"], ["m0"], name="m0", **same),
             helper.make_node("MaxPool", ["m0"], ["m1"], name="m1", **same)]
    output = helper.make_tensor_value_info("yq", ELEM[dtype], None)
    if last == "mean":
        nodes += [helper.make_node("AveragePool", ["m1"], ["m2"], name="m2", kernel_shape=[3, 3], strides=[3, 3]),
                  helper.make_node("QuantizeLinear", ["m2", "so", "zo"], ["yq"], name="q")]
    elif last == "sppf":
        nodes += [helper.make_node("MaxPool", ["m1"], ["m2"], name="m2", **same),
                  helper.make_node("Concat", ["x", "m0", "m1", "m2"], ["c"], name="cat", axis=1),
                  helper.make_node("QuantizeLinear", ["c", "so", "zo"], ["yq"], name="q")]
    else:
        nodes += [helper.make_node("MaxPool", ["m1"], ["m2"], name="m2", **same), helper.make_node("Sigmoid", ["m2"], ["yq"], name="head")]
        output = helper.make_tensor_value_info("yq", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "chained", [helper.make_tensor_value_info("xq", ELEM[dtype], [1, 3, 9, 9])], [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("last", ["sppf", "mean", "sigmoid"])
@pytest.mark.parametrize("dtype,zero_point,quantization", [
    (np.int8, -3, (0.02364, 0.02364, -3)), (np.int8, -3, (0.02364, 0.031, 5)), (np.uint8, 0, (0.0173, 0.0173, 0)),
], ids=["int8", "int8-rescaled", "uint8"])
def test_max_pools_chained_without_qdq_between_them(last, dtype, zero_point, quantization):
    """A max picks values of its input, so a chain of max pools with no QDQ pair between
    them (an SPPF some quantizers leave whole) is one QDQ region: every pool is built
    quantized, and a mean after them too; a max read by a float op still hands on the
    original's very float. Bit-exact at both levels."""
    model = chained_model(dtype, zero_point, quantization, last)
    written, rows, _ = check_exact(model, dtype)
    assert all(r.strategy.startswith("qdq ") for r in rows), [r.strategy for r in rows]
    from rewriter.validate import validate_models

    result = validate_models(model, written)
    assert result.passed, result.summary()


def float_max_then_q_model(dtype, relu: bool, op: str = "MaxPool") -> onnx.ModelProto:
    """TensorRT-style placement: x -> Conv (float) [-> Relu] -> MaxPool -> Q -> DQ -> Conv: the
    pool's input is float, only its output is quantized."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal([4, 3, 3, 3]).astype(np.float32), "w0"),
             numpy_helper.from_array(np.array(0.031, np.float32), "s"), numpy_helper.from_array(np.array(-128 if relu else 5, dtype) if dtype == np.int8 else np.array(0 if relu else 128, dtype), "z"),
             numpy_helper.from_array(rng.integers(-20, 20, [2, 4, 1, 1]).astype(np.int8), "w1q"), numpy_helper.from_array(np.array(0.01, np.float32), "w1s")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="c0", pads=[1, 1, 1, 1])]
    t = "c0"
    if relu:
        nodes.append(helper.make_node("Relu", ["c0"], ["r0"], name="r0"))
        t = "r0"
    pool_attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]) if op == "MaxPool" else {}
    nodes += [helper.make_node(op, [t], ["p"], name="pool", **pool_attrs),
              helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"], name="q"),
              helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pd"], name="dq"),
              helper.make_node("DequantizeLinear", ["w1q", "w1s"], ["w1"], name="wdq"),
              helper.make_node("Conv", ["pd", "w1"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "trt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("op", ["MaxPool", "GlobalMaxPool"])
@pytest.mark.parametrize("relu", [True, False], ids=["after-relu", "signed"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_float_max_read_only_by_quantize_is_built_quantized(dtype, relu, op):
    """A float max read only by QuantizeLinear (TensorRT's placement, no DQ before it):
    Q(max(x)) = max(Q(x)), so its input is quantized as its output and the max built in
    integers; the model's outputs are equal bit for bit at both levels, on many inputs."""
    model = float_max_then_q_model(dtype, relu, op)
    written, report = rewrite_model(model)
    (row,) = report.nodes
    assert row.status == "rewritten" and row.strategy.startswith("qdq"), (row.strategy, row.reason)
    assert quantized_structure(model, written) == []
    rng = np.random.default_rng(0)
    for draw in range(8):
        x = (rng.standard_normal([1, 3, 12, 12]) * (0.3 if draw % 2 else 3)).astype(np.float32)
        for level in LEVELS:
            options = ort.SessionOptions()
            options.graph_optimization_level = LEVELS[level]
            want, got = (ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                         for m in (model, written))
            assert np.array_equal(want, got), (level, draw, int(np.sum(want != got)))
    # The validator judges the node after its Q (max commutes with it): no false alarm.
    from rewriter.validate import validate_models

    result = validate_models(model, written)
    assert result.passed and [n.compared for n in result.nodes] == ["pq"], result.summary()


@pytest.mark.parametrize("dtype,zero_point", [(np.int8, -128), (np.uint8, 0)])
@pytest.mark.parametrize("out_scale", [None, 0.0071])
def test_windows_of_different_counts(out_scale, dtype, zero_point):
    """Inception's count_include_pad=0 average: one conv per block of windows with one
    count (corners 4, edges 6, inside 9 values), requantized and concatenated. At one scale
    its corner and edge windows reach exact ties: one step off there only, and with
    keep_tie_averages kept, the reason naming the counts with a tying sum. With an output
    scale of its own none does: bit-exact at both levels, also with keep_tie_averages."""
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = qdq_model("AveragePool", attrs, [1, 2, 7, 7], dtype, zero_point, scale=0.02364, out_scale=out_scale)
    (kept,) = rewrite_model(model, keep_tie_averages=True)[1].nodes
    if out_scale is None:
        expected = "the windows of 4 (a sum of q - z of 2), 6 (a sum of q - z of 3)"
        assert kept.status == "kept" and "windows of [4, 6, 9] values" in kept.reason and expected in kept.reason, kept.reason
        check_at_ties(model, dtype, "qdq model-scale conv per count")
        return
    assert kept.status == "rewritten"
    written, (row,), compared = check_exact(model, dtype)
    assert row.strategy == "qdq model-scale conv per count" and compared > 0
    assert sum(n.op_type == "Conv" for n in written.graph.node) == 9
