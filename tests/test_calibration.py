"""End-to-end validation judged against the network's own rounding noise: no false
refusal of a correct rewrite of a deep network, while explicit tolerances stay strict."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rewriter import rewrite_model
from rewriter.validate.noise import NOISE_FACTOR, output_noise
from rewriter.validate import ToleranceComparator, record_reference, validate_models


def deep_se_net(depth: int = 8, channels: int = 16, size: int = 32, seed: int = 0, cancel: float = 1e-3) -> onnx.ModelProto:
    """A deep random-weight CNN: stem MaxPool, SE blocks (GlobalAveragePool,
    HardSigmoid) on HardSwish residual blocks, a count_include_pad=0 AveragePool,
    a GlobalAveragePool head with sigmoid and softmax outputs, and a regression
    head that cancels (two nearly equal convs subtracted), which amplifies any
    rounding upstream by 1/cancel."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(x: str, cin: int, cout: int, name: str, k: int = 3) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        return node("Conv", [x, init(f"{name}.w", w), init(f"{name}.b", 0.1 * rng.standard_normal(cout))], name, pads=[k // 2] * 4)

    def bn(x: str, c: int, name: str) -> str:
        stats = [1 + 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c), 1 + 0.1 * rng.random(c)]
        return node("BatchNormalization", [x] + [init(f"{name}.{i}", s) for i, s in enumerate(stats)], name)

    x = node("Relu", [bn(conv("x", 3, channels, "stem"), channels, "stem_bn")], "stem_relu")
    x = node("MaxPool", [x], "stem_pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for i in range(depth):
        c = node("HardSwish", [bn(conv(x, channels, channels, f"b{i}_conv"), channels, f"b{i}_bn")], f"b{i}_act")
        s = node("GlobalAveragePool", [c], f"b{i}_se_pool")
        s = node("Relu", [conv(s, channels, channels // 4, f"b{i}_se_fc1", k=1)], f"b{i}_se_relu")
        s = node("HardSigmoid", [conv(s, channels // 4, channels, f"b{i}_se_fc2", k=1)], f"b{i}_se_gate")
        x = node("Add", [x, node("Mul", [c, s], f"b{i}_se")], f"b{i}_out")
        if i == depth // 2:
            x = node("AveragePool", [x], f"b{i}_avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    logits = conv(node("GlobalAveragePool", [x], "head_pool"), channels, 10, "head_fc", k=1)
    node("Sigmoid", [logits], "scores")
    node("Softmax", [logits], "probs", axis=1)
    w = rng.standard_normal((4, channels, 1, 1))
    node("Sub", [node("Conv", [x, init("reg_a.w", w)], "reg_a"), node("Conv", [x, init("reg_b.w", w * (1 - cancel))], "reg_b")], "boxes")
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, "h", "w"]) for n, c in (("scores", 10), ("probs", 10), ("boxes", 4))]
    graph = helper.make_graph(nodes, "deep_se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def deep_pair():
    original = deep_se_net()
    candidate, report = rewrite_model(original)
    assert len(report.rewritten) == len(report.nodes) == 11
    return original, candidate


def test_correct_rewrite_of_a_deep_network_passes_within_its_noise(deep_pair):
    original, candidate = deep_pair
    result = validate_models(original, candidate)
    assert result.passed, result.summary()
    boxes = next(r for r in result.per_output() if r["output"] == "boxes")
    # The cancelling head: an error far past the fixed rtol, yet within the original's own noise.
    assert boxes["rel_error"] > 1e-5 and boxes["noise_floor"] > 0
    assert boxes["error"] <= NOISE_FACTOR * boxes["noise_floor"] and boxes["ratio"] == pytest.approx(boxes["error"] / boxes["noise_floor"])
    assert all(n.passed for n in result.nodes) and len(result.nodes) == 11  # every rewritten node checked alone


def test_explicit_tolerance_is_strict_and_says_every_node_matches(deep_pair):
    original, candidate = deep_pair
    result = validate_models(original, candidate, comparator=ToleranceComparator.explicit(rtol=1e-5))
    assert not result.passed
    assert all(n.passed for n in result.nodes)
    summary = result.summary()
    assert summary.startswith("validation FAILED: every node matches;") and "'boxes'" in summary
    assert result.to_dict()["tolerance"]["noise_floor"] is None


def test_noise_floor_is_the_optimized_original_against_itself(deep_pair):
    original, _ = deep_pair
    reference = record_reference(original)
    assert len(reference.noise) == len(reference.outputs) == 4
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(original.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for (suite, feeds), expected, floors in zip(reference.feeds, reference.outputs, reference.noise):
        optimized = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for name in ("scores", "probs", "boxes"):
            independent = float(np.max(np.abs(expected[name].astype(np.float64) - optimized[name])))
            assert floors[name].max_abs == pytest.approx(independent, rel=0, abs=0), (suite, name)


def test_output_noise_cannot_judge_disagreeing_non_finite_values():
    a = np.array([1.0, np.inf], np.float32)
    assert output_noise(a, np.array([1.0, 3.0], np.float32)).max_abs == float("inf")
    assert output_noise(a, np.array([1.5, np.inf], np.float32)).max_abs == 0.5
    assert output_noise(np.array([1, 2]), np.array([1, 3])).max_abs == float("inf")


def test_cli_report_shows_floor_error_ratio_and_verdict_per_output(deep_pair, tmp_path):
    original, _ = deep_pair
    src, out, report_path = tmp_path / "deep.onnx", tmp_path / "deep.conv.onnx", tmp_path / "r.json"
    onnx.save(original, src)
    run = subprocess.run([sys.executable, "-m", "rewriter.cli", str(src), str(out), "--report", str(report_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = {r["output"]: r for r in json.loads(report_path.read_text())["validation"]["outputs"]}
    assert set(rows) == {"scores", "probs", "boxes"}
    assert all(set(r) >= {"error", "noise_floor", "ratio", "allowed", "passed"} and r["passed"] for r in rows.values())
    assert "noise floor" in run.stdout and "boxes" in run.stdout
    strict = subprocess.run([sys.executable, "-m", "rewriter.cli", str(src), str(tmp_path / "x.onnx"), "--rtol", "1e-5"], capture_output=True, text=True)
    assert strict.returncode == 1 and "every node matches" in strict.stderr and not (tmp_path / "x.onnx").exists()
    assert len(strict.stderr.strip().splitlines()) == 1


def _cancelling_pools() -> onnx.ModelProto:
    """y = GlobalAveragePool(x) - ReduceMean(x): zero up to rounding, so any rounding of the
    rewritten average is the whole output, and no graph optimization changes either op."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["a"], name="A"),
        helper.make_node("ReduceMean", ["x"], ["b"], name="B", axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["a", "b"], ["y"], name="cancel"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 24, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_rounding_the_optimizer_never_changes_is_measured_by_moving_the_rewritten_nodes():
    original = _cancelling_pools()
    candidate, report = rewrite_model(original, exclude=["B"])
    assert [n.status for n in report.nodes] == ["rewritten", "kept"]
    result = validate_models(original, candidate)
    assert result.passed, result.summary()
    wide = next(c for c in result.comparisons if c.suite == "wide-range")
    assert wide.max_abs_error > 0 and wide.pool_noise is not None and wide.pool_noise >= wide.max_abs_error / NOISE_FACTOR
    assert "pool_noise_floor" in result.to_dict()["tolerance"]
    assert not validate_models(original, candidate, comparator=ToleranceComparator.explicit(atol=0.0)).passed


def test_moving_the_rewritten_nodes_does_not_excuse_a_real_drift():
    """Every node matches, but the candidate adds a constant after the pool: no floor covers it."""
    original = _cancelling_pools()
    candidate, _ = rewrite_model(original, exclude=["B"])
    sub = next(n for n in candidate.graph.node if n.name == "cancel")
    sub.output[0] = "y_exact"
    candidate.graph.initializer.append(numpy_helper.from_array(np.array(1e-3, np.float32), "drift"))
    candidate.graph.node.append(helper.make_node("Add", ["y_exact", "drift"], ["y"], name="drift"))
    result = validate_models(original, candidate)
    assert not result.passed and result.summary().startswith("validation FAILED: every node matches;"), result.summary()


def test_a_floor_that_could_not_be_measured_excuses_nothing():
    ref, cand = np.array([1.0, 2.0], np.float32), np.array([1.0, 2.5], np.float32)
    unknown = output_noise(ref, np.array([1.0, np.inf], np.float32))
    assert unknown.max_abs == float("inf")
    c = ToleranceComparator().compare("y", "s", ref, cand, unknown)
    assert not c.passed and c.allowed == c.strict_allowed and c.noise_ratio is None
    assert ToleranceComparator().compare("y", "s", ref, cand, output_noise(ref, np.array([1.0, 2.2], np.float32))).passed
