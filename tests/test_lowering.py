"""Every lowering against real onnxruntime on the original node, over attribute grids.

Each case asserts: the node was rewritten, the new graph holds only depthwise
Conv, Relu, Add and Concat, it passes the full onnx checker, and its outputs
equal onnxruntime's MaxPool/AveragePool on signed, all-negative and tie-heavy
integer inputs.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import onnx
import pytest
from helpers import STRICT_OPS, input_suites, op_types, pool_model, run
from onnx import TensorProto

from rewriter import rewrite_model
from rewriter.lower import max_ladders
from rewriter.lower.max_strategies import tuned
from rewriter.spec import AxisSpec
from compat import TEST_OPSET, opsets, requires_opset

RTOL = {np.float32: 1e-6, np.float16: 4e-3}


def assert_rewrite_matches(op: str, shape, attrs, *, opset=TEST_OPSET, relu=False, dtype=np.float32, exact_on_ties=True, options=None):
    onnx_dtype = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    model = pool_model(op, shape, attrs, opset=opset, prefix_relu=relu, dtype=onnx_dtype)
    new, report = rewrite_model(model, **(options or {}))
    (node,) = report.nodes
    assert node.status == "rewritten", node.reason
    assert op_types(new) <= STRICT_OPS, op_types(new)
    onnx.checker.check_model(new, full_check=True)
    assert_depthwise(new, channels=shape[1])
    for suite, x in input_suites(shape, dtype).items():
        expected = run(model, {"x": x})[0]
        actual = run(new, {"x": x})[0]
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        if exact_on_ties and suite == "ties" and (op.endswith("MaxPool") or dtype == np.float32 and _exact_average(shape, attrs)):
            np.testing.assert_array_equal(actual, expected, err_msg=f"{suite}")
        scale = max(float(np.abs(expected).max()), 1e-30)
        err = float(np.abs(actual.astype(np.float64) - expected).max()) / scale
        assert err <= RTOL[dtype], f"{suite}: relative error {err:.3g}"
    return new, report


def _exact_average(shape, attrs) -> bool:
    return False  # divisors like 1/3 round; integer sums are only exact for power-of-two counts


def assert_depthwise(model: onnx.ModelProto, channels: int) -> None:
    weights = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next(a.i for a in node.attribute if a.name == "group")
        w = weights[node.input[1]]
        assert group == channels and list(w.dims[:2]) == [channels, 1], (node.name, group, list(w.dims))


def _pads_ok(kernel, pads) -> bool:
    rank = len(kernel)
    return all(pads[i] < kernel[i] and pads[i + rank] < kernel[i] for i in range(rank))


# -- MaxPool 2-D: kernels (incl. non-square), strides, explicit/asymmetric pads, ceil_mode, dilations
MAX_2D = [
    (k, s, p, c, d)
    for k, s, p, c, d in itertools.product(
        [(2, 2), (3, 3), (3, 2), (1, 3), (5, 4)],
        [(1, 1), (2, 2), (3, 1)],
        [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)],
        [0, 1],
        [(1, 1), (2, 3)],
    )
    if _pads_ok(k, p)
]


BORDER_STRATEGIES = ["default", "nested", "nested-fixed-borders", "anchored", "replicated", "fixed-borders"]


NO_NESTED = ["nested-chain", "nested-border-fix"]


def border_options(strategy: str) -> dict:
    """Signed MaxPool inputs: whatever the lowering picks; the nested relu chain
    wherever it applies (one-sided padding), also with the border fix of large
    strided pools (padding on both sides: the chain exact on one side, the other
    side's border outputs fixed); the anchored ladder wherever it applies; a padded
    copy of replicated elements; or the zero-padded ladder with its border outputs
    fixed. The last three keep the nested chain out of the way. Returns the
    rewrite options that pick it."""
    return {
        "default": {},
        "nested": dict(strategies=tuned(max_extra_convs=None)),
        "nested-fixed-borders": dict(strategies=tuned(max_extra_convs=None, min_values=0)),
        "anchored": dict(exclude_strategies=NO_NESTED),
        "replicated": dict(exclude_strategies=NO_NESTED + ["anchored-ladder"]),
        "fixed-borders": dict(strategies=tuned(min_values=0), exclude_strategies=NO_NESTED),
    }[strategy]


@pytest.fixture(params=BORDER_STRATEGIES)
def border_strategy(request):
    return border_options(request.param)


@pytest.mark.parametrize(
    "variant", ["after-relu", "after-relu-ladder"] + [f"signed-{s}" for s in BORDER_STRATEGIES]
)
@pytest.mark.parametrize("kernel,strides,pads,ceil_mode,dilations", MAX_2D, ids=str)
def test_max_pool_2d_grid(kernel, strides, pads, ceil_mode, dilations, variant):
    """Signed inputs take one of the border strategies; after Relu the conv's zero
    padding, in the nested chain (the default on short windows) or the ladder."""
    after_relu = variant.startswith("after-relu")
    if variant == "after-relu-ladder":
        options = dict(exclude_strategies=NO_NESTED)
    else:
        options = {} if after_relu else border_options(variant.removeprefix("signed-"))
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil_mode, dilations=list(dilations))
    assert_rewrite_matches("MaxPool", [1, 3, 11, 10], attrs, relu=after_relu, options=options)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("kernel,strides", [((2, 2), (2, 2)), ((3, 2), (1, 2)), ((4, 3), (2, 1)), ((3, 3), (3, 3))], ids=str)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_auto_pad(op, auto_pad, kernel, strides):
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), auto_pad=auto_pad)
    assert_rewrite_matches(op, [1, 2, 9, 8], attrs)


@pytest.mark.parametrize(
    "kernel,strides,pads,ceil_mode,dilations",
    [
        ((3,), (1,), (1, 1), 0, (1,)),
        ((3,), (2,), (1, 2), 1, (1,)),
        ((4,), (3,), (0, 3), 1, (2,)),
        ((2,), (1,), (1, 0), 0, (4,)),
        ((13,), (1,), (6, 6), 0, (1,)),
        ((3,), (2,), (2, 2), 1, (3,)),
    ],
    ids=str,
)
def test_max_pool_1d(kernel, strides, pads, ceil_mode, dilations, border_strategy):
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil_mode, dilations=list(dilations))
    assert_rewrite_matches("MaxPool", [1, 3, 17], attrs, options=border_strategy)


@pytest.mark.parametrize(
    "kernel,strides,pads,ceil_mode",
    [((2, 2, 2), (2, 2, 2), (0,) * 6, 0), ((3, 2, 3), (1, 2, 2), (1, 0, 1, 1, 1, 2), 1), ((3, 3, 3), (2, 1, 1), (1,) * 6, 0)],
    ids=str,
)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_3d(op, kernel, strides, pads, ceil_mode, border_strategy):
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil_mode)
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    assert_rewrite_matches(op, [1, 2, 7, 6, 5], attrs, options=border_strategy)


# -- AveragePool: count_include_pad, ceil_mode overhang divisors, dilations (opset 19+)
AVG_2D = [
    (k, s, p, c, cip)
    for k, s, p, c, cip in itertools.product(
        [(2, 2), (3, 3), (3, 2), (5, 1)],
        [(1, 1), (2, 2), (2, 3)],
        [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)],
        [0, 1],
        [0, 1],
    )
    if _pads_ok(k, p)
]


@pytest.mark.parametrize("kernel,strides,pads,ceil_mode,count_include_pad", AVG_2D, ids=str)
def test_average_pool_2d_grid(kernel, strides, pads, ceil_mode, count_include_pad):
    attrs = dict(
        kernel_shape=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil_mode, count_include_pad=count_include_pad
    )
    assert_rewrite_matches("AveragePool", [1, 3, 11, 10], attrs)


@pytest.mark.parametrize("dilations", [(2, 1), (2, 3)], ids=str)
@pytest.mark.parametrize("pads,ceil_mode,count_include_pad", [((0, 0, 0, 0), 0, 0), ((1, 2, 2, 0), 1, 0), ((2, 1, 1, 2), 1, 1)], ids=str)
def test_average_pool_dilated(dilations, pads, ceil_mode, count_include_pad):
    attrs = dict(
        kernel_shape=[3, 3], strides=[2, 1], pads=list(pads), ceil_mode=ceil_mode,
        count_include_pad=count_include_pad, dilations=list(dilations),
    )
    assert_rewrite_matches("AveragePool", [1, 3, 12, 11], attrs, opset=19)


def test_average_pool_ceil_overhang_divisor():
    """The DESIGN's example: length 5, k=2, s=2, pads 1/1, ceil_mode, count_include_pad=1
    gives [0.5, 2.5, 4.5] on [1..5]: the last window divides by its valid count."""
    model = pool_model("AveragePool", [1, 1, 5], dict(kernel_shape=[2], strides=[2], pads=[1, 1], ceil_mode=1, count_include_pad=1))
    new, _ = rewrite_model(model)
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    np.testing.assert_array_equal(run(new, {"x": x})[0], run(model, {"x": x})[0])
    np.testing.assert_array_equal(run(new, {"x": x})[0].ravel(), [0.5, 2.5, 4.5])


@pytest.mark.parametrize(
    "kernel,strides,pads,ceil_mode,thin_convs,placements",
    [
        ((3,), (1,), (1, 1), 0, 1, 1),  # Inception: one output per end, same count: one strided conv
        ((3,), (2,), (1, 1), 0, 1, 1),  # odd extent, stride 2: both ends again
        ((5,), (1,), (2, 2), 0, 4, 1),  # two runs per end (counts 3, 4): a thin Concat, one placement
        ((3,), (2,), (1, 0), 0, 1, 1),  # the first window only: a plain placement
        ((3,), (1,), (1, 0), 1, 1, 1),
        ((4,), (3,), (2, 1), 1, 2, 1),  # different counts at the two ends: a thin Concat
        ((3,), (1,), (0, 2), 0, 2, 2),  # two runs at one end only: one placement each
    ],
    ids=str,
)
def test_average_pool_border_corrections(kernel, strides, pads, ceil_mode, thin_convs, placements):
    """count_include_pad=0: the windows with another count get their correction from
    thin convs, and both ends of an axis are put in place by one conv (two taps, the
    second dilated by the extent)."""
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil_mode, count_include_pad=0)
    new, _ = assert_rewrite_matches("AveragePool", [1, 3, 13], attrs)
    hints = [n.name.rsplit("/", 1)[-1].rsplit("_", 1)[0] for n in new.graph.node]
    assert hints.count("avg_place") == placements
    assert hints.count("avg_fix") + hints.count("avg_ends") == thin_convs


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
@pytest.mark.parametrize("shape", [[1, 3, 9], [2, 4, 7, 7], [1, 2, 3, 5, 4], [1, 3, 1, 1]], ids=str)
def test_global_pools(op, shape):
    assert_rewrite_matches(op, shape, {})


@pytest.mark.parametrize(
    "op,attrs",
    [
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
        ("MaxPool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
        ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
        ("GlobalAveragePool", {}),
        ("GlobalMaxPool", {}),
    ],
    ids=str,
)
def test_float16(op, attrs):
    assert_rewrite_matches(op, [1, 4, 9, 9], attrs, dtype=np.float16)


def test_nonnegative_input_uses_conv_padding():
    """After Relu, zero padding is exact: no border Concat is built."""
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    signed, _ = assert_rewrite_matches("MaxPool", [1, 3, 10, 10], attrs)
    after_relu, _ = assert_rewrite_matches("MaxPool", [1, 3, 10, 10], attrs, relu=True)
    assert "Concat" in op_types(signed)
    assert "Concat" not in op_types(after_relu)


def test_dynamic_batch_is_rewritten():
    model = pool_model("MaxPool", ["N", 3, 8, 8], dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0]))
    new, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten"
    x = np.random.default_rng(0).integers(-10, 11, (3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(new, {"x": x})[0], run(model, {"x": x})[0])


@pytest.mark.parametrize(
    "op,opset,attrs",
    [
        ("MaxPool", 7, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
        ("MaxPool", 8, dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 2, 0], storage_order=1)),
        ("MaxPool", 10, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, dilations=[2, 1])),
        ("MaxPool", 11, dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER")),
        ("MaxPool", 12, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
        ("AveragePool", 7, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
        ("AveragePool", 10, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
        ("AveragePool", 11, dict(kernel_shape=[3, 2], pads=[1, 0, 2, 1], ceil_mode=1, count_include_pad=0)),
        ("AveragePool", 19, dict(kernel_shape=[3, 2], pads=[1, 0, 2, 1], dilations=[2, 1], count_include_pad=1)),
        pytest.param("AveragePool", 22, dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1), marks=requires_opset(22)),
        pytest.param("MaxPool", 22, dict(kernel_shape=[2, 3], strides=[2, 2], dilations=[1, 2], ceil_mode=1), marks=requires_opset(22)),
        pytest.param("GlobalMaxPool", 22, {}, marks=requires_opset(22)),
        ("GlobalAveragePool", 1, {}),
        ("AveragePool", 7, dict(kernel_shape=[3, 3], strides=[2, 2])),
        ("GlobalMaxPool", 7, {}),
        ("GlobalAveragePool", 11, {}),
    ],
    ids=str,
)
def test_older_opsets(op, opset, attrs):
    """Each opset's attribute defaults and semantics, checked at that opset."""
    assert_rewrite_matches(op, [1, 3, 10, 9], attrs, opset=opset)


def test_large_global_average_pool_uses_one_conv_per_axis():
    new, report = assert_rewrite_matches("GlobalAveragePool", [1, 3, 20, 30], {})
    assert report.nodes[0].op_counts == {"Conv": 2}
    assert sum(int(np.prod(t.dims)) for t in new.graph.initializer) == 3 * (20 + 30)


@pytest.mark.parametrize(
    "kernel,strides,pads,size",
    [((3, 3), (1, 1), (1, 1, 1, 1), (28, 28)), ((5, 5), (1, 1), (2, 2, 2, 2), (20, 20)), ((3, 3), (2, 2), (1, 1, 1, 1), (16, 16))],
    ids=["inception", "sppf", "stem"],
)
def test_signed_max_pool_needs_no_padded_copy(kernel, strides, pads, size):
    """The common signed pools take the nested chain or the anchored ladder: no Concat, no Pad, exact."""
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads))
    _, report = assert_rewrite_matches("MaxPool", [1, 8, *size], attrs)
    assert "Concat" not in report.nodes[0].op_counts


