"""MaxPools on the same input share one ladder along their first axis (SPP's 5/9/13)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import onnx
import pytest
from helpers import STRICT_OPS, input_suites, op_types, run
from onnx import TensorProto, helper

from rewriter import rewrite_model


def pools_on_one_input(shape, pools: list[dict], *, relu: bool = False, extra_ops: bool = False, chained: bool = False) -> onnx.ModelProto:
    """MaxPools of one input (SPP), or with ``chained`` each reading the one before
    (SPPF); every pool output is a graph output."""
    nodes, src = [], "x"
    if relu:
        nodes.append(helper.make_node("Relu", ["x"], ["xr"], name="relu"))
        src = "xr"
    outputs = []
    for i, attrs in enumerate(pools):
        nodes.append(helper.make_node("MaxPool", [src], [f"y{i}"], name=f"pool{i}", **attrs))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [None] * len(shape)))
        if chained:
            src = f"y{i}"
    if extra_ops:  # a consumer between the pools, to check the splice keeps order
        nodes.insert(2, helper.make_node("Neg", ["y0"], ["n0"], name="neg"))
        outputs.append(helper.make_tensor_value_info("n0", TensorProto.FLOAT, [None] * len(shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def pools_in_a_chain(shape, pools: list[dict], *, relu: bool = False) -> onnx.ModelProto:
    return pools_on_one_input(shape, pools, relu=relu, chained=True)


def assert_group_matches(model: onnx.ModelProto, shape, n_pools: int) -> None:
    new, report = rewrite_model(model)
    rewritten = [n for n in report.nodes if n.status == "rewritten"]
    assert len(rewritten) == n_pools
    assert sum(1 for n in rewritten if n.became.startswith("shares the ladder")) == n_pools - 1
    assert op_types(new) <= STRICT_OPS | {"Relu", "Neg"}
    onnx.checker.check_model(new, full_check=True)
    for suite, x in input_suites(shape).items():
        for expected, actual in zip(run(model, {"x": x}), run(new, {"x": x})):
            assert actual.shape == expected.shape
            scale = max(float(np.abs(expected).max()), 1e-30)
            assert float(np.abs(actual - expected).max()) / scale <= 1e-6, suite


SPP = [dict(kernel_shape=[k, k], pads=[k // 2] * 4) for k in (5, 9, 13)]


@pytest.mark.parametrize("relu", [False, True], ids=["signed", "after-relu"])
def test_spp_block(relu):
    """On a signed input the first axis of all three is one anchored ladder, read at
    reaches 2, 4 and 6: no padded copy (Concat) anywhere."""
    shape = [1, 4, 15, 13]
    model = pools_on_one_input(shape, SPP, relu=relu, extra_ops=True)
    assert_group_matches(model, shape, 3)
    assert "Concat" not in op_types(rewrite_model(model)[0])


def test_shared_ladder_is_smaller_than_separate_ones():
    shape = [1, 4, 15, 13]
    shared = rewrite_model(pools_on_one_input(shape, SPP))[1].totals()["nodes_added"]
    separate = sum(rewrite_model(pools_on_one_input(shape, [p]))[1].totals()["nodes_added"] for p in SPP)
    assert shared < separate


def random_group(rng: random.Random):
    rank = rng.choice([1, 2, 2, 3])
    shape = [1, 3] + [rng.randint(4, 12) for _ in range(rank)]
    pools = []
    for _ in range(rng.randint(2, 4)):
        kernel = [rng.randint(2, 7) for _ in range(rank)]
        pads = [rng.randint(0, k - 1) for k in kernel] + [rng.randint(0, k - 1) for k in kernel]
        attrs = dict(kernel_shape=kernel, pads=pads)
        if rng.random() < 0.3:
            attrs["ceil_mode"] = 1
        pools.append(attrs)
    return shape, pools, rng.random() < 0.3


GROUPS = [random_group(random.Random(300 + i)) for i in range(60)]


@pytest.mark.parametrize("shape,pools,relu", GROUPS, ids=[f"group{i}" for i in range(len(GROUPS))])
def test_random_groups(shape, pools, relu):
    model = pools_on_one_input(shape, pools, relu=relu)
    try:
        run(model, {"x": input_suites(shape)["normal"]})
    except Exception:
        pytest.skip("onnxruntime rejects this combination (kernel larger than the padded input)")
    _, report = rewrite_model(model)
    if any(n.status == "kept" for n in report.nodes):
        pytest.skip("a pool is kept: " + "; ".join(n.reason for n in report.nodes if n.reason))
    assert_group_matches(model, shape, len(pools))


SPPF = [dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])] * 3


@pytest.mark.parametrize(
    "shape,pools",
    [
        ([1, 4, 11, 9], SPPF),
        ([1, 4, 3, 4], SPPF),  # reaches past the extent
        ([1, 3, 17], [dict(kernel_shape=[3], pads=[0, 2]), dict(kernel_shape=[4], pads=[2, 1]), dict(kernel_shape=[2], pads=[1, 0])]),
        ([1, 3, 9, 8], [dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]),
    ],
    ids=["sppf", "sppf-tiny", "1d-asymmetric", "then-strided"],
)
@pytest.mark.parametrize("relu", [False, True], ids=["signed", "after-relu"])
def test_pool_of_a_pool_grows_from_its_reach(shape, pools, relu):
    """A centred stride-1 MaxPool of a centred stride-1 MaxPool (SPPF): its input is
    already the max over the first pool's reach, so its anchored steps may shift that
    much further at once: fewer convs than the first pool, same numbers as onnxruntime,
    plain and fully optimized."""
    model = pools_in_a_chain(shape, pools, relu=relu)
    new, report = rewrite_model(model)
    assert all(n.status == "rewritten" for n in report.nodes) and op_types(new) <= STRICT_OPS
    for x in input_suites(shape).values():
        expected = run(model, {"x": x})
        for optimize in (False, True):
            for e, a in zip(expected, run(new, {"x": x}, optimize=optimize)):
                np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
    if pools is SPPF:
        first, *rest = (n.op_counts["Conv"] for n in report.nodes)
        assert all(convs < first for convs in rest), [n.op_counts for n in report.nodes]


def test_max_window_reach_follows_a_chain_of_same_pools():
    from rewriter.site import NonNegativity, max_window_reach

    pools = [dict(kernel_shape=[5, 3], pads=[2, 1, 2, 1]), dict(kernel_shape=[4, 3], pads=[1, 0, 2, 2]), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = pools_in_a_chain([1, 2, 9, 9], pools)
    producer = NonNegativity.of_graphs([model.graph]).producer
    assert max_window_reach("x", producer) is None
    assert max_window_reach("y0", producer) == ((2, 2), (1, 1))
    assert max_window_reach("y1", producer) == ((3, 4), (1, 3))
    assert max_window_reach("y2", producer) == ((4, 5), (2, 4))
    strided = pools_in_a_chain([1, 2, 9, 9], [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])])
    assert max_window_reach("y0", NonNegativity.of_graphs([strided.graph]).producer) is None


class OverstatedReach:
    """A MaxPool strategy that grows from one tap more reach, each side, than the input has."""

    name = "overstated-reach"

    def plan(self, a, context):
        from rewriter.lower.max_strategies import GrowFromReach

        if context.reach == (0, 0):
            return "the input is no max over a reach"
        left, right = context.reach
        return GrowFromReach().plan(a, dataclasses.replace(context, reach=(left + 1, right + 1)))

    def build(self, b, x, axis, a, plan):
        from rewriter.lower.max_strategies import GrowFromReach

        return GrowFromReach().build(b, x, axis, a, plan)


def test_validation_checks_a_pool_of_pools_from_the_chain_start():
    """The node check feeds its adversarial suites at the start of the chain, where any
    input is fair: a lowering that assumed more reach than the input has is caught
    and named, and the correct one passes."""
    from rewriter.lower.max_strategies import STRATEGY_NAMES
    from rewriter.validate import validate_models

    shape = [1, 3, 12, 11]
    model = pools_in_a_chain(shape, [dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), dict(kernel_shape=[9, 9], pads=[4, 4, 4, 4])])
    good, _ = rewrite_model(model)
    result = validate_models(model, good)
    assert result.passed and [n.passed for n in result.nodes] == [True, True]

    bad, _ = rewrite_model(model, strategies=[OverstatedReach(), *STRATEGY_NAMES])
    result = validate_models(model, bad)
    assert not result.passed
    assert [n.name for n in result.failed_nodes] == ["pool1"]


def test_pool_of_pools_with_dynamic_extents_after_relu_is_still_rewritten():
    """The reach's anchored steps need static extents (a runtime extent shorter than a
    step's shift would leave its diff conv nothing to read): with dynamic ones (after
    a Relu, where zero padding is exact) the pools are lowered on their own, extent-
    free, and equal onnxruntime at several sizes, tiny ones included."""
    model = pools_in_a_chain([1, 3, "H", "W"], SPPF, relu=True)
    new, report = rewrite_model(model)
    assert [n.status for n in report.nodes] == ["rewritten"] * 3
    for shape in ([1, 3, 9, 7], [1, 3, 20, 16], [1, 3, 2, 1]):
        x = input_suites(shape)["normal"]
        for e, a in zip(run(model, {"x": x}), run(new, {"x": x})):
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("relu", [False, True], ids=["signed", "after-relu"])
def test_nesting_pools_grow_from_each_other(relu):
    """SPP's 5/9/13 on one input: the 5x5 as usual, the 9x9 from the 5x5 and the 13x13
    from the 9x9 by 2 anchored steps per axis each; the same pool twice gets a
    tensor of its own."""
    shape = [1, 4, 15, 13]
    pools = [*SPP, SPP[0]]
    model = pools_on_one_input(shape, pools, relu=relu)
    assert_group_matches(model, shape, 4)
    shared = rewrite_model(model)[1].nodes[0].op_counts["Conv"]
    alone = rewrite_model(pools_on_one_input(shape, SPP[:1], relu=relu))[1].nodes[0].op_counts["Conv"]
    assert shared == alone + 2 * 2 * 4 + 1  # two more pools of 2 steps (4 convs) per axis, and the copy


def test_validating_one_pool_of_pools_records_its_chain_start():
    """Asked to check only the last pool of an SPPF chain, validation still records the
    chain's start and checks the pool from there."""
    from rewriter.validate import validate_models

    model = pools_in_a_chain([1, 3, 12, 11], SPPF)
    new, _ = rewrite_model(model)
    result = validate_models(model, new, localize=["y2"])
    assert result.passed and [(n.name, n.passed) for n in result.nodes] == [("pool2", True)]


