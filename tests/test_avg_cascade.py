"""Long averages on a target with short kernels: a cascade of strided depthwise convs
(issue 15), run through the CLI with ``--target`` and validated against onnxruntime.

The limits are re-checked from the written model's ONNX attributes by an encoding
of their own, not through :mod:`rewriter.fit` or :mod:`rewriter.profile`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import onnx
import pytest
from onnx import TensorProto, helper

from rewriter import PoolRewritePass
from rewriter.cli import main
from tests.helpers import added_nodes_outside, pool_model, target_option
from compat import TEST_OPSET

# A user's profile: kernels and strides up to 8, no padding, no dilation, no Concat.
NPU8 = {
    "name": "npu8",
    "source": "a test profile",
    "ops": ["Conv", "Relu", "Add"],
    "conv": {"kernel": [1, 8], "stride": [1, 8], "dilation": [1, 1], "pad": [0, 0], "pad_below_kernel": True},
}
# rknn's conv numbers, as a file without native pools (so that the global average is rewritten)
# and without its 2-D-only rule (so that the 1-D one is).
RKNN_CONV = {
    "name": "rknn-conv",
    "source": "rknn's conv limits (rewriter/profiles/rknn.json), no native pools",
    "ops": ["Conv", "Relu", "Add", "Concat"],
    "conv": {"kernel": [1, 31], "stride": [1, 7], "pad": [0, 15], "pad_below_kernel": True},
}
# The same numbers again, for the independent check: (ops, kernel, stride, dilation, pad), None: no limit.
LIMITS = {
    "npu8": ({"Conv", "Relu", "Add"}, (1, 8), (1, 8), (1, 1), (0, 0)),
    "rknn-conv": ({"Conv", "Relu", "Add", "Concat"}, (1, 31), (1, 7), None, (0, 15)),
    "rknn": ({"Conv", "Relu", "Add", "Concat"}, (1, 31), (1, 7), None, (0, 15)),
}


def reduce_mean_model(shape: list[int]) -> onnx.ModelProto:
    """x -> ReduceMean(axes=[2, 3], keepdims=1) -> y, opset 18 or later (axes as an input)."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="pool", keepdims=1)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape[:2] + [1, 1])], initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])
    model.ir_version = 10
    return model


def run_cli(tmp_path: Path, model: onnx.ModelProto, profile: str) -> tuple[int, Optional[onnx.ModelProto], dict]:
    src, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, src)
    code = main([str(src), str(out), "-q", "--report", str(report), "--target", target_option(profile, tmp_path, {"npu8": NPU8, "rknn-conv": RKNN_CONV})])
    return code, onnx.load(out) if out.exists() else None, json.loads(report.read_text())


def added_windows(original: onnx.ModelProto, written: onnx.ModelProto) -> list[tuple[list[int], list[int]]]:
    """(kernel, strides) of every Conv the rewrite added, in order."""
    own = {n.name for n in original.graph.node}
    weights = {t.name: list(t.dims)[2:] for t in written.graph.initializer}
    return [
        (weights[n.input[1]], list(helper.get_attribute_value(next(a for a in n.attribute if a.name == "strides"))))
        for n in written.graph.node
        if n.op_type == "Conv" and n.name not in own
    ]


def assert_fits(original: onnx.ModelProto, written: onnx.ModelProto, profile: str) -> list[tuple[list[int], list[int]]]:
    """Every added node within ``profile``, read from the ONNX attributes; the added convs' windows."""
    assert added_nodes_outside(original, written, LIMITS[profile]) == []
    return added_windows(original, written)


GAP160 = ("gap160", lambda: pool_model("GlobalAveragePool", [1, 3, 160, 160]))
MEAN40 = ("mean40", lambda: reduce_mean_model([1, 3, 40, 40]))
MEAN160 = ("mean160", lambda: reduce_mean_model([1, 3, 160, 160]))
GAP120_1D = ("gap120-1d", lambda: pool_model("GlobalAveragePool", [1, 3, 120]))
AVG32 = ("avg32s32", lambda: pool_model("AveragePool", [1, 3, 64, 96], dict(kernel_shape=[32, 32], strides=[32, 32])))

