"""MaxPools on the same input share one ladder along their first axis (SPP's 5/9/13)."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from helpers import STRICT_OPS, input_suites, op_types, run
from onnx import TensorProto, helper

from rewriter import rewrite_model


def pools_on_one_input(shape, pools: list[dict], *, relu: bool = False, extra_ops: bool = False) -> onnx.ModelProto:
    nodes, src = [], "x"
    if relu:
        nodes.append(helper.make_node("Relu", ["x"], ["xr"], name="relu"))
        src = "xr"
    outputs = []
    for i, attrs in enumerate(pools):
        nodes.append(helper.make_node("MaxPool", [src], [f"y{i}"], name=f"pool{i}", **attrs))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [None] * len(shape)))
    if extra_ops:  # a consumer between the pools, to check the splice keeps order
        nodes.insert(2, helper.make_node("Neg", ["y0"], ["n0"], name="neg"))
        outputs.append(helper.make_tensor_value_info("n0", TensorProto.FLOAT, [None] * len(shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


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
