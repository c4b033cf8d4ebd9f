"""Validation of quantized (QDQ) models (issue 16): exact comparisons at both onnxruntime
levels, node checks in integers, and the quantize_static models of tests/quantized.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantized as Q
from rewriter import rewrite_model
from rewriter.validate import validate_models
from rewriter.validate.quantized import exact_outputs

# The fixture's quant_pre_process: onnxruntime folds a BatchNormalization there from 1.31 on.
PRE_PROCESS_FOLDS_BATCHNORM = tuple(int(p) for p in __import__("onnxruntime").__version__.split(".")[:2]) >= (1, 31)

ROOT = Path(__file__).resolve().parents[1]
BOTH = ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def _shape(model: onnx.ModelProto, tensor: str) -> list[int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        if v.name == tensor:
            return [d.dim_value for d in v.type.tensor_type.shape.dim]
    raise KeyError(tensor)


def one_step_off(model: onnx.ModelProto, tensor: str, step: float, position: tuple[int, ...] = (0, 0, 0, 0)) -> onnx.ModelProto:
    """A copy of ``model`` whose float ``tensor`` (read by a QuantizeLinear of scale ``step``)
    is ``step`` higher at one ``position``: that Q's integer there is one step off."""
    new = _copy(model)
    shape = _shape(new, tensor)
    delta = np.zeros(shape, np.float32)
    delta[position[: len(shape)]] = step
    raw = f"{tensor}__raw"
    for node in new.graph.node:
        node.output[:] = [raw if o == tensor else o for o in node.output]
    new.graph.initializer.append(numpy_helper.from_array(delta, f"{tensor}__delta"))
    new.graph.node.append(helper.make_node("Add", [raw, f"{tensor}__delta"], [tensor], name=f"{tensor}__off"))
    return _topological(new)