@pytest.mark.parametrize("after_relu,convs", [(False, 8), (True, 6)], ids=["signed", "after-relu"])
def test_resnet_stem_pool_is_one_fused_conv_per_tap(after_relu, convs):
    """3x3/s2/p1 on an even extent pads one side only: per axis three nested levels
    read straight from the input at the output positions, plus one 1x1 conv that
    pads the level with the padded tap on a signed input."""
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    _, report = assert_rewrite_matches("MaxPool", [1, 8, 16, 14], attrs, relu=after_relu)
    counts = report.nodes[0].op_counts
    assert counts["Conv"] == convs and "Concat" not in counts
    assert counts["Relu"] == 4 and counts["Add"] == 4


def test_anchored_ladder_adds_in_place_when_its_input_comes_out_of_a_conv():
    """onnxruntime fuses an Add into a conv only when the other operand is a conv
    output: on a graph input the anchored ladder's first step reads the base with a
    conv of its own, after a Conv it adds the input itself. Both are exact, fused too."""
    shape = [1, 8, 12, 10]
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    convs = {}
    for source in ("graph input", "conv"):
        model = pool_model("MaxPool", shape, attrs)
        if source == "conv":
            weight = onnx.numpy_helper.from_array(np.eye(8, dtype=np.float32).reshape(8, 8, 1, 1) * 2 - 0.5, "w")
            model.graph.initializer.append(weight)
            model.graph.node.insert(0, onnx.helper.make_node("Conv", ["x", "w"], ["h"], name="conv"))
            model.graph.node[1].input[0] = "h"
        new, report = rewrite_model(model)
        convs[source] = report.nodes[-1].op_counts["Conv"]
        for x in input_suites(shape).values():
            expected = run(model, {"x": x})[0]
            for fused in (False, True):
                np.testing.assert_allclose(run(new, {"x": x}, optimize=fused)[0], expected, rtol=1e-6, atol=1e-6)
    assert convs["conv"] == convs["graph input"] - 1


