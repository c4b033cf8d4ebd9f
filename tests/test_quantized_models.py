"""Issues 16 and 21's acceptance: models quantized by onnxruntime's quantize_static (QDQ; int8
and uint8 activations; per-channel int8 weights; with and without quant_pre_process) from a
ResNet stem, SPPF on a signed input, VGG with a DenseNet 2x2 average and a global average
over 8x8, Inception with its count_include_pad=0 average and a global average over 7x7, a
PP-OCR-like SE recognizer, and a PP-OCR-recognizer-like head with a 3x2 average
(tests/quantized.py):

- every MaxPool and every average is rewritten (with keep_tie_averages, the averages whose
  window means can land on a QuantizeLinear tie are kept, with a reason);
- every generated Conv reads its data and its weights through DequantizeLinear, the
  weights from 8-bit initializers;
- every generated Conv, Add or Concat result is requantized before anything else reads it
  (by a QuantizeLinear, directly or through one Relu), and no other float compute is generated;
- a model whose rewritten pools cannot meet a tie (max pools; averages proven clear of
  ties) equals the original bit for bit on onnxruntime, with all graph optimizations and
  with none, on several input suites; the others differ by no more than a small multiple
  of the original's own disagreement between those two levels (one output step at least),
  and the validator passes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import quantized as Q
from rewriter import rewrite_model
from rewriter.validate import validate_models

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL")
GENERATED_OPS = {"Conv", "Relu", "Add", "Concat", "QuantizeLinear", "DequantizeLinear"}


def _window_count(node: onnx.NodeProto, model: onnx.ModelProto) -> int:
    """The number of values in each window: the kernel's size, or the input's spatial size."""
    if node.op_type == "GlobalAveragePool":
        inferred = onnx.shape_inference.infer_shapes(model)
        value = next(v for v in inferred.graph.value_info if v.name == node.input[0])
        return int(np.prod([d.dim_value for d in value.type.tensor_type.shape.dim[2:]]))
    kernel = next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "kernel_shape")
    return int(np.prod(kernel))


def _power_of_two_everywhere(node: onnx.NodeProto, model: onnx.ModelProto) -> bool:
    """Same power-of-two divisor in every window: unpadded (or padded with count_include_pad=1)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    padded = any(attrs.get("pads", [])) and not attrs.get("count_include_pad", 0)
    count = _window_count(node, model)
    return not padded and count & (count - 1) == 0


def _generated(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> list[onnx.NodeProto]:
    kept = {(n.op_type, tuple(n.input), tuple(n.output)) for n in original.graph.node}
    return [n for n in rewritten.graph.node if (n.op_type, tuple(n.input), tuple(n.output)) not in kept]


def check_structure(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> None:
    generated = _generated(original, rewritten)
    assert generated
    assert {n.op_type for n in generated} <= GENERATED_OPS, "float compute in a QDQ region"
    graph_outputs = {o.name for o in rewritten.graph.output}
    assert not [n.name for n in generated if n.op_type in ("Conv", "Add", "Concat") and n.output[0] in graph_outputs]
    assert Q.quantized_structure(original, rewritten) == []


def lone_pool_levels_differ(original: onnx.ModelProto, node: onnx.NodeProto, trials: int = 4) -> bool:
    """Whether the pool alone, ``DQ -> node -> Q`` with the model's own scales and zero
    points, gives other integers at ORT_ENABLE_ALL than at ORT_DISABLE_ALL on random
    integer inputs: then no rewrite can equal the original at both levels."""
    made_by = {o: n for n in original.graph.node for o in n.output}
    dq = made_by[node.input[0]]
    q = next(n for n in original.graph.node if node.output[0] in n.input and n.op_type == "QuantizeLinear")
    inits = {t.name: t for t in original.graph.initializer}
    names = [*dq.input[1:], *q.input[1:]]
    inferred = onnx.shape_inference.infer_shapes(original)
    value = next(v for v in list(inferred.graph.value_info) + list(inferred.graph.input) if v.name == dq.input[0])
    elem = value.type.tensor_type.elem_type
    shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("DequantizeLinear", ["xq", *dq.input[1:]], ["x"]),
         onnx.helper.make_node(node.op_type, ["x"], ["y"], **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}),
         onnx.helper.make_node("QuantizeLinear", ["y", *q.input[1:]], ["yq"])],
        "lone", [onnx.helper.make_tensor_value_info("xq", elem, shape)], [onnx.helper.make_tensor_value_info("yq", elem, None)],
        [inits[n] for n in dict.fromkeys(names) if n in inits],
    )
    lone = onnx.helper.make_model(graph, opset_imports=original.opset_import)
    lone.ir_version = original.ir_version
    rng = np.random.default_rng(0)
    lo, hi = (-128, 127) if elem == onnx.TensorProto.INT8 else (0, 255)
    dtype = np.int8 if elem == onnx.TensorProto.INT8 else np.uint8
    for _ in range(trials):
        x = rng.integers(lo, hi + 1, shape).astype(dtype)
        if not np.array_equal(*(Q.run(lone, {"xq": x}, level)[0] for level in LEVELS)):
            return True
    return False


