"""Issue 15's acceptance grid: the pool shapes of real CNNs, and deep stand-ins for
real detector and OCR models, through ``--target`` for every built-in profile and the
issue's user profile file.

Each run must exit 0 with validation passed; every node the rewrite added keeps to
the target's limits, checked by the independent encoding in tests/target_limits.py;
every pool the target runs natively (by that encoding) is left byte-identical; every
other pool is rewritten or cascaded into native ones, except a pool with unequal
strides on a target whose convs need equal ones (tidl), which no program of such
convs computes and which is kept naming that limit; and the outputs equal the
original's on onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rewriter.cli import main
from tests import realistic
from tests.helpers import input_suites, pool_model, run, target_option
from rewriter.fit import audit_violations
from rewriter.target import Target
from rewriter.profiles import load_profile
from tests.target_limits import LIMITS, USER_POOLS_PROFILE_FILE, USER_PROFILE_FILE, outside, pool_breaks

POOL_OPS = {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"}
TARGETS = ["nvidia-dla", "rknn", "tidl", "ethos-u", "tflite", "user"]


def _graph(nodes: list[onnx.NodeProto], shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _same(src: str, dst: str, k: int, name: str) -> onnx.NodeProto:
    return helper.make_node("MaxPool", [src], [dst], name=name, kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)


def sppf(shape: list[int]) -> onnx.ModelProto:
    """YOLOv5/v8 SPPF on a SiLU (signed) input: three chained 5x5/s1/p2 pools, a Concat."""
    return _graph([
        helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"), helper.make_node("Mul", ["x", "s"], ["silu"], name="silu"),
        _same("silu", "p1", 5, "pool1"), _same("p1", "p2", 5, "pool2"), _same("p2", "p3", 5, "pool3"),
        helper.make_node("Concat", ["silu", "p1", "p2", "p3"], ["y"], name="cat", axis=1),
    ], shape)


def spp(shape: list[int]) -> onnx.ModelProto:
    """YOLOv3-SPP's 5/9/13 "same" pools of one input, concatenated."""
    nodes = [_same("x", f"p{k}", k, f"pool{k}") for k in (5, 9, 13)]
    return _graph(nodes + [helper.make_node("Concat", ["x", "p5", "p9", "p13"], ["y"], name="cat", axis=1)], shape)