def axis_grid(kernels, sizes, ceil_modes):
    """(kernel, stride, dilation, pad_begin, pad_end, size, ceil_mode) for every pad below
    the kernel and every stride and dilation up to 3 and 2 that leaves an output."""
    return [
        (k, s, d, pb, pe, n, ceil)
        for k in kernels
        for s in (1, 2, 3)
        for d in (1, 2)
        for pb in range(k)
        for pe in range(k)
        for n in sizes
        for ceil in ceil_modes
        if n + pb + pe - (k - 1) * d - 1 >= 0
    ]


NESTED_AXES = axis_grid((1, 2, 3, 4, 5), (1, 2, 5, 8), (0, 1))


def _axis_spec(k, s, d, pb, pe, n, ceil):
    span = n + pb + pe - (k - 1) * d - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + pb:  # the last window must start inside (ONNX, onnxruntime)
        out -= 1
    return AxisSpec(n, k, s, d, pb, pe, out)


@pytest.mark.parametrize("kernel,stride,dilation,pad_begin,pad_end,size,ceil_mode", NESTED_AXES)
def test_nested_plan_gives_each_window_max(kernel, stride, dilation, pad_begin, pad_end, size, ceil_mode):
    """Replays a nested plan on integer inputs with ties: each level over its outputs,
    zero elsewhere, must give every window's max over its real elements; a signed
    plan's convs may read only real elements. With zero padding exact (input >= 0)
    every tap counts. No plan only for long kernels, or padding on both sides. A
    plan with a zero side reads that side's padding as 0 (the max with 0 in those
    windows, for the border fix to correct) and is exact on the other side."""
    from rewriter.lower import max_nested

    a = _axis_spec(kernel, stride, dilation, pad_begin, pad_end, size, ceil_mode)
    if any(a.valid_count(o) == 0 for o in range(a.out_size)):
        pytest.skip("a window of padding only")
    rng = np.random.default_rng(kernel * 1000 + size)
    padded_sides = {
        "begin" if a.window_start(o) + t * dilation < 0 else "end"
        for o in range(a.out_size) for t in range(kernel)
        if not 0 <= a.window_start(o) + t * dilation < size
    }
    for zero_padding_exact, zero_side in ((False, None), (True, None), (False, "begin"), (False, "end")):
        plan = max_nested.plan_nested(a, zero_padding_exact=zero_padding_exact, zero_side=zero_side)
        if plan is None:
            assert not zero_padding_exact and len(padded_sides - {zero_side}) == 2
            continue

        def reads_zero(i):  # a padded position the plan may read as 0
            return zero_padding_exact or (i < 0 and zero_side == "begin") or (i >= size and zero_side == "end")

        for _ in range(3):
            x = rng.integers(-3, 4, size).astype(np.float64)
            if zero_padding_exact:
                x = np.abs(x)

            def tap(o, t):
                i = a.window_start(o) + t * dilation
                assert 0 <= i < size or reads_zero(i), (o, t)
                return x[i] if 0 <= i < size else 0.0

            level = np.zeros(a.out_size)
            for step in plan.levels:
                new = np.zeros(a.out_size)
                for o in range(step.first, step.last + 1):
                    new[o] = max(0.0, tap(o, step.plus) - tap(o, step.minus) + level[o])
                level = new
            got = [tap(o, plan.base) + level[o] for o in range(a.out_size)]
            want = [max(x[i] if 0 <= i < size else 0.0 for i in a.taps(o) if 0 <= i < size or reads_zero(i)) for o in range(a.out_size)]
            assert got == want