def rescaled(original: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Whether the Q after ``node`` has another scale or zero point than the DQ before it."""
    made_by = {o: n for n in original.graph.node for o in n.output}
    dq = made_by[node.input[0]]
    q = next(n for n in original.graph.node if node.output[0] in n.input and n.op_type == "QuantizeLinear")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in original.graph.initializer}
    return any(not np.array_equal(inits[a], inits[b]) for a, b in zip(dq.input[1:], q.input[1:]))


def check_pools(original: onnx.ModelProto, report, keep_tie_averages: bool = False) -> None:
    """Every pool rewritten. With ``keep_tie_averages``: every MaxPool rewritten, and an
    average kept only where a window mean can land on a tie (one scale in and out: the
    quantizer gives global averages a scale of their own), saying so; a kept power-of-two
    average is one the original itself rounds differently at the two levels (shown here
    on the lone node)."""
    by_name = {n.name: n for n in original.graph.node}
    for entry in report.nodes:
        node = by_name[entry.name]
        if not keep_tie_averages or node.op_type in ("MaxPool", "GlobalMaxPool") or entry.status == "rewritten":
            assert entry.status == "rewritten", f"{entry.name}: {entry.reason}"
            continue
        assert not rescaled(original, node), f"{entry.name} has its own output scale, yet kept: {entry.reason}"
        assert "tie" in entry.reason and "keep_tie_averages" in entry.reason, entry.reason
        if _power_of_two_everywhere(node, original):
            assert lone_pool_levels_differ(original, node), f"{entry.name} kept, but onnxruntime agrees with itself on it: {entry.reason}"


# How many times the original's own disagreement between its levels (one output step at
# least) a rewrite with averages at ties may differ from the original at the same level.
TIE_MULTIPLE = 2


def _output_step(model: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear that makes the graph output."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    dq = made_by[model.graph.output[0].name]
    assert dq.op_type == "DequantizeLinear"
    return float(next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == dq.input[1]))


def check_bit_exact(original: onnx.ModelProto, rewritten: onnx.ModelProto, report=None) -> None:
    """Bit for bit at both levels, unless a rewritten average can meet a tie (its row has a
    note): then within TIE_MULTIPLE times the original's own disagreement between its levels."""
    ties = report is not None and any(n.note for n in report.rewritten)
    own, worst = 0.0, {level: 0.0 for level in LEVELS}
    for suite, x in Q.integer_suites(original).items():
        want = {level: Q.run(original, {"x": x}, level) for level in LEVELS}
        own = max(own, max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(*want.values())))
        for level in LEVELS:
            got = Q.run(rewritten, {"x": x}, level)
            for w, g in zip(want[level], got):
                assert w.dtype == g.dtype
                if not ties:
                    assert np.array_equal(w, g), f"{suite} at {level}: {np.count_nonzero(w != g)} values differ"
                worst[level] = max(worst[level], float(np.abs(w.astype(np.float64) - g).max()))
    allowed = TIE_MULTIPLE * max(own, _output_step(original))
    assert all(v <= allowed * (1 + 1e-6) for v in worst.values()), (worst, own, allowed)