@pytest.mark.parametrize("relu", [False, True], ids=["signed", "after-relu"])
def test_sppf_written_with_same_upper_is_a_chain_too(relu):
    """auto_pad=SAME_UPPER on a stride-1 5x5 pool is pads 2,2,2,2: the SPPF chain adds
    exactly as many nodes as with explicit pads, grows from its reach, and matches."""
    shape = [1, 4, 11, 9]
    explicit = pools_in_a_chain(shape, SPPF, relu=relu)
    same = pools_in_a_chain(shape, [dict(kernel_shape=[5, 5], auto_pad="SAME_UPPER")] * 3, relu=relu)
    _, explicit_report = rewrite_model(explicit)
    new, report = rewrite_model(same)
    assert report.totals()["nodes_added"] == explicit_report.totals()["nodes_added"]
    assert [n.strategy for n in report.nodes] == [n.strategy for n in explicit_report.nodes]
    assert report.nodes[2].strategy == "grow-from-reach x grow-from-reach"
    for x in input_suites(shape).values():
        for e, a in zip(run(same, {"x": x}), run(new, {"x": x})):
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


def test_report_names_the_strategy_of_every_rewritten_max_pool():
    """Each rewritten MaxPool's JSON row names its strategy per axis; shared ones too."""
    _, report = rewrite_model(pools_on_one_input([1, 4, 15, 13], SPP))
    assert all(n.strategy for n in report.nodes)
    assert all(n["strategy"] for n in report.to_dict()["nodes"])
    _, chain = rewrite_model(pools_in_a_chain([1, 4, 15, 13], SPPF))
    assert chain.nodes[0].strategy == "anchored-ladder x anchored-ladder"


def test_strategies_are_chosen_by_name():
    """Without the anchored ladder a signed "same" pool takes a padded copy; an
    unknown name is a SelectionError with a suggestion; excluding every fallback
    keeps the pool with the reasons."""
    from rewriter.selection import SelectionError

    model = pools_on_one_input([1, 4, 15, 13], SPP[:1])
    _, report = rewrite_model(model, exclude_strategies=["anchored-ladder"])
    assert report.nodes[0].strategy == "padded-copy x padded-copy" and report.nodes[0].op_counts["Concat"] == 2
    with pytest.raises(SelectionError, match="did you mean 'anchored-ladder'"):
        rewrite_model(model, exclude_strategies=["anchored_ladder"])
    _, report = rewrite_model(model, strategies=["ladder"])
    assert report.nodes[0].status == "kept" and "ladder: signed input with padding" in report.nodes[0].reason
