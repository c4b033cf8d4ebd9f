"""Cascades of native MaxPools (issue 15): a "same" stride-1 MaxPool the target does not
run itself becomes MaxPools it does run, whose windows add up (k = k1 + k2 - 1).

Every case goes through the CLI with ``--target``; the added nodes are checked against
the profiles' pool limits written out again here, from the written ONNX attributes, and
the outputs against the original's on onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from rewriter import PoolRewritePass
from rewriter.builder import SubgraphBuilder
from rewriter.fit import FitError, check_added
from rewriter.profiles import load_profile
from rewriter.spec import pool_spec_from_attributes
from rewriter.target import Target
from tests.helpers import input_suites, pool_model, run, target_option
from tests.test_profiles import run_cli
from compat import TEST_OPSET

# The user profile, with native MaxPools up to 5x5 at strides <= 2.
USER_PROFILE = {
    "name": "user-pools",
    "source": "test_native_cascade.py",
    "ops": ["Conv", "Relu", "Add"],
    "conv": {"kernel": [1, 5], "stride": [1, 2], "dilation": [1, 1], "pad_below_kernel": True},
    "pools": {"MaxPool": {"kernel": [1, 5], "stride": [1, 2], "pad": [0, 2], "ceil_mode": False, "dilation": False}},
}
TIDL_WINDOWS = {(1, 1), (1, 2), (2, 2), (3, 1), (3, 2)}


def native_breaks(profile: str, kernel: list[int], strides: list[int], pads: list[int], attrs: dict, op: str = "MaxPool") -> list[str]:
    """What a MaxPool or AveragePool with these attributes breaks of ``profile``'s native
    limits (the issue's numbers, encoded independently of rewriter.profiles)."""
    broken = []
    if attrs.get("ceil_mode", 0):
        broken.append("ceil_mode")
    if any(d != 1 for d in attrs.get("dilations", [1] * len(kernel))):
        broken.append("dilation")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        broken.append("auto_pad")  # the builder writes the pools it adds with explicit pads
    if op == "AveragePool" and profile == "rknn" and attrs.get("count_include_pad", 0) != 1:
        broken.append("count_include_pad")
    if profile == "tidl":
        if len(set(kernel)) > 1 or len(set(strides)) > 1 or (kernel[0], strides[0]) not in TIDL_WINDOWS:
            broken.append(f"window {kernel} {strides}")
    else:
        k_hi, s_hi, p_hi = {"rknn": (7, 8, 7), "user": (5, 2, 2), "nvidia-dla": (8, 16, 7)}[profile]
        if not all(1 <= k <= k_hi for k in kernel) or not all(1 <= s <= s_hi for s in strides) or not all(0 <= p <= p_hi for p in pads):
            broken.append(f"k{kernel} s{strides} p{pads}")
    return broken


def global_breaks(profile: str, op: str, extents: list[int]) -> list[str]:
    """What a GlobalMaxPool or GlobalAveragePool over ``extents`` breaks of ``profile``'s
    native limits: nvidia-dla up to 8 per axis, rknn up to 343, tidl's average up to an
    area of 1024 (and no native global max)."""
    if profile == "tidl":
        return [] if op == "GlobalAveragePool" and math.prod(extents) <= 1024 else [f"{op} {extents}"]
    limit = {"nvidia-dla": 8, "rknn": 343}.get(profile)
    return [] if limit is not None and max(extents) <= limit else [f"{op} {extents}"]


def added_breaks(original: onnx.ModelProto, written: onnx.ModelProto, profile: str) -> list[str]:
    """Every added node that is not a native MaxPool of ``profile``."""
    own = {n.name for n in original.graph.node}
    broken = []
    for node in written.graph.node:
        if node.name in own:
            continue
        if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx"):
            broken.append(f"{node.name}: {node.op_type}")
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs["kernel_shape"])
        strides = list(attrs.get("strides", [1] * len(kernel)))
        pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
        broken += [f"{node.name}: {why}" for why in native_breaks(profile, kernel, strides, pads, attrs)]
    return broken


def maxpool(src: str, dst: str, k: int, name: str) -> onnx.NodeProto:
    return helper.make_node("MaxPool", [src], [dst], name=name, kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)


def graph_model(nodes: list[onnx.NodeProto], shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])