@pytest.mark.parametrize("how", Q.ACCEPTANCE, ids=lambda h: h.label)
@pytest.mark.parametrize("name", list(Q.BUILDERS))
def test_quantized_model_rewritten_exactly(name: str, how: Q.Quantization) -> None:
    original = Q.quantized(name, how)
    rewritten, report = rewrite_model(original)
    check_pools(original, report)
    check_structure(original, rewritten)
    read = {i for n in rewritten.graph.node for i in n.input} | {o.name for o in rewritten.graph.output}
    assert [n.name for n in rewritten.graph.node if not set(n.output) & read] == []  # no DequantizeLinear left unread
    check_bit_exact(original, rewritten, report)
    result = validate_models(original, rewritten)
    assert result.passed and list(result.levels) == list(LEVELS), result.summary()


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
def test_per_tensor_weights(activation: str) -> None:
    original = Q.quantized("inception", Q.Quantization(activation, False, False))
    rewritten, report = rewrite_model(original)
    check_pools(original, report)
    check_structure(original, rewritten)
    check_bit_exact(original, rewritten, report)


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
@pytest.mark.parametrize("name", ["vgg_densenet", "inception", "ppocr_rec"])
def test_keep_tie_averages(name: str, activation: str) -> None:
    """keep_tie_averages, for users who need bit-exactness against onnxruntime: the averages
    at ties kept with the reason, everything else rewritten, bit-exact at both levels, and
    the validator compares every quantized output bit for bit (no tie allowed)."""
    original = Q.quantized(name, Q.Quantization(activation, True, False))
    rewritten, report = rewrite_model(original, keep_tie_averages=True)
    check_pools(original, report, keep_tie_averages=True)
    assert [n.name for n in report.nodes if n.status != "rewritten"], "nothing at ties kept"
    check_structure(original, rewritten)
    check_bit_exact(original, rewritten)
    result = validate_models(original, rewritten, allow_ties=False)
    assert result.passed and not any(c.tie_effect for c in result.comparisons), result.summary()


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
def test_pool_with_another_output_scale(activation: str) -> None:
    """The Q after the MaxPool has another scale than its input: rewritten exactly, or kept with a reason."""
    original = Q.rescale_after_pool(Q.quantized("resnet_stem", Q.Quantization(activation, True, False)))
    rewritten, report = rewrite_model(original)
    (entry,) = report.nodes
    assert entry.status == "rewritten" or entry.reason
    if entry.status == "rewritten":
        check_structure(original, rewritten)
    check_bit_exact(original, rewritten)


def test_cli_on_a_quantized_model(tmp_path: Path) -> None:
    source, target, report = tmp_path / "q.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(Q.quantized("sppf", Q.Quantization("int8", True, True)), source)
    run = subprocess.run([sys.executable, "-m", "rewriter", str(source), str(target), "--report", str(report), "-v"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    # -v names the level of every comparison and the levels of every node check.
    assert "  sppf/cv2  signed-normal  ORT_ENABLE_ALL " in run.stdout, run.stdout
    assert "ORT_DISABLE_ALL and ORT_ENABLE_ALL" in run.stdout
    data = json.loads(report.read_text())
    assert data["totals"]["kept"] == 0 and data["validation"]["passed"]
    assert data["validation"]["levels"] == list(LEVELS) and data["validation"]["exact_outputs"] == ["sppf/cv2"]
    check_structure(onnx.load(source), onnx.load(target))


@pytest.mark.parametrize("activation", Q.ACTIVATIONS)
@pytest.mark.parametrize("seed", [3, 11, 12])
def test_deep_random_quantized_networks(seed: int, activation: str) -> None:
    """Seeded random deep CNNs (max pools with ceil_mode, averages, SPPF, SE blocks, global
    pools), quantized by quantize_static: every max rewritten, structure kept, and the
    validator's exact comparison at both levels passes."""
    original = Q.quantize(Q.random_net(seed), Q.Quantization(activation, True, False), seed)
    rewritten, report = rewrite_model(original)
    check_pools(original, report)
    check_structure(original, rewritten)
    check_bit_exact(original, rewritten, report)
    result = validate_models(original, rewritten)
    assert result.passed and list(result.levels) == list(LEVELS), result.summary()


@pytest.mark.parametrize("name", ["sppf", "vgg_densenet"])
def test_graphsurgeon_pass_on_a_quantized_model(name: str) -> None:
    """PoolRewritePass.run_graph builds the same quantized subgraphs on an onnx-graphsurgeon
    Graph: structure kept, bit-exact at both levels."""
    import onnx_graphsurgeon as gs

    from rewriter import PoolRewritePass

    original = Q.quantized(name, Q.Quantization("int8", True, False))
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(original))
    report = PoolRewritePass().run_graph(graph)
    graph.cleanup().toposort()
    rewritten = gs.export_onnx(graph)
    check_pools(original, report)
    check_structure(original, rewritten)
    result = validate_models(original, rewritten)
    assert result.passed and list(result.levels) == list(LEVELS), result.summary()