@pytest.mark.parametrize("kernel,stride,dilation,pad_begin,pad_end,size,ceil_mode", axis_grid((2, 3, 4, 5, 7), (1, 2, 5, 9), (0,)))
def test_anchored_plan_reaches_exactly_each_window(kernel, stride, dilation, pad_begin, pad_end, size, ceil_mode):
    """Replays a plan on tap sets: every output must see exactly its window's real
    elements, and no step may drop an operand whose real elements it still needs."""
    a = _axis_spec(kernel, stride, dilation, pad_begin, pad_end, size, ceil_mode)
    out_size = a.out_size
    plan = max_ladders.plan_anchored(a)
    windows = [{t for t in a.taps(o) if 0 <= t < size} for o in range(out_size)]
    if plan is None:
        assert any(not (0 <= a.window_start(o) + c * dilation < size) for c in range(kernel) for o in (0, out_size - 1))
        return
    left = right = 0  # every m[q] holds the real elements of q's class in [q - left*d, q + right*d]

    def span(q):
        return {t for t in range(size) if (t - q) % dilation == 0 and q - left * dilation <= t <= q + right * dilation}

    shifts = list(plan.shifts)
    last = shifts.pop() if plan.merge_last else None
    m = {q: {q} for q in range(size)}
    for shift in shifts:
        new_m = {}
        for q in range(size):
            other = q + shift * dilation
            if 0 <= other < size:
                new_m[q] = m[q] | m[other]
            else:  # cropped: the operand's real elements must already be in m[q]
                assert span(other) <= m[q], (shift, q)
                new_m[q] = m[q]
        m = new_m
        left, right = left + max(0, -shift), right + max(0, shift)
        assert all(m[q] == span(q) for q in range(size))
    for o in range(out_size):
        anchor = a.window_start(o) + plan.anchor_tap * dilation
        got = m[anchor]
        if last is not None:
            assert 0 <= anchor + last * dilation < size
            got = got | m[anchor + last * dilation]
        assert got == windows[o], (o, sorted(got), sorted(windows[o]))