def _topological(model: onnx.ModelProto) -> onnx.ModelProto:
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        assert ready, "cycle"
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        pending = [n for n in pending if n not in ready]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def _final_quantize(model: onnx.ModelProto) -> onnx.NodeProto:
    """The QuantizeLinear whose integers the graph output's DequantizeLinear reads."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    dq = made_by[model.graph.output[0].name]
    assert dq.op_type == "DequantizeLinear"
    return made_by[dq.input[0]]


def _scale(model: onnx.ModelProto, name: str) -> float:
    return float(next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name))


@pytest.fixture(scope="module")
def stem() -> onnx.ModelProto:
    return Q.quantized("resnet_stem", Q.Quantization("int8", True, False))


# -- the quantizer's models are what tests/quantized.py says -----------------------------


@pytest.mark.parametrize("how", Q.GRID, ids=lambda h: h.label)
@pytest.mark.parametrize("name", list(Q.BUILDERS))
def test_quantize_static_puts_pools_between_dq_and_q(name: str, how: Q.Quantization) -> None:
    model = Q.quantized(name, how)
    float_pools = [n for n in Q.BUILDERS[name]().graph.node if n.op_type in Q.POOL_OPS]
    sites = {p.pool.name: p for p in Q.qdq_pools(model)}
    # Every pool of the float model sits between one DQ and Q(s) of the chosen 8-bit type.
    assert sorted(sites) == sorted(n.name for n in float_pools)
    dtype = np.int8 if how.activation == "int8" else np.uint8
    for site in sites.values():
        assert site.dtype == dtype
        if site.pool.op_type in ("MaxPool", "AveragePool"):
            # The quantizer shares the pool's scale and zero point across it.
            assert site.output_scales == [site.input_scale] and site.output_zero_points == [site.input_zero_point]
        else:  # GlobalAveragePool is not in its QDQ registry: its output Q has its own calibrated scale
            assert site.output_scales[0] != site.input_scale
    # Weights: int8 initializers, one scale per output channel when per channel.
    inits = {t.name: t for t in model.graph.initializer}
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dims.__len__() >= 2]
    assert weight_dqs
    for dq in weight_dqs:
        assert inits[dq.input[0]].data_type == TensorProto.INT8
        channels = int(np.prod(inits[dq.input[1]].dims, dtype=np.int64))
        assert (channels > 1) == how.per_channel
    # quant_pre_process folds the unfused BatchNormalization of the ResNet stem (onnxruntime
    # 1.31 on; before, it keeps it); without it the quantizer keeps it.
    has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
    folds = how.preprocess and PRE_PROCESS_FOLDS_BATCHNORM
    assert has_bn == (name == "resnet_stem" and not folds)


def test_rescaled_pool_has_another_output_scale(stem: onnx.ModelProto) -> None:
    model = Q.rescale_after_pool(stem, factor=1.5)
    (site,) = [p for p in Q.qdq_pools(model) if p.pool.op_type == "MaxPool"]
    assert site.output_scales[0] == pytest.approx(1.5 * site.input_scale)
    x = Q.integer_suites(model)["signed-normal"]
    assert not np.array_equal(Q.run(model, {"x": x})[0], Q.run(stem, {"x": x})[0])


def test_original_quantized_average_differs_between_levels() -> None:
    """Why a candidate is compared with the original at the same level: onnxruntime's
    QLinearAveragePool (ORT_ENABLE_ALL) rounds some ties of a 2x2 average otherwise than
    DequantizeLinear -> AveragePool -> QuantizeLinear as written (ORT_DISABLE_ALL)."""
    inits = [numpy_helper.from_array(np.array(0.02364, np.float32), "s"), numpy_helper.from_array(np.array(-128, np.int8), "z")]
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
        helper.make_node("AveragePool", ["d"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "avg", [helper.make_tensor_value_info("q", TensorProto.INT8, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    q = np.random.default_rng(0).integers(-128, 128, (1, 16, 16, 16)).astype(np.int8)
    written, fused = Q.run(model, {"q": q})[0], Q.run(model, {"q": q}, "ORT_ENABLE_ALL")[0]
    differ = np.abs(written.astype(int) - fused.astype(int))
    assert differ.max() == 1 and 0 < np.count_nonzero(differ) < differ.size // 4


# -- what is compared exactly --------------------------------------------------------------


def _qdq_chain(last: str) -> onnx.ModelProto:
    """x -> Q -> DQ -> MaxPool -> Q -> DQ -> ``last`` ("Flatten": a shape-only op; "Sigmoid": float compute;
    "int": the Q's integers are the output)."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int8), "z"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("MaxPool", ["xd"], ["pool"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["pool", "s", "z"], ["pq"]),
    ]
    out_type = TensorProto.FLOAT
    if last == "int":
        nodes[-1].output[0] = "y"
        out_type = TensorProto.INT8
    else:
        nodes.append(helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pd"]))
        nodes.append(helper.make_node("Reshape", ["pd", "shape"], ["y"]) if last == "Reshape" else helper.make_node(last, ["pd"], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
                              [helper.make_tensor_value_info("y", out_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("last, exact", [("int", True), ("Identity", True), ("Flatten", True), ("Reshape", True), ("Sigmoid", False)])
def test_exact_outputs_are_integers_and_dequantized_integers(last: str, exact: bool) -> None:
    assert exact_outputs(_qdq_chain(last)) == (["y"] if exact else [])


def test_float_model_keeps_its_path() -> None:
    """A float model: one level, nothing compared exactly, the tolerance path."""
    model = Q.BUILDERS["resnet_stem"]()
    assert exact_outputs(model) == []
    result = validate_models(model, _copy(model))
    assert result.passed and result.levels == ["ORT_DISABLE_ALL"] and result.exact_outputs == [] and result.exact_reference is None
    assert {c.level for c in result.comparisons} == {"ORT_DISABLE_ALL"} and not any(c.exact for c in result.comparisons)
    assert "quantized" not in result.summary()


@pytest.mark.parametrize("how", Q.ACCEPTANCE, ids=lambda h: h.label)
@pytest.mark.parametrize("name", ["resnet_stem", "vgg_densenet"])
def test_candidate_equal_to_original_passes_exactly_at_both_levels(name: str, how: Q.Quantization) -> None:
    model = Q.quantized(name, how)
    result = validate_models(model, _copy(model))
    assert result.passed, result.summary()
    assert result.levels == BOTH and result.exact_outputs == [model.graph.output[0].name]
    for level in BOTH:
        compared = [c for c in result.comparisons if c.level == level]
        assert len(compared) == len(result.suites) and all(c.exact and c.max_abs_error == 0 for c in compared)
    # Every pool is checked from its DQ's integers to its Q's integers, exactly.
    assert result.nodes and all(n.passed and n.exact and n.compared.endswith("QuantizeLinear_Output") for n in result.nodes)


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
def test_output_one_step_off_fails_at_both_levels(activation: str) -> None:
    """One step added to one value of the dequantized graph output: exactly that value
    differs at both levels. Only the output is touched, so the candidate runs the
    original's own kernels at each level, and this holds on every CPU."""
    model = Q.quantized("resnet_stem", Q.Quantization(activation, True, False))
    q = _final_quantize(model)
    output = model.graph.output[0].name
    step = _scale(model, q.input[1])
    candidate = one_step_off(model, output, step, (0, 1, 2, 3))
    result = validate_models(model, candidate)
    assert not result.passed
    for level in BOTH:
        failed = [c for c in result.comparisons if c.level == level and not c.passed]
        assert failed and all(c.output == output and c.exact and "1 of" in c.note for c in failed)
        assert all(c.max_abs_error == pytest.approx(step, rel=1e-6) for c in failed)  # one step of the output's scale
    summary = result.summary()
    assert f"worst output '{output}'" in summary and "exact comparison" in summary and "ran at ORT_DISABLE_ALL and ORT_ENABLE_ALL" in summary


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
def test_one_step_off_before_the_last_quantize_fails(activation: str) -> None:
    """One step added before the final QuantizeLinear: as written exactly that value differs.
    With the integer kernels the inserted Add unfuses the last conv from its Q, and the
    float conv then differs from QLinearConv on a CPU-dependent number of values (MLAS's
    u8s8 paths without VNNI): only "fails, compared exactly" is asserted there."""
    model = Q.quantized("resnet_stem", Q.Quantization(activation, True, False))
    q = _final_quantize(model)
    candidate = one_step_off(model, q.input[0], _scale(model, q.input[1]), (0, 1, 2, 3))
    result = validate_models(model, candidate)
    output = model.graph.output[0].name
    assert not result.passed
    written = [c for c in result.comparisons if c.level == "ORT_DISABLE_ALL" and not c.passed]
    assert written and all(c.output == output and c.exact and "1 of" in c.note for c in written)
    assert all(c.exact for c in result.comparisons if c.level == "ORT_ENABLE_ALL")


def test_integer_output_compared_exactly() -> None:
    model = _qdq_chain("int")
    candidate = one_step_off(model, "pool", 0.05, (0, 2, 3, 1))
    result = validate_models(model, candidate)
    assert result.exact_outputs == ["y"] and not result.passed
    failed = [c for c in result.comparisons if not c.passed and c.output == "y"]
    assert {c.level for c in failed} == set(BOTH) and all(c.exact and c.max_abs_error == 1 for c in failed)
    # The pool's node check ends at its Q: one integer step, naming the node.
    (node,) = result.nodes
    assert node.name == "pool" and node.passed is False and node.exact and node.max_abs_error == 1
    assert "failing node(s): 'pool'" in result.summary()
    assert validate_models(model, _copy(model)).passed


def test_dequantized_output_one_ulp_off_fails_while_float_output_passes() -> None:
    """A float output made by DequantizeLinear is compared exactly: one ulp fails. A float
    output computed from it (Sigmoid) keeps the tolerance: the same ulp passes."""

    def nudged(model: onnx.ModelProto) -> onnx.ModelProto:
        new = _copy(model)
        for node in new.graph.node:
            node.output[:] = ["y_raw" if o == "y" else o for o in node.output]
        new.graph.initializer.append(numpy_helper.from_array(np.array(1 + 2.0**-23, np.float32), "nudge"))
        new.graph.node.append(helper.make_node("Mul", ["y_raw", "nudge"], ["y"]))
        return new

    exact_model, float_model = _qdq_chain("Flatten"), _qdq_chain("Sigmoid")
    exact = validate_models(exact_model, nudged(exact_model))
    assert not exact.passed and all(c.exact for c in exact.comparisons if c.output == "y")
    tolerant = validate_models(float_model, nudged(float_model))
    assert tolerant.passed, tolerant.summary()
    assert tolerant.levels == BOTH and tolerant.exact_outputs == []
    assert not any(c.exact for c in tolerant.comparisons) and any(c.max_abs_error > 0 for c in tolerant.comparisons)


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
def test_rewritten_pool_one_step_off_fails_naming_the_node(activation: str) -> None:
    """The rewriter's own output, then one step added at one position of the rewritten
    MaxPool's result: its node check (in integers, after its Q) fails and names it."""
    model = Q.quantized("resnet_stem", Q.Quantization(activation, True, False))
    rewritten, report = rewrite_model(model)
    assert [n.status for n in report.nodes] == ["rewritten"]
    assert validate_models(model, rewritten).passed  # the rewrite is exact: no false alarm
    (site,) = Q.qdq_pools(model)
    candidate = one_step_off(rewritten, site.pool.output[0], site.output_scales[0], (0, 3, 1, 2))
    result = validate_models(model, candidate)
    assert not result.passed
    (node,) = result.failed_nodes
    assert node.name == "stem/maxpool" and node.exact and node.max_abs_error == 1 and node.compared == site.quantize[0].output[0]
    assert "failing node(s): 'stem/maxpool'" in result.summary()


def test_report_fields_from_the_cli(tmp_path: Path, stem: onnx.ModelProto) -> None:
    source, target, report = tmp_path / "q.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(stem, source)
    run = subprocess.run([sys.executable, "-m", "rewriter", str(source), str(target), "--report", str(report)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    validation = json.loads(report.read_text())["validation"]
    assert validation["levels"] == BOTH and validation["exact_outputs"] == ["head"]
    assert validation["exact_reference"] == "the original at the same onnxruntime graph-optimization level"
    assert {(c["level"], c["exact"]) for c in validation["comparisons"]} == {(level, True) for level in BOTH}
    assert all(o["exact"] and o["error"] == 0 for o in validation["outputs"])
    assert [(n["name"], n["exact"], n["compared"]) for n in validation["nodes"]] == [("stem/maxpool", True, Q.qdq_pools(stem)[0].quantize[0].output[0])]
    assert "'head' compared exactly" in run.stdout and "exact" in run.stdout.split("verdict")[-1]


def test_node_check_in_integers_runs_at_both_levels() -> None:
    """A QDQ node check also runs at ORT_ENABLE_ALL. The candidate's conv (weights 1/4,
    exact at scale 0.25) rounds the 2x2 ties like the original's float path, but the
    original's QLinearAveragePool adds the odd zero point -3 before rounding: with ties
    exact (allow_ties=False) the check passes as written and fails at the integer kernels,
    naming that level; by default it passes, counting the tie outputs."""
    inits = [numpy_helper.from_array(np.array(0.25, np.float32), "s"), numpy_helper.from_array(np.array(-3, np.int8), "z")]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq"),
         helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"], name="q")],
        "avg", [helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    candidate = _copy(model)
    pool = next(n for n in candidate.graph.node if n.op_type == "AveragePool")
    candidate.graph.initializer.extend([numpy_helper.from_array(np.ones([4, 1, 2, 2], np.int8), "wq"),
                                        numpy_helper.from_array(np.array(0.25, np.float32), "ws")])
    weights = helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="wdq")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="pool_conv", group=4, kernel_shape=[2, 2], strides=[2, 2])
    index = list(candidate.graph.node).index(pool)
    candidate.graph.node.remove(pool)
    candidate.graph.node.insert(index, conv)
    candidate.graph.node.insert(index, weights)
    strict = validate_models(model, candidate, allow_ties=False)
    (node,) = strict.nodes
    assert node.exact and node.levels == BOTH
    assert node.passed is False and node.level == "ORT_ENABLE_ALL", (node.passed, node.level, node.note)
    assert all(c.passed for c in strict.comparisons if c.level == "ORT_DISABLE_ALL")
    # By default those outputs are ties (their exact means are half steps): one step allowed there.
    result = validate_models(model, candidate)
    (node,) = result.nodes
    assert result.passed and node.passed and node.tie_outputs > 0 and node.tie_outputs_rounded_otherwise > 0, result.summary()


# One 4x4 window whose sum of q - 17 is 371: its mean at scales 0.1 -> 0.0371 (zero point -20)
# is 62.5000036 steps, within float32 rounding of a tie; QLinearAveragePool rounds it up, the
# rewrite's conv down (measured on onnxruntime 1.32).
NEAR_TIE_WINDOW = [-67, 29, 67, -30, -11, 127, 78, 123, -31, 47, 115, 38, 87, 48, 52, -29]


def near_tie_model() -> onnx.ModelProto:
    """xq -> DQ -> AveragePool 4x4 (scales 0.1 -> 0.0371) -> Q, and DQ -> MaxPool 2x2 -> Q beside it."""
    inits = [numpy_helper.from_array(np.array(v, dtype), n) for v, dtype, n in
             [(0.1, np.float32, "s"), (17, np.int8, "z"), (0.0371, np.float32, "so"), (-20, np.int8, "zo")]]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq"),
         helper.make_node("AveragePool", ["x"], ["y"], name="mean", kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("QuantizeLinear", ["y", "so", "zo"], ["yq"], name="q"),
         helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x2"], name="dq2"),
         helper.make_node("MaxPool", ["x2"], ["m"], name="max", kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"], name="q2")],
        "near_tie", [helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 1, 1, 1]), helper.make_tensor_value_info("mq", TensorProto.INT8, [1, 1, 2, 2])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_cli_keeps_a_mean_its_validation_refuses_and_writes_the_rest(tmp_path: Path) -> None:
    """Exact or refused, with --keep-tie-averages: a mean at the model's scales whose window
    meets a near tie on the user's inputs fails its node check; the CLI keeps that node
    with the reason, rewrites the others again, validates again and writes the model (exit 0).
    By default the near tie is allowed one step: both rewritten, the tie output counted."""
    model = near_tie_model()
    source, out, report_path, inputs = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "r.json", tmp_path / "x.npz"
    onnx.save(model, source)
    np.savez(inputs, xq=np.array(NEAR_TIE_WINDOW, np.int8).reshape(1, 1, 4, 4))
    from rewriter import cli

    args = [str(source), str(out), "--inputs", str(inputs), "--report", str(report_path), "-q"]
    assert cli.main(args + ["--keep-tie-averages"]) == 0
    report = json.loads(report_path.read_text())
    rows = {n["name"]: n for n in report["nodes"]}
    assert rows["max"]["status"] == "rewritten"
    assert rows["mean"]["status"] == "kept" and rows["mean"]["reason"].startswith("validation:"), rows["mean"]
    assert "ORT_ENABLE_ALL" in rows["mean"]["reason"]
    assert report["validation"]["passed"] and any("validation refused" in note for note in report["notes"])
    written = onnx.load(out)
    assert [n.op_type for n in written.graph.node].count("AveragePool") == 1 and "MaxPool" not in [n.op_type for n in written.graph.node]

    assert cli.main(args) == 0
    report = json.loads(report_path.read_text())
    assert [n["status"] for n in report["nodes"]] == ["rewritten", "rewritten"] and report["validation"]["passed"]
    checks = {n["name"]: n for n in report["validation"]["nodes"]}
    assert checks["mean"]["tie_outputs"] >= 1 and checks["mean"]["tie_outputs_rounded_otherwise"] >= 1, checks["mean"]
    assert checks["max"]["tie_outputs"] == 0
    assert "AveragePool" not in [n.op_type for n in onnx.load(out).graph.node]


def test_rewrite_validated_keeps_what_validation_refuses() -> None:
    """The Python API does what the CLI does: with keep_tie_averages the refused mean kept
    with the reason, the max rewritten, the final validation passed; without the near tie,
    or by default (one step allowed at the tie), both rewritten."""
    from rewriter import rewrite_validated

    model = near_tie_model()
    window = {"xq": np.array(NEAR_TIE_WINDOW, np.int8).reshape(1, 1, 4, 4)}
    written, report, result = rewrite_validated(model, validation={"user_inputs": window}, keep_tie_averages=True)
    rows = {n.name: n for n in report.nodes}
    assert rows["mean"].status == "kept" and rows["mean"].reason.startswith("validation:"), rows["mean"].reason
    assert rows["max"].status == "rewritten" and result.passed and report.validation["passed"]
    assert any("validation refused" in note for note in report.notes)
    _, report, result = rewrite_validated(model, keep_tie_averages=True)
    assert [n.status for n in report.nodes] == ["rewritten", "rewritten"] and result.passed
    _, report, result = rewrite_validated(model, validation={"user_inputs": window})
    assert [n.status for n in report.nodes] == ["rewritten", "rewritten"] and result.passed, result.summary()
    (mean,) = [n for n in result.nodes if n.name == "mean"]
    assert mean.tie_outputs >= 1


@pytest.fixture(scope="module")
def densenet() -> onnx.ModelProto:
    return Q.quantized("vgg_densenet", Q.Quantization("int8", True, False))


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def test_tie_rewrite_validated_with_its_effect_reported(densenet: onnx.ModelProto) -> None:
    """DenseNet's 2x2 average at quantize_static's shared scale: rewritten; its node check
    counts the tie outputs; an exact output that differs is explained by them (exact with
    the original's averages back in), reported next to the original's own level gap."""
    rewritten, report = rewrite_model(densenet)
    assert all(n.status == "rewritten" for n in report.nodes)
    result = validate_models(densenet, rewritten)
    assert result.passed, result.summary()
    checks = {n.name: n for n in result.nodes}
    assert checks["dense/avgpool"].tie_outputs > 0 and checks["dense/avgpool"].tie_outputs_rounded_otherwise > 0
    assert checks["vgg/maxpool"].tie_outputs == 0
    explained = [c for c in result.comparisons if c.max_abs_error > 0]
    assert explained and all(c.passed and c.tie_effect and c.level_disagreement is not None and "only by the tie outputs" in c.note
                             for c in explained)
    assert "tie_effect" in result.tolerance
    strict = validate_models(densenet, rewritten, allow_ties=False)
    assert not strict.passed and "dense/avgpool" in [n.name for n in strict.failed_nodes]


def test_tie_rewrite_one_step_off_outside_ties_refused(densenet: onnx.ModelProto) -> None:
    """Negative control: the rewritten average one step higher at one output, on every
    input: that output is no tie on most inputs, and the node check fails, naming it."""
    rewritten, _ = rewrite_model(densenet)
    output = _node(densenet, "dense/avgpool").output[0]
    q = next(n for n in densenet.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == output)
    candidate = one_step_off(rewritten, output, _scale(densenet, q.input[1]), (0, 5, 3, 2))
    result = validate_models(densenet, candidate)
    assert not result.passed and [n.name for n in result.failed_nodes] == ["dense/avgpool"], result.summary()
    assert "outside QuantizeLinear ties" in result.failed_nodes[0].note


def test_tie_rewrite_with_a_wrong_divisor_refused() -> None:
    """Negative control: Inception's count_include_pad=0 average replaced by one with
    count_include_pad=1 (the border windows divided by 9): refused at the node."""
    model = Q.quantized("inception", Q.Quantization("uint8", True, False))
    candidate = _copy(model)
    pool = _node(candidate, "inc/avgpool")
    pool.attribute.remove(next(a for a in pool.attribute if a.name == "count_include_pad"))
    pool.attribute.append(helper.make_attribute("count_include_pad", 1))
    result = validate_models(model, candidate)
    assert not result.passed and [n.name for n in result.failed_nodes] == ["inc/avgpool"], result.summary()
    rewritten, _ = rewrite_model(model)
    assert validate_models(model, rewritten).passed  # the rewrite itself: no false alarm


def test_tie_rewrite_with_a_fault_downstream_refused(densenet: onnx.ModelProto) -> None:
    """Negative control end to end: the rewrite, with the final Gemm's weights 2% off. The
    node checks pass, but with the original's averages back in the output still differs."""
    rewritten, _ = rewrite_model(densenet)
    candidate = _copy(rewritten)
    gemm = next(n for n in candidate.graph.node if n.op_type == "Gemm")
    made_by = {o: n for n in candidate.graph.node for o in n.output}
    weights = made_by[gemm.input[1]]  # DequantizeLinear of the int8 weights
    scale = next(t for t in candidate.graph.initializer if t.name == weights.input[1])
    scale.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(scale) * 1.02).astype(np.float32), scale.name))
    result = validate_models(densenet, candidate)
    assert not result.passed and not result.failed_nodes, result.summary()
    assert any("not only by the tie outputs" in c.note for c in result.comparisons if not c.passed) or any(
        not c.passed and c.max_abs_error > 2 * (c.tie_effect or 0) for c in result.comparisons)
