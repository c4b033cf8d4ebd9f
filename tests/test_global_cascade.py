"""Global pools on a target (issue 15): cascades of native pools, strided conv max
stages, and conv average cascades with a free last stride and zero padding.

Every case goes through the CLI with ``--target``; every added node is checked
against the issue's numbers encoded again here (conv limits, native pool limits,
native global pool extents), read from the written ONNX, and the outputs against
the original's on onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, shape_inference

from rewriter import PoolRewritePass
from tests.helpers import added_nodes_outside, input_suites, pool_model, run, target_option
from tests.test_native_cascade import global_breaks, native_breaks
from tests.target_limits import LIMITS, outside
from tests.test_profiles import run_cli
from compat import TEST_OPSET

# The user profile: no Concat, kernels <= 5, strides <= 2, no dilation, pads below
# the kernel, no native pools.
USER = {
    "name": "user",
    "source": "issue 15",
    "ops": ["Conv", "Relu", "Add"],
    "conv": {"kernel": [1, 5], "stride": [1, 2], "dilation": [1, 1], "pad_below_kernel": True},
}
# The same without padding: nothing can pad a prime extent up to a multiple.
USER_NOPAD = dict(USER, name="user-nopad", conv=dict(USER["conv"], pad=[0, 0]))
# rknn's conv numbers without its native pools: its global averages become conv cascades.
RKNN_CONV = {
    "name": "rknn-conv",
    "source": "rknn's conv limits, no native pools",
    "ops": ["Conv", "Relu", "Add", "Concat"],
    "conv": {"kernel": [1, 31], "stride": [1, 7], "pad": [0, 15], "pad_below_kernel": True, "spatial_ranks": [2]},
}
PROFILE_FILES = {"user": USER, "user-nopad": USER_NOPAD, "rknn-conv": RKNN_CONV}

# The numbers again: ops; conv (kernel, stride, dilation, pad) ranges; native pools.
OPS = {
    "nvidia-dla": {"Conv", "Relu", "Add", "Concat", "Max"},
    "rknn": {"Conv", "Relu", "Add", "Concat"},
    "tidl": {"Conv", "Relu", "Add", "Concat"},
    "user": {"Conv", "Relu", "Add"},
    "user-nopad": {"Conv", "Relu", "Add"},
    "rknn-conv": {"Conv", "Relu", "Add", "Concat"},
}
CONV = {
    "nvidia-dla": ((1, 32), (1, 8), (1, 32), (0, 31)),
    "rknn": ((1, 31), (1, 7), None, (0, 15)),
    "tidl": (None, None, None, None),
    "user": ((1, 5), (1, 2), (1, 1), None),
    "user-nopad": ((1, 5), (1, 2), (1, 1), (0, 0)),
    "rknn-conv": ((1, 31), (1, 7), None, (0, 15)),
}
NATIVE = {
    "nvidia-dla": {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"},
    "rknn": {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"},
    "tidl": {"MaxPool", "AveragePool", "GlobalAveragePool"},
    "user": set(),
    "user-nopad": set(),
    "rknn-conv": set(),
}
TIDL_DEPTHWISE = {(3, 3, 1), (5, 5, 1), (7, 7, 1), (3, 3, 2)}


def added_breaks(original: onnx.ModelProto, written: onnx.ModelProto, profile: str) -> list[str]:
    """Every rule of ``profile`` an added node breaks."""
    broken = added_nodes_outside(original, written, (OPS[profile] | NATIVE[profile], *CONV[profile]))
    own = {n.name for n in original.graph.node}
    inferred = shape_inference.infer_shapes(written)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    weights = {t.name: list(t.dims) for t in written.graph.initializer}
    for node in written.graph.node:
        if node.name in own:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and profile == "tidl":
            kernel, strides = weights[node.input[1]][2:], list(attrs.get("strides", [1, 1]))
            if len(set(strides)) > 1 or (kernel[0], kernel[1], strides[0]) not in TIDL_DEPTHWISE:
                broken.append(f"{node.name}: tidl conv {kernel} s{strides}")
        elif node.op_type in ("MaxPool", "AveragePool"):
            kernel = list(attrs["kernel_shape"])
            strides, pads = list(attrs.get("strides", [1] * len(kernel))), list(attrs.get("pads", [0] * 2 * len(kernel)))
            broken += [f"{node.name}: {why}" for why in native_breaks(profile, kernel, strides, pads, attrs, node.op_type)]
        elif node.op_type.startswith("Global"):
            broken += [f"{node.name}: {why}" for why in global_breaks(profile, node.op_type, shapes[node.input[0]][2:])]
    return broken


def added_convs(original: onnx.ModelProto, written: onnx.ModelProto) -> list[tuple[list[int], list[int], list[int]]]:
    """(kernel, strides, pads) of every Conv the rewrite added, in order."""
    own = {n.name for n in original.graph.node}
    weights = {t.name: list(t.dims)[2:] for t in written.graph.initializer}
    found = []
    for n in written.graph.node:
        if n.op_type == "Conv" and n.name not in own:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            found.append((weights[n.input[1]], list(attrs["strides"]), list(attrs["pads"])))
    return found


def assert_rewritten_and_equal(tmp_path: Path, model: onnx.ModelProto, profile: str) -> tuple[onnx.ModelProto, dict]:
    code, written, report = run_cli(tmp_path, model, "--target", target_option(profile, tmp_path, PROFILE_FILES), "--audit")
    assert code == 0 and report["validation"]["passed"] is True
    node = report["nodes"][0]
    assert node["status"] == "rewritten" or node["reason"] == f"runs natively on {profile}", node
    assert added_breaks(model, written, profile) == []
    assert {v["node"] for v in report["audit"]["violations"]} <= {n.name for n in model.graph.node}
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for name, x in input_suites(shape).items():
        np.testing.assert_allclose(run(written, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)
    return written, node


PROFILES = ["tidl", "rknn", "nvidia-dla", "user"]
EXTENTS = [(1, 1), (7, 7), (13, 13), (20, 20), (40, 40), (6, 10)]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("extent", EXTENTS, ids=[f"{h}x{w}" for h, w in EXTENTS])
def test_every_global_pool_fits_each_profile(tmp_path: Path, profile: str, op: str, extent: tuple[int, int]) -> None:
    assert_rewritten_and_equal(tmp_path, pool_model(op, [1, 3, *extent]), profile)


# (profile, op, extent, the report's strategy): the constructions the issue names, and primes.
STRATEGIES = [
    ("tidl", "GlobalMaxPool", (20, 20), "cascade of native MaxPool 2x2/s2 + 2x2/s2 + 3x3/s2 + 2x2/s2"),
    ("tidl", "GlobalMaxPool", (13, 13), "cascade of native MaxPool 2x2/s2 pad 1 + 3x3/s2 + 3x3/s1"),
    ("tidl", "GlobalMaxPool", (6, 10), "cascade of native MaxPool 2x2/s2 + 3x3/s2 + 2x2/s2 pad 1x0"),
    ("tidl", "GlobalMaxPool", (1, 1), "cascade of native MaxPool 1x1/s1"),
    ("tidl", "GlobalAveragePool", (40, 40), "cascade of native AveragePool 2x2/s2 + GlobalAveragePool 20x20"),
    # 37 is prime and its area 1369 > 1024: no AveragePool tiles it; 2-tap means at stride 2
    # in 3x3/s2 kernels, zero-padded, then a 5x5.
    ("tidl", "GlobalAveragePool", (37, 37), "conv cascade 3x3/s2 pad 2 + 3x3/s2 pad 2 + 3x3/s2 pad 1 + 5x5/s1"),
    ("nvidia-dla", "GlobalMaxPool", (20, 20), "cascade of native MaxPool 5x5/s5 + GlobalMaxPool 4x4"),
    ("nvidia-dla", "GlobalAveragePool", (40, 40), "cascade of native AveragePool 8x8/s8 + GlobalAveragePool 5x5"),
    ("user", "GlobalAveragePool", (40, 40), "conv cascade 2x2/s2 + 2x2/s2 + 2x2/s2 + 5x5/s1"),
    ("user", "GlobalAveragePool", (7, 7), "conv cascade 2x2/s2 pad 1 + 4x4/s1"),
    ("user", "GlobalAveragePool", (13, 13), "conv cascade 2x2/s2 pad 1 + 2x2/s2 pad 1 + 4x4/s1"),
    ("user", "GlobalAveragePool", (6, 10), "conv cascade 2x2/s2 + 3x5/s1"),
    ("user", "GlobalMaxPool", (20, 20), "strided max 2/s2 + 2/s2 + 3/s2 + 2/s1 x 2/s2 + 2/s2 + 3/s2 + 2/s1"),
    ("user", "GlobalMaxPool", (13, 13), "strided max 3/s2 + 2/s2 + 3/s1 x 3/s2 + 2/s2 + 3/s1"),
    ("user-nopad", "GlobalAveragePool", (20, 20), "conv cascade 2x2/s2 + 2x2/s2 + 5x5/s1"),
]


@pytest.mark.parametrize("profile,op,extent,strategy", STRATEGIES, ids=[f"{p}-{o[6:9]}-{e[0]}x{e[1]}" for p, o, e, _ in STRATEGIES])
def test_the_stages_are_the_fewest(tmp_path: Path, profile: str, op: str, extent: tuple[int, int], strategy: str) -> None:
    _, node = assert_rewritten_and_equal(tmp_path, pool_model(op, [1, 2, *extent]), profile)
    assert node["status"] == "rewritten" and node["strategy"] == strategy


def test_a_padded_average_reads_its_pads_from_the_written_convs(tmp_path: Path) -> None:
    # GAP 7x7 on the user profile: one zero row and column (pad 1 < kernel 2), then 4x4 at stride 1.
    model = pool_model("GlobalAveragePool", [1, 2, 7, 7])
    written, _ = assert_rewritten_and_equal(tmp_path, model, "user")
    assert added_convs(model, written) == [([2, 2], [2, 2], [0, 0, 1, 1]), ([4, 4], [1, 1], [0, 0, 0, 0])]
    # Weights: 2x2 means scaled by 64/49, then a 4x4 mean: sum / 49.
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in written.graph.initializer}
    first = weights[next(n for n in written.graph.node if n.op_type == "Conv").input[1]]
    np.testing.assert_allclose(first[0, 0], np.full((2, 2), 16 / 49), rtol=1e-6)


def test_the_user_profiles_global_max_has_no_concat_dilation_or_padding(tmp_path: Path) -> None:
    model = pool_model("GlobalMaxPool", [1, 2, 20, 20])
    written, node = assert_rewritten_and_equal(tmp_path, model, "user")
    assert {n.op_type for n in written.graph.node} == {"Conv", "Relu", "Add"}
    convs = added_convs(model, written)
    assert {tuple(k) for k, _, _ in convs} == {(2, 1), (3, 1), (1, 2), (1, 3)}
    assert all(set(p) == {0} for _, _, p in convs)


@pytest.mark.parametrize("extent", [(7, 7), (13, 13), (37, 37)])
def test_a_prime_no_padding_can_tile_is_legalized_or_kept_naming_the_limit(tmp_path: Path, extent: tuple[int, int]) -> None:
    # No cascade tiles a prime without pads; the conv legalizer (rewriter/legalize.py) may
    # still split the plain conv into legal ones, else the pool is kept naming the limit.
    model = pool_model("GlobalAveragePool", [1, 2, *extent])
    code, written, report = run_cli(tmp_path, model, "--target", target_option("user-nopad", tmp_path, PROFILE_FILES))
    assert code == 0
    node = report["nodes"][0]
    assert "cascade" not in node["strategy"]
    if node["status"] == "rewritten":
        assert report["validation"]["passed"] is True and added_breaks(model, written, "user-nopad") == []
    else:
        assert node["reason"] == f"needs a kernel of {extent[0]} > 5 on user-nopad (conv.kernel)"


def test_dynamic_extents_are_kept_static_only() -> None:
    # A cascade's stages depend on the extents: no stand-in would be exact.
    model = pool_model("GlobalAveragePool", [1, 2, "H", "W"])
    node = PoolRewritePass(target="tidl").run(model).report.nodes[0]
    assert node.status == "kept" and "dynamic" in node.reason


def test_without_a_target_nothing_is_cascaded() -> None:
    for op in ("GlobalMaxPool", "GlobalAveragePool"):
        result = PoolRewritePass().run(pool_model(op, [1, 2, 20, 20]))
        node = result.report.nodes[0]
        assert "cascade" not in node.strategy and "strided" not in node.strategy
        assert {n.op_type for n in result.model.graph.node} <= {"Conv", "Relu", "Add", "Concat"}


def test_a_reduce_mean_runs_as_the_native_global_average(tmp_path: Path) -> None:
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="pool", keepdims=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 40, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])], initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])
    written, node = assert_rewritten_and_equal(tmp_path, model, "rknn")
    assert node["strategy"] == "native GlobalAveragePool 40x40"
    assert [n.op_type for n in written.graph.node] == ["GlobalAveragePool"]


def pad_free_tiling(n: int, kernel_hi: int, stride_hi: int) -> bool:
    """Whether ``n`` is ``f1 * ... * fm * last`` with each ``2 <= f <= min(kernel_hi,
    stride_hi)`` (a kernel = stride conv) and ``last <= kernel_hi`` (one window, stride 1):
    an exact cascade without pads (issue 22), found here independently of the planner."""
    if n <= kernel_hi:
        return True
    return any(n % f == 0 and pad_free_tiling(n // f, kernel_hi, stride_hi) for f in range(2, min(kernel_hi, stride_hi) + 1))


# (kernel hi, stride hi) of the profiles whose convs may have kernel = stride; tidl's
# depthwise convs may not (3x3 at stride 2 only), so its stages are always padded.
TILING = {"rknn": (31, 7), "rknn-conv": (31, 7), "nvidia-dla": (32, 8), "user": (5, 2), "user-nopad": (5, 2)}
LONG = [160, 7, 40, 20, 13, 56, 80, 112]


@pytest.mark.parametrize("profile", ["tidl", "rknn", "nvidia-dla", "user", "user-nopad", "rknn-conv"])
@pytest.mark.parametrize("op", ["GlobalAveragePool", "AveragePool"])
@pytest.mark.parametrize("n", LONG)
def test_a_long_average_prefers_an_exact_tiling_without_pads(tmp_path: Path, profile: str, op: str, n: int) -> None:
    # The PP-OCRv4 detector's 160x160 average on rknn was 7x7/s7 pad 1 + 23x23, and
    # rknn-toolkit2 2.5.0 printed "Failed to config layer ... fallback to single core
    # mode" for a 7x7/s7 on that map; 160 = 5 * 4 * 8 tiles it without pads (issue 22).
    attrs = dict(kernel_shape=[n, n], strides=[n, n]) if op == "AveragePool" else {}
    model = pool_model(op, [1, 2, n, n], attrs)
    if profile == "user-nopad" and not pad_free_tiling(n, 5, 2):
        pytest.skip("no pads and no tiling: test_a_prime_no_padding_can_tile_is_legalized_or_kept_naming_the_limit")
    written, node = assert_rewritten_and_equal(tmp_path, model, profile)
    if profile in LIMITS:  # the acceptance encoding too (tests/target_limits.py)
        assert outside(model, written, profile) == []
    convs = added_convs(model, written)
    if profile in TILING and pad_free_tiling(n, *TILING[profile]):
        assert all(set(p) == {0} for _, _, p in convs), (node["strategy"], convs)
    if profile == "rknn" and op == "AveragePool" and n > 7:
        # Not native (kernel > 7), but its one window is the whole map: the native global
        # average, as rknn-toolkit2 itself reads it (convert_avgpool_to_global).
        assert node["status"] == "rewritten" and node["strategy"] == f"native GlobalAveragePool {n}x{n}"
        assert [x.op_type for x in written.graph.node] == ["GlobalAveragePool"]


@pytest.mark.parametrize("profile", ["rknn", "nvidia-dla", "tidl"])
@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
@pytest.mark.parametrize("n", [160, 40, 13])
def test_a_pool_whose_one_window_is_its_input_is_the_native_global_pool(tmp_path: Path, profile: str, op: str, n: int) -> None:
    # An exported adaptive pool to 1x1: kernel = stride = the map. The global pool's
    # native cascade (or the native global pool itself) computes it exactly.
    model = pool_model(op, [1, 2, n, n], dict(kernel_shape=[n, n], strides=[n, n]))
    written, node = assert_rewritten_and_equal(tmp_path, model, profile)
    assert outside(model, written, profile) == []
    glob = "Global" + op
    if glob in NATIVE[profile] and not global_breaks(profile, glob, [n, n]):
        assert node["strategy"] == f"native {glob} {n}x{n}" and [x.op_type for x in written.graph.node] == [glob]
    elif "cascade of native" in node["strategy"]:
        assert {x.op_type for x in written.graph.node} <= {op, glob}


def test_a_pool_of_one_window_with_pads_is_no_global_pool() -> None:
    # A begin pad shifts the one window off the map's last row and column: no global pool.
    model = pool_model("AveragePool", [1, 2, 20, 20], dict(kernel_shape=[20, 20], strides=[20, 20], pads=[1, 1, 0, 0], count_include_pad=1))
    result = PoolRewritePass(target="rknn").run(model)
    assert result.report.nodes[0].status == "rewritten" and "Global" not in result.report.nodes[0].strategy
    assert "GlobalAveragePool" not in {n.op_type for n in result.model.graph.node}
    for name, x in input_suites([1, 2, 20, 20]).items():
        np.testing.assert_allclose(run(result.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-6, err_msg=name)