def sppf_model(shape: list[int]) -> onnx.ModelProto:
    """YOLOv8's SPPF: a SiLU (signed output), three chained 5x5/s1/p2 pools, a Concat."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["sig"], name="sigmoid"),
        helper.make_node("Mul", ["x", "sig"], ["silu"], name="silu"),
        maxpool("silu", "p1", 5, "pool1"),
        maxpool("p1", "p2", 5, "pool2"),
        maxpool("p2", "p3", 5, "pool3"),
        helper.make_node("Concat", ["silu", "p1", "p2", "p3"], ["y"], name="cat", axis=1),
    ]
    return graph_model(nodes, shape)


def spp_model(shape: list[int]) -> onnx.ModelProto:
    """SPP's 5/9/13 "same" pools of one input, in parallel, concatenated on channels."""
    nodes = [maxpool("x", f"p{k}", k, f"pool{k}") for k in (5, 9, 13)]
    nodes.append(helper.make_node("Concat", ["x", "p5", "p9", "p13"], ["y"], name="cat", axis=1))
    return graph_model(nodes, shape)


def lone_model(shape: list[int]) -> onnx.ModelProto:
    return pool_model("MaxPool", shape, dict(kernel_shape=[9, 9], strides=[1, 1], pads=[4, 4, 4, 4]))


MODELS = {
    "sppf-20": lambda: sppf_model([1, 3, 20, 20]),
    "spp-8": lambda: spp_model([1, 2, 8, 8]),
    "spp-20": lambda: spp_model([1, 2, 20, 20]),
    "lone9-8": lambda: lone_model([1, 2, 8, 8]),
    "lone9-20": lambda: lone_model([1, 2, 20, 20]),
}
# Per profile, the kernels of the pools each case's pools become (None: runs natively, kept).
EXPECTED = {
    "tidl": {5: [3, 3], 9: [3, 3, 3, 3], 13: [3] * 6},
    "rknn": {5: None, 9: [5, 5], 13: [7, 7]},
    "user": {5: None, 9: [5, 5], 13: [5, 5, 5]},
}


def kernel_of(attributes: str) -> int:
    return int(attributes[1:].split("x")[0])  # "k9x9 s1x1 ..." -> 9


@pytest.mark.parametrize("profile", ["tidl", "rknn", "user"])
@pytest.mark.parametrize("case", list(MODELS))
def test_same_maxpools_become_cascades_of_native_pools(tmp_path: Path, profile: str, case: str) -> None:
    model = MODELS[case]()
    code, written, report = run_cli(tmp_path, model, "--target", target_option(profile, tmp_path, {"user": USER_PROFILE}), "--audit")
    assert code == 0 and report["validation"]["passed"]
    assert added_breaks(model, written, profile) == []
    own_names = {n.name for n in model.graph.node}
    assert {v["node"] for v in report["audit"]["violations"]} <= own_names  # the audit agrees
    for node in report["nodes"]:
        stages = EXPECTED[profile][kernel_of(node["attributes"])]
        if stages is None:
            assert node["status"] == "kept" and node["reason"].startswith("runs natively on")
            continue
        assert node["status"] == "rewritten", node
        assert node["op_counts"] == {"MaxPool": len(stages)}
        assert node["strategy"] == "cascade of native MaxPool " + " + ".join(f"{k}x{k}" for k in stages)
    # The original's own nodes are untouched, natively run pools included.
    rewritten = {n["name"] for n in report["nodes"] if n["status"] == "rewritten"}
    own = {n.name: n for n in written.graph.node}
    for node in model.graph.node:
        assert (node.name in own) == (node.name not in rewritten)
        if node.name in own:
            assert own[node.name] == node
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for name, x in input_suites(shape).items():
        np.testing.assert_array_equal(run(written, {"x": x})[0], run(model, {"x": x})[0], err_msg=f"{case} on {name}")


def test_without_a_target_nothing_is_cascaded() -> None:
    for build in MODELS.values():
        result = PoolRewritePass().run(build())
        assert "MaxPool" not in {n.op_type for n in result.model.graph.node}
        assert not any("cascade" in n.strategy for n in result.report.nodes)


