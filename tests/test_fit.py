"""Target profiles, the fitting side: every node the rewrite adds fits the profile,
or the pool is kept with a reason naming the limit (issue 15).

The limits are re-checked here from the written model's ONNX attributes, by an
encoding of their own (not through :mod:`rewriter.fit`), and every rewrite is
compared with onnxruntime on the original.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rewriter import PoolRewritePass
from rewriter.fit import FitError, audit_violations, check_added, node_violations
from rewriter.profile import ConvLimits, Profile, Range
from rewriter.target import Target
from rewriter.profiles import load_profile
from tests.helpers import added_nodes_outside, input_suites, pool_model, run
from tests.target_limits import outside
from compat import TEST_OPSET

# The user profile file, and rknn's published conv limits.
USER = Profile("user", ops=frozenset({"Conv", "Relu", "Add"}), conv=ConvLimits(kernel=Range(1, 5), stride=Range(1, 2), dilation=Range(1, 1), pad_below_kernel=True))
RKNN = Profile("rknn-like", ops=frozenset({"Conv", "Relu", "Add", "Concat"}), conv=ConvLimits(kernel=Range(1, 31), stride=Range(1, 7), pad=Range(0, 15), pad_below_kernel=True))
# The same numbers, written out again for the independent check: (ops, kernel, stride, dilation, pad) bounds.
LIMITS = {
    "user": ({"Conv", "Relu", "Add"}, (1, 5), (1, 2), (1, 1), None),
    "rknn-like": ({"Conv", "Relu", "Add", "Concat"}, (1, 31), (1, 7), None, (0, 15)),
}


def broken_limits(original: onnx.ModelProto, written: onnx.ModelProto, profile_name: str) -> list[str]:
    """What the nodes added to ``written`` break, read from their attributes."""
    return added_nodes_outside(original, written, LIMITS[profile_name])


def spp_model(shape: list[int]) -> onnx.ModelProto:
    """SPP's 5/9/13 "same" MaxPools of one input, concatenated on channels."""
    nodes = [helper.make_node("MaxPool", ["x"], [f"p{k}"], name=f"pool{k}", kernel_shape=[k, k], pads=[k // 2] * 4) for k in (5, 9, 13)]
    nodes.append(helper.make_node("Concat", ["x", "p5", "p9", "p13"], ["y"], name="cat", axis=1))
    graph = helper.make_graph(nodes, "spp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])


CASES = [
    ("GlobalAveragePool", [1, 2, 160, 160], {}),
    ("GlobalAveragePool", [1, 3, 7, 7], {}),
    ("GlobalMaxPool", [1, 2, 253], {}),
    ("GlobalMaxPool", [1, 2, 20, 20], {}),
    ("MaxPool", [1, 2, 7, 8], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", [1, 2, 16, 16], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", [1, 2, 12, 12], dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", [1, 2, 10, 10], dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
    ("MaxPool", [1, 2, 9, 11], dict(kernel_shape=[3, 3], strides=[1, 1])),
    ("AveragePool", [1, 2, 9, 9], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ("AveragePool", [1, 2, 9, 9], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", [1, 2, 12, 12], dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", [1, 2, 11, 11], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
]


def models():
    for op, shape, attrs in CASES:
        yield f"{op}{shape}{attrs}", pool_model(op, shape, attrs)
    yield "spp-8x8", spp_model([1, 2, 8, 8])


@pytest.mark.parametrize("profile", [USER, RKNN], ids=lambda p: p.name)
@pytest.mark.parametrize("label,model", list(models()), ids=[label for label, _ in models()])
def test_rewrites_fit_or_are_kept_naming_the_limit(profile: Profile, label: str, model: onnx.ModelProto) -> None:
    result = PoolRewritePass(target=profile).run(model)
    assert broken_limits(model, result.model, profile.name) == []
    for node in result.report.nodes:
        if node.status == "kept":
            assert re.search(rf"needs .* {re.escape(profile.name)} .*\((ops|conv\.\w+|concat_axes)\)$", node.reason), node.reason
    if result.report.rewritten:
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        for name, x in input_suites(shape).items():
            expected, got = run(model, {"x": x}), run(result.model, {"x": x})
            for e, g in zip(expected, got):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=f"{label} on {name}")


def test_what_no_legal_program_computes_is_kept_naming_the_limit() -> None:
    # Strides multiply, so a stride of 3 is no chain of strides <= 2.
    for op in ("MaxPool", "AveragePool"):
        node = PoolRewritePass(target=USER).run(pool_model(op, [1, 2, 20, 20], dict(kernel_shape=[3, 3], strides=[3, 3]))).report.nodes[0]
        assert node.status == "kept" and node.reason == "needs a stride of 3 > 2 on user (conv.stride)", node.reason


@pytest.mark.parametrize(
    "profile,op,shape",
    [(RKNN, "GlobalAveragePool", [1, 2, 157, 157]), (USER, "GlobalMaxPool", [1, 2, 253]), (USER, "GlobalAveragePool", [1, 2, 7, 7])],
    ids=["prime-157-average-rknn", "253-max-user", "7x7-average-user"],
)
def test_long_prime_windows_become_legal_programs(profile: Profile, op: str, shape: list[int]) -> None:
    # No factorisation tiles them, but taps split into groups and reach taken by shift
    # chains still compute them exactly within the limits.
    model = pool_model(op, shape, {})
    result = PoolRewritePass(target=profile).run(model)
    assert result.report.nodes[0].status == "rewritten"
    assert broken_limits(model, result.model, profile.name) == []
    for name, x in input_suites(shape).items():
        np.testing.assert_allclose(run(result.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_construction_whose_convs_break_the_target_is_laid_out_within_it() -> None:
    # The ceil_mode 7x8 pool: its default construction pads a 1x1 conv by its whole
    # kernel (or more), which rknn's compiler aborts on; on rknn the same construction
    # is built from convs that fit (rewriter/legalize.py).
    model = pool_model("MaxPool", [1, 2, 7, 8], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    free = PoolRewritePass().run(model)
    assert broken_limits(model, free.model, "rknn-like")  # the unprofiled rewrite breaks rknn
    fitted = PoolRewritePass(target=RKNN).run(model)
    assert fitted.report.nodes[0].status == "rewritten"
    assert broken_limits(model, fitted.model, "rknn-like") == []
    for name, x in input_suites([1, 2, 7, 8]).items():
        np.testing.assert_allclose(run(fitted.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


def test_no_profile_keeps_todays_rewrite() -> None:
    model = pool_model("GlobalAveragePool", [1, 2, 160, 160])
    assert PoolRewritePass().run(model).report.nodes[0].status == "rewritten"


def conv_node(name: str = "c", **attrs) -> onnx.NodeProto:
    return helper.make_node("Conv", ["x", "w"], ["y"], name=name, **attrs)


def test_node_violations_read_the_weight_the_pads_and_auto_pad() -> None:
    target = Target.of(profile=USER)
    shapes = {"x": (1, 4, 8, 8), "w": (4, 1, 7, 1)}
    rules = {v.rule for v in node_violations(conv_node(group=4, strides=[3, 1]), target, shapes)}
    assert rules == {"conv.kernel", "conv.stride"}
    # SAME_UPPER on a 3x3 kernel pads 1 per side: below the kernel, inside the ranges.
    same = conv_node(auto_pad="SAME_UPPER")
    assert node_violations(same, target, {"x": (1, 4, 8, 8), "w": (4, 4, 3, 3)}) == []
    padded = conv_node(pads=[1, 0, 1, 0])  # a 1x1 conv that only pads
    assert [v.rule for v in node_violations(padded, target, {"w": (4, 4, 1, 1)})] == ["conv.pad_below_kernel"] * 2
    concat = helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=-1)
    assert [v.rule for v in node_violations(concat, target, {"a": (1, 2, 3, 4)})] == ["ops"]


def test_the_final_check_raises_on_an_added_node_outside_the_target() -> None:
    with pytest.raises(FitError, match="conv.kernel"):
        check_added([conv_node("added")], Target.of(profile=USER), {"w": (2, 1, 9, 9)})
    check_added([conv_node("added")], Target.of(), {"w": (2, 1, 9, 9)})  # no profile: nothing to check


def test_audit_lists_the_models_own_nodes_rule_by_rule() -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 2, 7, 7], np.zeros(2 * 2 * 49, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="own_conv", pads=[3, 3, 3, 3]), helper.make_node("Sigmoid", ["c"], ["y"], name="own_sigmoid")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w],
    )
    rows = audit_violations(helper.make_model(graph), Target.of(profile=USER))
    assert {(r["node"], r["rule"]) for r in rows} == {("own_conv", "conv.kernel"), ("own_sigmoid", "ops")}
    assert next(r for r in rows if r["rule"] == "conv.kernel")["value"] == "7"


# Found by fuzzing pools through the built-in profiles (each crashed or was kept wrongly).
FUZZED = [
    ("tidl", "MaxPool", [1, 2, 10, 3], dict(kernel_shape=[2, 1], strides=[2, 2], auto_pad="VALID"), True),  # a 1-tap axis, strides at once
    ("nvidia-dla", "MaxPool", [1, 2, 11, 11], dict(kernel_shape=[3, 1], strides=[1, 1], pads=[2, 0, 1, 0], ceil_mode=1), False),
    ("rknn", "AveragePool", [1, 3, 20, 5], dict(kernel_shape=[5, 2], strides=[1, 1], pads=[2, 0, 4, 1], ceil_mode=1), False),  # one output: any stride
    ("nvidia-dla", "MaxPool", [1, 1, 23, 23], dict(kernel_shape=[2, 7], strides=[1, 3], pads=[1, 6, 1, 4], ceil_mode=1), False),
    # Strides at once where floor mode drops a tail: the stride-1 windows run to the input's end.
    ("tidl", "MaxPool", [1, 2, 20, 7], dict(kernel_shape=[2, 7], strides=[2, 2], pads=[1, 6, 0, 5]), False),
    ("tidl", "MaxPool", [1, 3, 12, 21, 14], dict(kernel_shape=[3, 2, 3], strides=[2, 2, 2], pads=[2, 1, 1, 0, 1, 2]), False),
    # An identity average: its copy conv is laid out as tidl's 3x3, never elided (the output must exist).
    ("tidl", "AveragePool", [1, 1, 20, 2], dict(kernel_shape=[1, 1], strides=[1, 1], ceil_mode=1, count_include_pad=1), False),
]


@pytest.mark.parametrize("target,op,shape,attrs,relu", FUZZED, ids=[f"{t}-{op}-{i}" for i, (t, op, *_) in enumerate(FUZZED)])
def test_fuzzed_pools_are_rewritten_within_the_builtin_profiles(target: str, op: str, shape: list[int], attrs: dict, relu: bool) -> None:
    model = pool_model(op, shape, attrs, prefix_relu=relu)
    result = PoolRewritePass(target=load_profile(target)).run(model)
    assert result.report.nodes[-1].status == "rewritten", result.report.nodes[-1].reason
    assert outside(model, result.model, target) == []
    for name, x in input_suites(shape).items():
        np.testing.assert_allclose(run(result.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("target,concats", [("rknn", True), ("nvidia-dla", False)])
def test_an_average_with_border_counts_concatenates_its_runs_where_the_target_can(target: str, concats: bool) -> None:
    # Inception's 3x3/s1/p1 count_include_pad=0 average: three runs per axis (2, 3, ..., 3, 2
    # taps). rknn concatenates on any axis: one conv per run, no correction placed across
    # the map (which pads or dilates by the whole extent). nvidia-dla concatenates on
    # channels only: the corrections are placed, laid out within its limits.
    model = pool_model("AveragePool", [1, 3, 35, 35], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0, strides=[1, 1]))
    profile = load_profile(target)
    profile = Profile(profile.name, ops=profile.ops, conv=profile.conv, concat_axes=profile.concat_axes)  # nothing native
    result = PoolRewritePass(target=profile).run(model)
    ops = [n.op_type for n in result.model.graph.node]
    assert result.report.nodes[0].status == "rewritten"
    assert (ops.count("Concat") == 2) == concats and ops.count("Conv") <= (10 if concats else 40), ops
    assert outside(model, result.model, target) == []
    for name, x in input_suites([1, 3, 35, 35]).items():
        np.testing.assert_allclose(run(result.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


def test_on_tidl_the_last_axis_takes_every_stride_at_once() -> None:
    # SqueezeNet's 3x3/s2 ceil_mode pool: tidl's depthwise convs need one stride on both
    # axes, so the rows are pooled at stride 1, and every level of the columns' nested
    # chain reads them at stride (2, 2): no pick conv, no stride-1 pass over the columns.
    model = pool_model("MaxPool", [1, 2, 15, 15], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    result = PoolRewritePass(target=load_profile("tidl")).run(model)
    node = result.report.nodes[0]
    assert node.strategy == "nested-chain at stride 1 x nested-chain, strides 2x2 at once", node.strategy
    strided = [n for n in result.model.graph.node if n.op_type == "Conv" and list(next(a.ints for a in n.attribute if a.name == "strides")) == [2, 2]]
    assert len(strided) == 3  # the chain's three levels
    assert outside(model, result.model, "tidl") == []
    for name, x in input_suites([1, 2, 15, 15]).items():
        np.testing.assert_allclose(run(result.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)
