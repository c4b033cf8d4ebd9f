"""Convs laid out within a profile's limits (rewriter/legalize.py), checked against
onnxruntime: a random depthwise conv, emitted through the builder on a profile,
computes what the same conv computes on onnxruntime, and every Conv it became
keeps to the profile's numbers, encoded here again from the issue."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from rewriter.builder import SubgraphBuilder
from rewriter.legalize import ConvMap, conv_count, plan_conv
from rewriter.profile import ConvLimits, Profile, Range
from rewriter.target import Target
from tests.helpers import run

PROFILES = {
    "user": ConvLimits(kernel=Range(1, 5), stride=Range(1, 2), dilation=Range(1, 1), pad_below_kernel=True),
    "rknn": ConvLimits(kernel=Range(1, 31), stride=Range(1, 7), pad=Range(0, 15), pad_below_kernel=True),
    "dla": ConvLimits(kernel=Range(1, 32), stride=Range(1, 8), dilation=Range(1, 32), pad=Range(0, 31), pad_below_kernel=True),
    "tidl": ConvLimits(equal_strides=True, depthwise_kernels=((3, 3, 1), (5, 5, 1), (7, 7, 1), (3, 3, 2))),
    "tiny": ConvLimits(kernel=Range(1, 2), stride=Range(1, 2), dilation=Range(1, 1), pad=Range(0, 1), pad_below_kernel=True, max_kernel_area=2),
}
TIDL_SHAPES = {(3, 3, 1), (5, 5, 1), (7, 7, 1), (3, 3, 2)}


def breaks(name: str, kernel: list[int], strides: list[int], dilations: list[int], pads: list[int]) -> list[str]:
    """The issue's numbers, checked on one Conv's attributes (not through rewriter.profile)."""
    rank = len(kernel)
    out = []
    if name == "tidl":
        if len(set(strides)) > 1 or (kernel[0], kernel[-1], strides[0]) not in TIDL_SHAPES or len(set(kernel)) > 1:
            out.append(f"tidl depthwise {kernel} s{strides}")
        return out
    k_hi, s_hi, d_hi, p_hi = {"user": (5, 2, 1, None), "rknn": (31, 7, None, 15), "dla": (32, 8, 32, 31), "tiny": (2, 2, 1, 1)}[name]
    for a in range(rank):
        if not 1 <= kernel[a] <= k_hi or not 1 <= strides[a] <= s_hi:
            out.append(f"kernel/stride {kernel} {strides}")
        if d_hi is not None and dilations[a] > d_hi:
            out.append(f"dilation {dilations}")
        for pad in (pads[a], pads[a + rank]):
            if pad >= kernel[a] or (p_hi is not None and pad > p_hi):
                out.append(f"pad {pads} on {kernel}")
    if name == "tiny" and int(np.prod(kernel)) > 2:
        out.append(f"area {kernel}")
    return out


def emitted(sizes, kernel, strides, dilations, pads, limits: ConvLimits | None) -> onnx.ModelProto:
    """A model of the conv as the builder emits it, on a profile with ``limits`` (or none)."""
    rank = len(sizes)
    target = Target.of(profile=Profile("t", conv=limits)) if limits is not None else Target.of()
    b = SubgraphBuilder("t", channels=2, dtype=np.float32, rank=rank, target=target)
    x = gs.Variable("x", dtype=np.float32, shape=(1, 2) + tuple(sizes))
    b.know_extents(x, sizes)
    y = b.depthwise_conv(x, kernel, strides=strides, dilations=dilations, pads=pads)
    if y is x:  # the identity: nothing to emit
        y = b.depthwise_conv(x, np.ones([1] * rank))
    y.dtype, y.shape = np.float32, None
    graph = gs.Graph(nodes=b.nodes, inputs=[x], outputs=[y], opset=17)
    graph.cleanup()
    return gs.export_onnx(graph)


def random_conv(rng: np.random.Generator, rank: int):
    sizes = tuple(int(rng.integers(1, 24)) for _ in range(rank))
    kernel_shape, strides, dilations, pads = [], [], [], [[], []]
    for n in sizes:
        while True:
            k, s, d = int(rng.integers(1, 8)), int(rng.choice([1, 1, 2, 2, 3, 4])), int(rng.choice([1, 1, 2, 3, 7]))
            pb, pe = int(rng.integers(0, 9)), int(rng.integers(0, 9))
            if n + pb + pe - (k - 1) * d - 1 >= 0:
                break
        kernel_shape.append(k), strides.append(s), dilations.append(d), pads[0].append(pb), pads[1].append(pe)
    kernel = rng.integers(-3, 4, size=kernel_shape).astype(np.float64)
    kernel[rng.random(kernel_shape) < 0.5] = 0.0  # sparse, like the lowerings' taps
    return sizes, kernel, strides, dilations, pads[0] + pads[1]


def attributes(node: onnx.NodeProto, weights: dict) -> tuple[list[int], list[int], list[int], list[int]]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = list(weights[node.input[1]].shape[2:])
    rank = len(kernel)
    return kernel, list(attrs.get("strides", [1] * rank)), list(attrs.get("dilations", [1] * rank)), list(attrs.get("pads", [0] * 2 * rank))


@pytest.mark.parametrize("name", list(PROFILES))
@pytest.mark.parametrize("seed", range(40))
def test_a_random_conv_is_computed_by_legal_convs_or_refused(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rank = 2 if name == "tidl" else int(rng.choice([1, 2]))
    sizes, kernel, strides, dilations, pads = random_conv(rng, rank)
    if name == "tidl":
        strides = [strides[0]] * rank  # unequal strides have no program there
    reference = emitted(sizes, kernel, strides, dilations, pads, None)
    candidate = emitted(sizes, kernel, strides, dilations, pads, PROFILES[name])
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in candidate.graph.initializer}
    broken = [why for node in candidate.graph.node if node.op_type == "Conv" for why in breaks(name, *attributes(node, weights))]
    plan = plan_conv(ConvMap.of_conv(kernel, tuple(strides), tuple(dilations), tuple(pads), sizes), PROFILES[name])
    if plan is None:
        assert len(candidate.graph.node) == 1  # emitted as asked: the fit check names the limit
        return
    assert broken == []
    x = rng.standard_normal((1, 2) + sizes).astype(np.float32)
    np.testing.assert_allclose(run(candidate, {"x": x})[0], run(reference, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_the_programs_the_lowerings_need() -> None:
    user = PROFILES["user"]
    # A 1x1 conv that only pads (34 zeros at the end): a chain of kernel-5 convs, pads 4.
    place = plan_conv(ConvMap.of_conv(np.ones((1,)), (1,), (1,), (0, 34), (35,)), user)
    assert conv_count(place) == 9
    # Two taps 9 apart: split, and the far one reached by crops.
    diff = plan_conv(ConvMap.of_conv(np.array([-1.0, 1.0]), (1,), (9,), (0, 0), (20,)), user)
    assert diff is not None and conv_count(diff) >= 3
    # Strides multiply: 4 = 2 * 2; 3 is no product of strides <= 2.
    assert plan_conv(ConvMap.of_conv(np.ones((1,)), (4,), (1,), (0, 0), (16,)), user) is not None
    assert plan_conv(ConvMap.of_conv(np.ones((1,)), (3,), (1,), (0, 0), (16,)), user) is None
    # tidl: a 1-D tap embedded in a square kernel; unequal strides have no program.
    square = plan_conv(ConvMap.of_conv(np.ones((2, 1)), (1, 1), (1, 1), (0, 0, 0, 0), (8, 8)), PROFILES["tidl"])
    assert square is not None and square.layout.kernel.shape == (3, 3)
    assert plan_conv(ConvMap.of_conv(np.ones((1, 1)), (2, 1), (1, 1), (0, 0, 0, 0), (8, 8)), PROFILES["tidl"]) is None