@pytest.mark.parametrize(
    "profile,attrs,strategy",
    [
        # rknn has no ceil_mode; at stride 1 on a "same" window it changes nothing.
        ("rknn", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2], ceil_mode=1), "native MaxPool 5x5"),
        # tidl has no ceil_mode; at stride 1 on a "same" window it changes nothing.
        ("tidl", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1), "native MaxPool 3x3"),
        # Each axis is split on its own: 9x5 on rknn is 5x3 twice.
        ("rknn", dict(kernel_shape=[9, 5], pads=[4, 2, 4, 2]), "cascade of native MaxPool 5x3 + 5x3"),
        # Off centre, the reaches split side by side: (3, 5) is (2, 3) then (1, 2).
        ("rknn", dict(kernel_shape=[9, 9], pads=[3, 3, 5, 5]), "cascade of native MaxPool 6x6 + 4x4"),
    ],
)
def test_a_pool_refused_for_an_attribute_that_changes_nothing_is_re_emitted(profile: str, attrs: dict, strategy: str) -> None:
    model = pool_model("MaxPool", [1, 2, 11, 11], attrs)
    result = PoolRewritePass(target=profile).run(model)
    assert result.report.nodes[0].strategy == strategy
    assert added_breaks(model, result.model, profile) == []
    for name, x in input_suites([1, 2, 11, 11]).items():
        np.testing.assert_array_equal(run(result.model, {"x": x})[0], run(model, {"x": x})[0], err_msg=name)


@pytest.mark.parametrize(
    "profile,attrs",
    [
        ("tidl", dict(kernel_shape=[5, 5], strides=[2, 2], pads=[2, 2, 2, 2])),  # strided: not a "same" pool
        ("tidl", dict(kernel_shape=[5, 5], pads=[1, 1, 3, 3])),  # off centre: tidl's 3x3 can't split (1, 3)
        ("tidl", dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),  # dilated
        ("tidl", dict(kernel_shape=[1, 5], pads=[0, 2, 0, 2])),  # not square: tidl has no 1x3 pool
    ],
)
def test_pools_no_cascade_computes_are_not_cascaded(profile: str, attrs: dict) -> None:
    model = pool_model("MaxPool", [1, 2, 12, 12], attrs)
    result = PoolRewritePass(target=profile).run(model)
    node = result.report.nodes[0]
    assert "cascade" not in node.strategy and "native" not in node.strategy
    if node.status == "rewritten":
        assert "MaxPool" not in {n.op_type for n in result.model.graph.node}
    else:
        assert node.reason.startswith("needs"), node.reason


def test_the_builder_emits_only_pools_the_target_runs_natively() -> None:
    def spec(k: int):
        return pool_spec_from_attributes("max", dict(kernel_shape=[k, k], pads=[k // 2] * 4), [8, 8])

    tidl = SubgraphBuilder("p", 2, np.float32, 2, target=Target.of(profile=load_profile("tidl")))
    tidl.native_max_pool(gs.Variable("x"), spec(3))
    assert [n.op for n in tidl.nodes] == ["MaxPool"] and tidl.nodes[0].attrs["pads"] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="not native on the target"):
        tidl.native_max_pool(gs.Variable("x"), spec(5))
    with pytest.raises(ValueError, match="not run natively on the strict op set"):
        SubgraphBuilder("p", 2, np.float32, 2).native_max_pool(gs.Variable("x"), spec(3))


def test_the_final_check_refuses_an_added_pool_outside_the_native_limits() -> None:
    node = helper.make_node("MaxPool", ["a"], ["b"], name="added", kernel_shape=[5, 5], pads=[2, 2, 2, 2])
    target = Target.of(profile=load_profile("tidl"))
    with pytest.raises(FitError, match="pools.MaxPool"):
        check_added([node], target, {"a": (1, 2, 8, 8)})
    check_added([helper.make_node("MaxPool", ["a"], ["b"], name="ok", kernel_shape=[3, 3], pads=[1, 1, 1, 1])], target, {"a": (1, 2, 8, 8)})


@pytest.mark.parametrize(
    "profile,attrs,strategy",
    [
        ("tidl", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), "cascade of native MaxPool 3x3 + 3x3"),
        ("tidl", dict(kernel_shape=[5, 5], auto_pad="SAME_LOWER"), "cascade of native MaxPool 3x3 + 3x3"),
        ("rknn", dict(kernel_shape=[4, 4], auto_pad="SAME_LOWER"), "native MaxPool 4x4"),
    ],
)
def test_a_cascade_needs_no_static_extents(profile: str, attrs: dict, strategy: str) -> None:
    # A signed input with -inf padding: the Conv lowerings need static extents, a cascade does not.
    model = pool_model("MaxPool", [1, 2, "H", "W"], attrs)
    result = PoolRewritePass(target=profile).run(model)
    assert result.report.nodes[0].strategy == strategy
    assert added_breaks(model, result.model, profile) == []
    for shape in ([1, 2, 12, 12], [1, 2, 3, 7], [1, 2, 1, 1]):
        for name, x in input_suites(shape).items():
            np.testing.assert_array_equal(run(result.model, {"x": x})[0], run(model, {"x": x})[0], err_msg=f"{shape} {name}")