def random_pool_case(rng: random.Random):
    op = rng.choice(["MaxPool", "AveragePool"])
    opset = rng.choice(opsets(10, 12, 19, 22) if op == "AveragePool" else opsets(8, 10, 12, 22))
    rank = rng.choice([1, 2, 2, 3])
    shape = [1, 2] + [rng.randint(1, 9) for _ in range(rank)]
    kernel = [rng.randint(1, 5) for _ in range(rank)]
    attrs: dict = {"kernel_shape": kernel, "strides": [rng.randint(1, 3) for _ in range(rank)]}
    if (op == "MaxPool" and opset >= 10 or opset >= 19) and rng.random() < 0.4:
        attrs["dilations"] = [rng.randint(1, 3) for _ in range(rank)]
    auto_pad = rng.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = [rng.randint(0, k - 1) for k in kernel] + [rng.randint(0, k - 1) for k in kernel]
    if opset >= 10 and rng.random() < 0.5:
        attrs["ceil_mode"] = 1
    if op == "AveragePool":
        attrs["count_include_pad"] = rng.randint(0, 1)
    return op, opset, shape, attrs, rng.random() < 0.35


RANDOM_CASES = [random_pool_case(random.Random(1000 + i)) for i in range(400)]


@pytest.mark.parametrize("index", range(len(RANDOM_CASES)), ids=[f"random{i}" for i in range(len(RANDOM_CASES))])
def test_random_attribute_combinations(index):
    """Seeded random corners of the attribute space (tiny extents, big pads, overhangs),
    each case with one of the border strategies in turn."""
    op, opset, shape, attrs, after_relu = RANDOM_CASES[index]
    model = pool_model(op, shape, attrs, opset=opset, prefix_relu=after_relu)
    new, report = rewrite_model(model, **border_options(BORDER_STRATEGIES[index % len(BORDER_STRATEGIES)]))
    (node,) = [n for n in report.nodes]
    if node.invalid:
        with pytest.raises(Exception):  # what we call invalid, onnxruntime refuses too
            run(model, {"x": input_suites(shape)["normal"]})
        return
    if node.status == "kept":
        assert node.reason
        pytest.skip(f"kept by design: {node.reason}")
    assert op_types(new) <= STRICT_OPS
    for suite, x in input_suites(shape).items():
        expected, actual = run(model, {"x": x})[0], run(new, {"x": x})[0]
        assert actual.shape == expected.shape
        scale = max(float(np.abs(expected).max()), 1e-30) if expected.size else 1.0
        assert float(np.abs(actual - expected).max(initial=0)) / scale <= 1e-6, suite


def test_opsets_before_7_keep_pools_whose_subgraph_onnxruntime_cannot_run():
    """onnxruntime implements Concat from opset 4, Relu from 6 and Add from 7: a MaxPool
    lowering at opset 3 could not be validated, so it is kept; a GlobalAveragePool
    (a single Conv) is rewritten."""
    model = pool_model("MaxPool", [1, 3, 10, 9], dict(kernel_shape=[3, 3], strides=[2, 2]), opset=3)
    reason = rewrite_model(model)[1].nodes[0].reason
    assert "onnxruntime has no kernel for Add, Relu at this version" in reason
    assert_rewrite_matches("GlobalAveragePool", [1, 3, 10, 9], {}, opset=3)
