"""Validation judged against the exact value (issue 21): averages against their float64
mean, with onnxruntime's own error beside the rewrite's; the optimizer's floor used only
when it looks like rounding; stale value_info never trusted. Both halves: correct
candidates that sum in another order pass, wrong ones are refused."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import realistic
from onnx import TensorProto, helper, numpy_helper
from reference import reference_pool

from rewriter import rewrite_model
from rewriter.spec import attribute_support, pool_spec_from_attributes
from rewriter.validate import ToleranceComparator, record_reference, validate_models
from rewriter.validate.exact import ExactMean, compare_with_exact, exact_mean, summation_bound
from rewriter.validate.localize import Paths
from rewriter.validate.runners import stale_value_info

BUILTIN_TARGETS = [None, "rknn", "nvidia-dla", "tidl"]


def _piece(op: str, attrs: dict, shape: list[int], opset: int = 19) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# -- the exact mean itself ------------------------------------------------------------------

AVERAGE_GRID = [
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 0, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[0, 1, 1, 0], count_include_pad=1),
    dict(kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_LOWER", count_include_pad=1),
    dict(kernel_shape=[5, 1], auto_pad="VALID"),
]


@pytest.mark.parametrize("attrs", AVERAGE_GRID, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_exact_mean_is_the_window_by_window_mean(attrs):
    shape = [2, 3, 11, 10]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    exact = exact_mean(_piece("AveragePool", attrs, shape), x)
    spec = pool_spec_from_attributes("average", attrs, shape[2:], **attribute_support("AveragePool", 19))
    np.testing.assert_allclose(exact.value, reference_pool(x, spec), rtol=1e-12, atol=1e-14)
    assert exact.magnitude == pytest.approx(float(reference_pool(np.abs(x), spec).max()), rel=1e-12)
    # ... and onnxruntime agrees with it to float32 rounding: the two read the node alike.
    from helpers import run
    np.testing.assert_allclose(run(_piece("AveragePool", attrs, shape), {"x": x})[0], exact.value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 3])
def test_exact_mean_of_other_ranks_and_global_and_reduce(rank):
    shape = [1, 2] + [7, 6, 5][:rank]
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    attrs = dict(kernel_shape=[3] * rank, pads=[1] * (2 * rank), strides=[2] * rank, ceil_mode=1)
    spec = pool_spec_from_attributes("average", attrs, shape[2:], **attribute_support("AveragePool", 19))
    np.testing.assert_allclose(exact_mean(_piece("AveragePool", attrs, shape), x).value, reference_pool(x, spec), rtol=1e-12)
    axes = tuple(range(2, 2 + rank))
    np.testing.assert_allclose(exact_mean(_piece("GlobalAveragePool", {}, shape), x).value,
                               x.astype(np.float64).mean(axis=axes, keepdims=True), rtol=1e-12)
    reduce = exact_mean(_piece("ReduceMean", dict(axes=list(axes), keepdims=0), shape, opset=13), x)
    np.testing.assert_allclose(reduce.value, x.astype(np.float64).mean(axis=axes), rtol=1e-12)
    assert reduce.count == int(np.prod(shape[2:]))


def test_exact_mean_is_only_for_one_average_node():
    x = np.zeros((1, 2, 4, 4), np.float32)
    assert exact_mean(_piece("MaxPool", dict(kernel_shape=[2, 2]), [1, 2, 4, 4]), x) is None
    two = _piece("AveragePool", dict(kernel_shape=[2, 2]), [1, 2, 4, 4])
    two.graph.node.append(helper.make_node("Relu", ["y"], ["z"]))
    two.graph.output[0].name = "z"
    assert exact_mean(two, x) is None


def test_a_misread_window_is_judged_by_onnxruntime_not_by_the_exact_value():
    """The exact value follows rewriter.spec, as the lowerings do; where onnxruntime reads the
    node otherwise (simulated: a 'reference' missing one tap), the candidate that agrees with the
    misreading fails, judged against onnxruntime."""
    rng = np.random.default_rng(2)
    runtime = rng.normal(size=(1, 4, 1, 1)).astype(np.float32) + 5
    misread = ExactMean(runtime.astype(np.float64) * (1 - 1 / 9), magnitude=5.0, count=9)
    candidate = misread.value.astype(np.float32)
    c = compare_with_exact(ToleranceComparator(), "y", "s", misread, runtime, candidate)
    assert not c.passed and c.exact_error is None  # judged against onnxruntime, as before
    truth = ExactMean(runtime.astype(np.float64), magnitude=5.0, count=9)
    assert compare_with_exact(ToleranceComparator(), "y", "s", truth, runtime, runtime.copy()).passed


def test_summation_bound_grows_like_the_square_root_of_the_count():
    small, big = ExactMean(np.zeros(1), 1.0, 4), ExactMean(np.zeros(1), 1.0, 25600)
    unit = 2.0 ** -24
    assert summation_bound(small, np.dtype(np.float32)) == pytest.approx(4 * unit)
    assert summation_bound(big, np.dtype(np.float32)) == pytest.approx(320 * unit)


# -- long averages: rewritten and validated, no false refusal -------------------------------

def se_gap_model(hw: int, offset: float, channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> SE block (GlobalAveragePool over hw x hw, two 1x1 convs, HardSigmoid, Mul)
    -> Conv -> Sigmoid: a PP-OCR-style detector stage; ``offset`` biases the map away from 0."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w0", (rng.normal(size=(c, c, 3, 3)) * 0.2).astype(np.float32)), ("b0", np.full((c,), offset, np.float32)),
        ("w1", (rng.normal(size=(c // 4, c, 1, 1)) * 0.5).astype(np.float32)),
        ("w2", (rng.normal(size=(c, c // 4, 1, 1)) * 0.5).astype(np.float32)),
        ("w3", (rng.normal(size=(1, c, 3, 3)) * 0.2).astype(np.float32))]]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="se/gap"),
        helper.make_node("Conv", ["g", "w1"], ["s1"]), helper.make_node("Relu", ["s1"], ["s2"]),
        helper.make_node("Conv", ["s2", "w2"], ["s3"]), helper.make_node("HardSigmoid", ["s3"], ["s4"]),
        helper.make_node("Mul", ["r", "s4"], ["m"]), helper.make_node("Conv", ["m", "w3"], ["o"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["o"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("target", BUILTIN_TARGETS, ids=lambda t: t or "no-target")
@pytest.mark.parametrize("hw,offset", [(160, 0.0), (160, 100.0), pytest.param(320, 100.0, marks=pytest.mark.slow)])
def test_long_global_averages_are_rewritten_and_pass(hw, offset, target):
    model = se_gap_model(hw, offset)
    new, report = rewrite_model(model, target=target) if target else rewrite_model(model)
    result = validate_models(model, new)
    assert result.passed, result.summary()
    (node,) = result.nodes
    assert node.passed and node.exact_error is not None and node.runtime_error is not None
    if report.rewritten:  # the rewrite is no further from the exact mean than onnxruntime (native: the same)
        assert node.exact_error <= 4 * node.runtime_error + 1e-6
    else:
        assert node.exact_error == node.runtime_error


def _average_candidate(hw: int, c: int, form: str) -> onnx.ModelProto:
    """Relu -> (the GAP, or a candidate for it) -> Sigmoid, over a static hw x hw map."""
    inits, body = [], []
    if form == "gap":
        body = [helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap")]
    elif form == "missing-column":
        inits = [numpy_helper.from_array(np.full((c, 1, hw, hw - 1), 1 / (hw * hw), np.float32), "wk")]
        body = [helper.make_node("Conv", ["r", "wk"], ["g"], group=c, strides=[1, hw])]
    elif form in ("one-conv", "float16-weights"):
        weight = np.float32(1 / (hw * hw)) if form == "one-conv" else np.float32(np.float16(1 / (hw * hw)))
        inits = [numpy_helper.from_array(np.full((c, 1, hw, hw), weight, np.float32), "wk")]
        body = [helper.make_node("Conv", ["r", "wk"], ["g"], group=c)]
    else:  # a two-stage cascade
        (k1, k2), prev = {"cascade": (16, 10)}[form], "r"
        for i, k in enumerate((k1, k2)):
            inits.append(numpy_helper.from_array(np.full((c, 1, k, k), 1.0 / (k * k), np.float32), f"w{i}"))
            out = "g" if i else "t"
            body.append(helper.make_node("Conv", [prev, f"w{i}"], [out], group=c, strides=[k, k]))
            prev = out
    nodes = [helper.make_node("Relu", ["x"], ["r"]), *body, helper.make_node("Sigmoid", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("form,passes", [
    ("gap", True), ("one-conv", True), ("cascade", True), ("float16-weights", False), ("missing-column", False),
])
def test_long_average_candidates_pass_only_when_they_only_sum_in_another_order(form, passes):
    original = _average_candidate(160, 16, "gap")
    result = validate_models(original, _average_candidate(160, 16, form), localize=["g"])
    (node,) = result.nodes
    assert node.passed is passes and result.passed is passes, result.summary()
    if form == "float16-weights":  # 1e-3 off the exact mean, while onnxruntime is within 1e-5 of it
        assert node.exact_error > 1e-4 > 1e-5 > node.runtime_error


# -- faults of the original, not rounding ---------------------------------------------------

def _scaled_last_conv(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    conv = [n for n in copy.graph.node if n.op_type == "Conv"][-1]
    weight = next(t for t in copy.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(weight) * factor).astype(np.float32), weight.name))
    return copy


def shape_folding_fault() -> onnx.ModelProto:
    """A model onnxruntime's optimizer miscomputes on every CPU: value_info says the conv's map is
    8x8 (written for another input size), constant folding turns Shape into that 8, and the
    model multiplies by it; as written, it multiplies by the real 16. Then a MaxPool and a conv."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(2, 4, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["t"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["t"], ["s"]), helper.make_node("Gather", ["s", "axis2"], ["h"]),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["t", "hf"], ["u"]),
        helper.make_node("MaxPool", ["u"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"),
        helper.make_node("Conv", ["p", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
                              value_info=[helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 8, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _compare(tmp_path, original: onnx.ModelProto, candidate: onnx.ModelProto, shape: str) -> tuple[subprocess.CompletedProcess, dict]:
    onnx.save(original, tmp_path / "original.onnx")
    onnx.save(candidate, tmp_path / "candidate.onnx")
    run = subprocess.run([sys.executable, "-m", "rewriter", "--compare", str(tmp_path / "original.onnx"), str(tmp_path / "candidate.onnx"),
                          "--input-shape", shape, "--report", str(tmp_path / "r.json")], capture_output=True, text=True)
    return run, json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("factor,passes", [(1.0, True), (1.02, False)])
def test_a_self_disagreeing_original_is_warned_about_and_widens_nothing(tmp_path, factor, passes):
    model = shape_folding_fault()
    run, report = _compare(tmp_path, model, _scaled_last_conv(model, factor), "x:1,4,16,16")
    assert (run.returncode == 0) is passes, run.stderr
    warnings = report["validation"]["warnings"]
    assert len(warnings) == 1 and "the original disagrees with itself" in warnings[0] and "'y'" in warnings[0]
    assert "warning: the original disagrees with itself" in run.stderr and "Traceback" not in run.stderr
    worst = max(report["validation"]["outputs"], key=lambda o: o["error"])
    assert worst["noise_floor"] < 1e-4 * 2000  # the rounding floor stands in, not the 0.5-of-the-output fault


def test_the_fault_is_found_where_rounding_is_measured():
    reference = record_reference(shape_folding_fault(), input_shapes={"x": [1, 4, 16, 16]})
    floors = [f["y"] for f in reference.noise]
    assert all(f.fault is not None and f.fault > 1e4 * f.rounding and f.max_abs == f.rounding for f in floors)


@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("factor,passes", [(1.0, True), (1.02, False), pytest.param(1.5, False, marks=pytest.mark.slow)])
def test_stale_value_info_detector_refuses_a_wrong_last_conv(tmp_path, width, factor, passes):
    """The Paddle-style detector with -1 dims and the value_info inferred from them: onnxruntime's
    NCHWc optimizer miscomputes it where its block size divides the channels (8 on AVX2, 16 on
    AVX-512). Validation runs it without that value_info, so on every CPU the original passes
    against itself and a 2%-off last conv is refused."""
    model = realistic.paddle_det(dynamic=True, width=width)
    assert stale_value_info(model)
    run, report = _compare(tmp_path, model, _scaled_last_conv(model, factor), "x:1,3,72,72")
    assert (run.returncode == 0) is passes, run.stderr
    assert any("value_info holds dims computed from -1 or 0" in w for w in report["validation"]["warnings"])
    assert all(o["noise_floor"] is None or o["noise_floor"] < 1e-3 for o in report["validation"]["outputs"])


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(realistic.BUILDERS))
def test_no_false_fault_on_the_stand_ins(name, dynamic):
    """The other half: no real-model stand-in's optimizer floor is taken for a fault."""
    model = realistic.BUILDERS[name](dynamic=dynamic)
    reference = record_reference(model, input_shapes=realistic.deploy_shapes(model))
    faults = [w for w in reference.warnings if "disagrees with itself" in w]
    assert not faults, faults
    assert all(f.fault is None for run in reference.noise for f in run.values())


def test_value_info_is_restored_after_a_session():
    model = realistic.paddle_det(dynamic=True)
    before = model.SerializeToString()
    from rewriter.validate import OrtRunner
    OrtRunner(model, optimization="ORT_ENABLE_ALL")
    assert model.SerializeToString() == before


def ocr_det_se(size: int = 640, channels: int = 16, seed: int = 3) -> onnx.ModelProto:
    """A PP-OCR-detector-like network at ``size``: a stride-4 stem, then stages at 1/4, 1/8,
    1/16 and 1/32 of the input, each with an SE block whose squeeze is a GlobalAveragePool or
    a spatial ReduceMean (windows of 160x160 down to 20x20 at 640), a BN-folded-style bias,
    and a Sigmoid head on the 1/4 map with the upsampled deeper stages added in."""
    rng = np.random.default_rng(seed)
    c = channels
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, shape: tuple[int, ...], scale: float) -> str:
        inits.append(numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name))
        return name

    def conv(x: str, name: str, cin: int, cout: int, k: int = 3, s: int = 1, act: bool = True) -> str:
        w, b = weight(f"{name}.w", (cout, cin, k, k), (2 / (cin * k * k)) ** 0.5), weight(f"{name}.b", (cout,), 0.1)
        nodes.append(helper.make_node("Conv", [x, w, b], [name], pads=[k // 2] * 4, strides=[s, s]))
        if not act:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
        return f"{name}.relu"

    def se(x: str, name: str, squeeze: str) -> str:
        if squeeze == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{name}.pool"], name=f"{name}.pool"))
        else:
            nodes.append(helper.make_node("ReduceMean", [x], [f"{name}.pool"], axes=[2, 3], keepdims=1, name=f"{name}.pool"))
        s1 = conv(f"{name}.pool", f"{name}.fc1", c, c // 4, k=1)
        s2 = conv(s1, f"{name}.fc2", c // 4, c, k=1, act=False)
        nodes.append(helper.make_node("HardSigmoid", [s2], [f"{name}.gate"], alpha=0.2, beta=0.5))
        nodes.append(helper.make_node("Mul", [x, f"{name}.gate"], [f"{name}.out"]))
        return f"{name}.out"

    x = conv("x", "stem", 3, c, k=3, s=2)
    x = conv(x, "stem2", c, c, k=3, s=2)
    stages = []
    for i, squeeze in enumerate(["gap", "reduce", "gap", "reduce"]):
        if i:
            x = conv(x, f"down{i}", c, c, k=3, s=2)
        x = se(conv(x, f"stage{i}", c, c), f"se{i}", squeeze)
        stages.append(x)
    y = stages[-1]
    for i in range(len(stages) - 2, -1, -1):
        nodes.append(helper.make_node("Resize", [y, "", f"scales{i}"], [f"up{i}"], mode="nearest"))
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), f"scales{i}"))
        nodes.append(helper.make_node("Add", [f"up{i}", stages[i]], [f"fpn{i}"]))
        y = f"fpn{i}"
    head = conv(y, "head", c, 1, k=3, act=False)
    nodes.append(helper.make_node("Sigmoid", [head], ["maps"]))
    graph = helper.make_graph(nodes, "ocr_det_se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("maps", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.slow
@pytest.mark.parametrize("target", BUILTIN_TARGETS, ids=lambda t: t or "no-target")
def test_ocr_detector_with_long_se_averages_is_rewritten_whole_and_validated(target):
    from rewriter import rewrite_validated

    model = ocr_det_se()
    _, report, check = rewrite_validated(model, target=target) if target else rewrite_validated(model)
    assert check.passed, check.summary()
    assert not [n for n in report.kept if "natively" not in n.reason], [(n.name, n.reason) for n in report.kept]
    averages = [n for n in check.nodes if n.exact_error is not None]
    assert report.rewritten and {n.output for n in report.rewritten} <= {n.output for n in averages}
    assert all(n.exact_error <= 4 * n.runtime_error + 1e-6 for n in averages)


def _nudged_non_pool_node(model: onnx.ModelProto) -> onnx.ModelProto:
    """The last conv (or Gemm/MatMul) weight of the network 2% off: a fault no pool's node check sees."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    weights = {t.name: t for t in copy.graph.initializer}
    node = [n for n in copy.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in weights][-1]
    weight = weights[node.input[1]]
    weight.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(weight) * 1.02).astype(numpy_helper.to_array(weight).dtype), weight.name))
    return copy


def _rewired_consumer(rewritten: onnx.ModelProto, original: onnx.ModelProto, shapes: dict) -> onnx.ModelProto:
    """In the rewriter's output, a reader of the last pool's output (the name survives the rewrite)
    reads another tensor of the same shape instead: every pool stays right, their consumer does not."""
    copy = onnx.ModelProto()
    copy.CopyFrom(rewritten)
    static = onnx.ModelProto()
    static.CopyFrom(rewritten)
    del static.graph.value_info[:]
    for value in static.graph.input:
        value.type.tensor_type.shape.ClearField("dim")
        for d in shapes[value.name]:
            value.type.tensor_type.shape.dim.add().dim_value = d
    inferred = onnx.shape_inference.infer_shapes(static)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    pools = [n.output[0] for n in original.graph.node if n.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean")]
    for pool in reversed(pools):
        same = [name for name, shape in dims.items() if shape == dims.get(pool) and name != pool and "poolrewrite" not in name]
        readers = [n for n in copy.graph.node if pool in n.input]
        if same and readers:
            slot = list(readers[0].input).index(pool)
            readers[0].input[slot] = same[-1]
            return copy
    raise ValueError("no pool output to rewire")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["non-pool node 2% off", "consumer rewired"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(set(realistic.BUILDERS) - {"text_cnn"}))
def test_faults_outside_the_pools_are_refused_end_to_end(name, dynamic, fault):
    model = realistic.BUILDERS[name](dynamic=dynamic)
    rewritten, _ = rewrite_model(model)
    shapes = realistic.deploy_shapes(model)
    if fault == "consumer rewired" and name == "mtcnn_pnet":
        pytest.skip("its one pool's output shape is no other tensor's: nothing of that shape to rewire to")
    broken = _nudged_non_pool_node(rewritten) if fault == "non-pool node 2% off" else _rewired_consumer(rewritten, model, shapes)
    assert validate_models(model, rewritten, input_shapes=shapes).passed
    result = validate_models(model, broken, input_shapes=shapes)
    assert not result.passed, result.summary()


def ill_conditioned(bias: float = 1e4, scale: float = 0.05, channels: int = 16) -> onnx.ModelProto:
    """y = Conv(MaxPool(Relu(x)), bias b) - b with b = 1e4: the output is the conv's small value
    read off a sum of 1e4, so any reordering of that sum moves it by an ulp of 1e4 (1e-3). The
    optimizer's floor is then large for the output, and honest: rounding, not a fault."""
    rng = np.random.default_rng(0)
    c = channels
    inits = [numpy_helper.from_array((rng.normal(size=(c, c, 3, 3)) * scale).astype(np.float32), "w"),
             numpy_helper.from_array(np.full((c,), bias, np.float32), "b"), numpy_helper.from_array(np.array(bias, np.float32), "big")]
    nodes = [helper.make_node("Relu", ["x"], ["rx"]), helper.make_node("MaxPool", ["rx"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Conv", ["p", "w", "b"], ["t"], pads=[1, 1, 1, 1]), helper.make_node("Sub", ["t", "big"], ["y"])]
    graph = helper.make_graph(nodes, "ill", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_an_ill_conditioned_but_honest_original_keeps_its_floor():
    """The other half of the fault check: a large optimizer floor that rounding explains is measured
    (the rounding floor is at least as large) and stays a floor; the rewrite passes, with no warning."""
    model = ill_conditioned()
    reference = record_reference(model)
    judged = [f for run in reference.noise for f in run.values() if f.rounding is not None]
    assert judged and all(f.fault is None and f.rounding >= f.max_abs for f in judged)
    assert not reference.warnings
    new, report = rewrite_model(model)
    assert report.rewritten and validate_models(model, new).passed