# (profile, case, the (kernel, strides) of the stages expected: fewest padded stages, then
# fewest stages, then fewest MACs; a global axis's last stage leaves one value, so any
# stride the profile allows).
CASCADES = [
    ("npu8", GAP160, [([8, 8], [8, 8]), ([5, 5], [5, 5]), ([4, 4], [4, 4])]),
    ("npu8", MEAN40, [([8, 8], [8, 8]), ([5, 5], [5, 5])]),
    ("npu8", GAP120_1D, [([8], [8]), ([5], [5]), ([3], [3])]),
    # Strides stop at 7: 160 = 5 * 4 * 8 tiles it without pads (issue 22; padded to
    # 161 = 7 * 23 it would take one stage less: 7x7/s7 pad 1, then 23x23 at stride 1).
    ("rknn-conv", GAP160, [([5, 5], [5, 5]), ([4, 4], [4, 4]), ([8, 8], [1, 1])]),
    ("rknn-conv", MEAN40, [([5, 5], [5, 5]), ([8, 8], [1, 1])]),
    ("rknn-conv", GAP120_1D, [([6], [6]), ([20], [1])]),
    ("rknn", AVG32, [([4, 4], [4, 4]), ([4, 4], [4, 4]), ([2, 2], [2, 2])]),
]


@pytest.mark.parametrize("profile,case,stages", CASCADES, ids=[f"{p}-{c[0]}" for p, c, _ in CASCADES])
def test_a_long_average_becomes_a_cascade_within_the_limits(tmp_path, profile, case, stages):
    model = case[1]()
    code, written, report = run_cli(tmp_path, model, profile)
    assert code == 0 and report["validation"]["passed"] is True
    assert report["nodes"][0]["status"] == "rewritten", report["nodes"][0]["reason"]
    assert assert_fits(model, written, profile) == stages


@pytest.mark.parametrize("case", [MEAN160, MEAN40], ids=["mean160", "mean40"])
def test_rknn_runs_a_global_reduce_mean_as_its_native_global_average(tmp_path, case):
    model = case[1]()
    code, written, report = run_cli(tmp_path, model, "rknn")
    assert code == 0 and report["validation"]["passed"] is True
    assert [n.op_type for n in written.graph.node] == ["GlobalAveragePool"]


def test_rknn_still_runs_the_160_global_average_itself(tmp_path):
    model = GAP160[1]()
    code, written, report = run_cli(tmp_path, model, "rknn")
    assert code == 0 and report["nodes"][0]["reason"] == "runs natively on rknn"
    assert [n.op_type for n in written.graph.node] == ["GlobalAveragePool"]


@pytest.mark.parametrize("profile,limit", [("npu8", 8), ("rknn-conv", 31)])
def test_a_prime_extent_is_rewritten_exactly_or_kept_naming_the_limit(tmp_path, profile, limit):
    # No strided cascade tiles 157; split into legal convs (rewriter/legalize.py) it is
    # rewritten, and validated (exit 0), unless that program grows too long.
    code, _, report = run_cli(tmp_path, pool_model("GlobalAveragePool", [1, 3, 157, 157]), profile)
    assert code == 0
    node = report["nodes"][0]
    assert node["status"] == "rewritten" or node["reason"] == f"needs a kernel of 157 > {limit} on {profile} (conv.kernel)"
    assert report["validation"]["passed"] if node["status"] == "rewritten" else True


def test_a_prime_extent_is_zero_padded_where_pads_are_allowed(tmp_path):
    # 157 + 4 zeros = 7 * 23 (pad 4 < kernel 7), then 23x23 at stride 1; the divisor stays 157^2.
    model = pool_model("GlobalAveragePool", [1, 3, 157, 157])
    code, written, report = run_cli(tmp_path, model, "rknn-conv")
    assert code == 0 and report["validation"]["passed"] is True
    assert assert_fits(model, written, "rknn-conv") == [([7, 7], [7, 7]), ([23, 23], [1, 1])]


def test_without_a_target_the_plain_convs_stay():
    # One long conv per axis, as before the cascade: kernels of 160, stride 1.
    model = PoolRewritePass().run(pool_model("GlobalAveragePool", [1, 3, 160, 160])).model
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [helper.get_attribute_value(next(a for a in n.attribute if a.name == "kernel_shape")) for n in convs] == [[160, 1], [1, 160]]
    assert all(set(helper.get_attribute_value(next(a for a in n.attribute if a.name == "strides"))) == {1} for n in convs)


def test_a_short_tiling_average_keeps_its_one_conv(tmp_path):
    # 2x2 stride 2 already fits: no cascade.
    model = pool_model("AveragePool", [1, 3, 12, 12], dict(kernel_shape=[2, 2], strides=[2, 2]))
    code, written, report = run_cli(tmp_path, model, "npu8")
    assert code == 0 and report["validation"]["passed"] is True
    assert assert_fits(model, written, "npu8") == [([2, 2], [2, 2])]