CASES = {
    "resnet-stem": lambda: pool_model("MaxPool", [1, 3, 112, 112], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "vgg-2x2": lambda: pool_model("MaxPool", [1, 3, 28, 28], dict(kernel_shape=[2, 2], strides=[2, 2])),
    "squeezenet-ceil": lambda: pool_model("MaxPool", [1, 3, 111, 111], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "squeezenet-ceil-7x8": lambda: pool_model("MaxPool", [1, 3, 7, 8], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "inception-max": lambda: pool_model("MaxPool", [1, 3, 35, 35], dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    "inception-max-s2": lambda: pool_model("MaxPool", [1, 3, 35, 35], dict(kernel_shape=[3, 3], strides=[2, 2])),
    "inception-avg-cip0": lambda: pool_model("AveragePool", [1, 3, 35, 35], dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)),
    "densenet-avg-2x2": lambda: pool_model("AveragePool", [1, 3, 28, 28], dict(kernel_shape=[2, 2], strides=[2, 2])),
    "sppf-20": lambda: sppf([1, 3, 20, 20]),
    "sppf-8": lambda: sppf([1, 3, 8, 8]),
    "spp-20": lambda: spp([1, 3, 20, 20]),
    "spp-8": lambda: spp([1, 3, 8, 8]),
    "gap-7": lambda: pool_model("GlobalAveragePool", [1, 3, 7, 7], {}),
    "gap-40": lambda: pool_model("GlobalAveragePool", [1, 3, 40, 40], {}),
    "gmp-20": lambda: pool_model("GlobalMaxPool", [1, 3, 20, 20], {}),
}


def through_cli(tmp_path: Path, model: onnx.ModelProto, target: str, *options: str) -> tuple[int, onnx.ModelProto, dict]:
    src, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, src)
    files = {"user": USER_PROFILE_FILE, "user-pools": USER_POOLS_PROFILE_FILE}
    code = main([str(src), str(out), "-q", "--report", str(report), "--target", target_option(target, tmp_path, files), *options])
    return code, onnx.load(out) if out.exists() else None, json.loads(report.read_text())


def native_pools(model: onnx.ModelProto, target: str) -> list[onnx.NodeProto]:
    """The model's pools the target runs natively, by the independent encoding."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.input)
    }
    return [n for n in model.graph.node if n.op_type in POOL_OPS and not pool_breaks(target, n, shapes[n.input[0]][2:])]


def check_acceptance(original: onnx.ModelProto, code: int, written: onnx.ModelProto, report: dict, target: str) -> None:
    assert code == 0 and report["validation"]["passed"], report.get("validation", {}).get("summary")
    assert outside(original, written, target) == []
    natives = native_pools(original, target)
    kept = {n.name: n for n in written.graph.node}
    for pool in natives:
        assert kept.get(pool.name) == pool, f"{pool.name} runs natively on {target} but was changed"
    others = [n.name for n in original.graph.node if n.op_type in POOL_OPS and n not in natives]
    rows = {row["name"]: row for row in report["nodes"]}
    for name in others:
        if rows[name]["status"] == "rewritten":
            assert name not in kept
        else:
            # The one thing no program of equal-stride convs computes: unequal strides.
            node = next(n for n in original.graph.node if n.name == name)
            strides = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "strides"), [])
            assert LIMITS[target]["equal_strides"] and len(set(strides)) > 1, rows[name]
            assert rows[name]["reason"].endswith("(conv.equal_strides)"), rows[name]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", list(CASES))
def test_the_pool_shapes_of_real_cnns_fit_every_target(tmp_path: Path, case: str, target: str) -> None:
    original = CASES[case]()
    code, written, report = through_cli(tmp_path, original, target)
    check_acceptance(original, code, written, report, target)
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    for name, x in input_suites(shape).items():
        np.testing.assert_allclose(run(written, {"x": x})[0], run(original, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("builder", ["yolo_sppf_detector", "ocr_se_recognizer"])
def test_real_detector_and_ocr_models_fit_every_target(tmp_path: Path, builder: str, target: str) -> None:
    model = realistic.BUILDERS[builder](dynamic=True)
    code, written, report = through_cli(tmp_path, model, target, *realistic.overwrite_input_shape_args(model))
    static = onnx.load(str(tmp_path / "in.onnx"))
    # The natives are judged at the deployed shape: the written model's own inputs.
    static.graph.input[0].type.CopyFrom(written.graph.input[0].type)
    del static.graph.value_info[:]
    check_acceptance(static, code, written, report, target)


# auto_pad pools (issue 22): a compiler resolves auto_pad to pads before it applies its
# limits, and so do the profiles. rknn-toolkit2 2.5.0 builds the first two as NPU layers
# on rk3588. Per case, the targets that run it natively (by the resolved pads).
AUTO_PAD_CASES = {
    # a CRNN's 2x2/s2 VALID pool on an odd height: pads 0, the last row dropped
    "crnn-valid-2x2": (lambda: pool_model("MaxPool", [1, 3, 225, 30], dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID")),
                       {"nvidia-dla", "rknn", "tidl", "user-pools", "ethos-u"}),
    # 1x2/s1x2 SAME_UPPER on an odd width: pads 0,0/0,1 (not square: not on tidl)
    "same-upper-1x2": (lambda: pool_model("MaxPool", [1, 3, 8, 25], dict(kernel_shape=[1, 2], strides=[1, 2], auto_pad="SAME_UPPER")),
                       {"nvidia-dla", "rknn", "ethos-u"}),
    # 3x3/s2 SAME_LOWER on 20: pads 1,1/0,0 (user-pools runs no padding)
    "same-lower-3x3-s2": (lambda: pool_model("MaxPool", [1, 3, 20, 20], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
                          {"nvidia-dla", "rknn", "tidl", "ethos-u"}),
    # 2x2/s2 SAME_UPPER on an even map resolves to no padding at all: native on user-pools too
    "same-upper-2x2-s2-even": (lambda: pool_model("MaxPool", [1, 3, 20, 20], dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")),
                               {"nvidia-dla", "rknn", "tidl", "user-pools", "ethos-u"}),
    # Keras' 3x3/s1 SAME average, count_include_pad=1 (rknn's only form): pads 1 each side
    # (tidl runs the window [3, 1] and states no pad limit)
    "keras-avg-same-cip1": (lambda: pool_model("AveragePool", [1, 3, 14, 14], dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", count_include_pad=1)),
                            {"nvidia-dla", "rknn", "tidl", "ethos-u"}),
    # the same window at VALID: no pads, so native on user-pools too
    "avg-valid-3x3": (lambda: pool_model("AveragePool", [1, 3, 14, 14], dict(kernel_shape=[3, 3], auto_pad="VALID", count_include_pad=1)),
                      {"nvidia-dla", "rknn", "tidl", "user-pools", "ethos-u"}),
}


@pytest.mark.parametrize("target", TARGETS + ["user-pools"])
@pytest.mark.parametrize("case", list(AUTO_PAD_CASES))
def test_auto_pad_pools_are_judged_on_their_resolved_pads(tmp_path: Path, case: str, target: str) -> None:
    build, native_on = AUTO_PAD_CASES[case]
    original = build()
    # The independent encoding agrees with the expectation: it resolves auto_pad itself.
    assert bool(native_pools(original, target)) == (target in native_on)
    code, written, report = through_cli(tmp_path, original, target)
    check_acceptance(original, code, written, report, target)
    row = report["nodes"][0]
    if target in native_on:
        assert row["status"] == "kept" and row["reason"] == f"runs natively on {target}", row
    else:  # rewritten, or (tidl's unequal strides) kept naming the limit, as check_acceptance said
        assert row["status"] == "rewritten" or row["reason"].endswith("(conv.equal_strides)"), row
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    for name, x in input_suites(shape).items():
        np.testing.assert_allclose(run(written, {"x": x})[0], run(original, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("target", ["nvidia-dla", "rknn", "tidl"])
@pytest.mark.parametrize("case", list(AUTO_PAD_CASES))
def test_the_audit_judges_auto_pad_pools_on_their_resolved_pads(case: str, target: str) -> None:
    build, native_on = AUTO_PAD_CASES[case]
    rows = audit_violations(build(), Target.of(profile=load_profile(target)))
    assert [r["rule"] for r in rows if r["op_type"] != "Relu"] == ([] if target in native_on else [rows[0]["rule"]])
    assert all(r["rule"].startswith("pools.") for r in rows)
