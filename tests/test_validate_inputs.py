"""Validation's data loader on the inputs real models have: scalars, 1-D, bool and
integer inputs beside an image; suites in the input's own dtype; a memory plan
that refuses what cannot fit before allocating it; nothing big held for every suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rewriter import rewrite_model
from rewriter.validate import memory as budget
from rewriter.validate import (
    ALL_NEGATIVE,
    DEFAULT_SUITES,
    SIGNED_NORMAL,
    TIE_HEAVY,
    WIDE_RANGE,
    InputDescription,
    ValidationSetupError,
    make_feeds,
    record_reference,
    validate_models,
)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewriter", *map(str, args)], capture_output=True, text=True, timeout=120)


def mixed_inputs_model() -> onnx.ModelProto:
    """An image through a MaxPool, with scalar float/bool/int and 1-D float/int/bool
    inputs that really take part (Mul, Add, Where, And)."""
    info = helper.make_tensor_value_info
    nodes = [
        helper.make_node("MaxPool", ["image"], ["pooled"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["pooled", "scale"], ["scaled"], name="mul"),
        helper.make_node("Add", ["scaled", "bias"], ["shifted"], name="add"),
        helper.make_node("Where", ["flag", "shifted", "pooled"], ["y"], name="where"),
        helper.make_node("Add", ["ids", "offset"], ["ids_out"], name="add_ids"),
        helper.make_node("And", ["mask", "flag"], ["mask_out"], name="and"),
    ]
    inputs = [
        info("image", TensorProto.FLOAT, [1, 3, 9, 9]),
        info("scale", TensorProto.FLOAT, []),
        info("flag", TensorProto.BOOL, []),
        info("offset", TensorProto.INT64, []),
        info("bias", TensorProto.FLOAT, [5]),
        info("ids", TensorProto.INT64, [4]),
        info("mask", TensorProto.BOOL, [4]),
    ]
    outputs = [info("y", TensorProto.FLOAT, [1, 3, 5, 5]), info("ids_out", TensorProto.INT64, [4]), info("mask_out", TensorProto.BOOL, [4])]
    graph = helper.make_graph(nodes, "mixed", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_scalar_1d_bool_and_integer_inputs_validate():
    original = mixed_inputs_model()
    rewritten, report = rewrite_model(original)
    assert [n.name for n in report.rewritten] == ["pool"]
    result = validate_models(original, rewritten)
    assert result.passed, result.summary()
    assert {c.suite for c in result.comparisons if c.passed and not c.note} >= {s.name for s in DEFAULT_SUITES}
    assert {c.output for c in result.comparisons} == {"y", "ids_out", "mask_out"}
    assert [(n.name, n.passed) for n in result.nodes] == [("pool", True)]


def test_scalar_inputs_still_catch_a_wrong_candidate():
    original = mixed_inputs_model()
    wrong = mixed_inputs_model()
    wrong.graph.node[1].op_type = "Add"  # pooled + scale instead of pooled * scale
    result = validate_models(original, wrong)
    assert not result.passed and result.worst.output == "y"


def test_scalar_inputs_through_the_cli(tmp_path):
    onnx.save(mixed_inputs_model(), tmp_path / "in.onnx")
    proc = cli(tmp_path / "in.onnx", tmp_path / "out.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "validation passed" in proc.stdout and (tmp_path / "out.onnx").exists()
    proc = cli("--compare", tmp_path / "in.onnx", tmp_path / "out.onnx")
    assert proc.returncode == 0 and "validation passed" in proc.stdout, proc.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.bool_, np.int64, np.int32, np.uint8])
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 5)])
def test_suites_give_arrays_of_the_input_dtype(dtype, shape):
    for suite in DEFAULT_SUITES:
        feeds = make_feeds([InputDescription("x", shape, np.dtype(dtype))], suite, seed=3)
        assert type(feeds["x"]) is np.ndarray and feeds["x"].shape == shape and feeds["x"].dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_suites_keep_their_meaning_and_their_seed(dtype):
    described = [InputDescription("x", (3, 1000, 700), np.dtype(dtype))]  # past one generation block
    values = {s.name: make_feeds(described, s, seed=11)["x"] for s in DEFAULT_SUITES}
    for suite in DEFAULT_SUITES:
        np.testing.assert_array_equal(make_feeds(described, suite, seed=11)["x"], values[suite.name])
        assert not np.array_equal(make_feeds(described, suite, seed=12)["x"], values[suite.name])
    normal = values[SIGNED_NORMAL.name].astype(np.float32)
    assert abs(float(normal.mean())) < 0.01 and abs(float(normal.std()) - 1) < 0.01
    assert float(values[ALL_NEGATIVE.name].max()) <= -0.25
    ties = values[TIE_HEAVY.name]
    assert set(np.unique(ties).tolist()) == set(range(-10, 11))
    wide = values[WIDE_RANGE.name].astype(np.float64)
    decades = np.log10(np.abs(wide))
    top = 3 if dtype == np.float16 else 6
    assert np.isfinite(wide).all() and decades.min() < -top + 0.1 and decades.max() > top - 0.1
    assert 0.49 < float((wide < 0).mean()) < 0.51
    # Spread evenly over the decades, on both signs.
    counts = np.histogram(decades, bins=2 * top)[0]
    assert counts.min() > 0.9 * counts.mean()


def global_average_pool_model(shape: list[int]) -> onnx.ModelProto:
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")], "gap",
        [info("x", TensorProto.FLOAT, shape)], [info("y", TensorProto.FLOAT, shape[:2] + [1, 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


HUGE = [1, 64, 30000, 30000]  # 230 GB of float32 per suite


def test_a_huge_input_is_refused_before_anything_is_allocated():
    model = global_average_pool_model(HUGE)
    with pytest.raises(ValidationSetupError, match=r"validation would need about [\d.]+ GiB of memory .* GiB is available.*--overwrite-input-shape x:D0,D1,D2,D3"):
        record_reference(model)
    with pytest.raises(ValidationSetupError, match="GiB"):
        make_feeds([InputDescription("x", tuple(HUGE), np.dtype(np.float32))], SIGNED_NORMAL)


@pytest.mark.parametrize("mode", ["rewrite", "compare"])
def test_cli_refuses_a_huge_input_in_one_line(tmp_path, mode):
    onnx.save(global_average_pool_model(HUGE), tmp_path / "huge.onnx")
    args = [tmp_path / "huge.onnx", tmp_path / "out.onnx"]
    if mode == "compare":
        onnx.save(global_average_pool_model(HUGE), tmp_path / "out.onnx")
        args = ["--compare", *args]
    proc = subprocess.run([sys.executable, "-m", "rewriter", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "GiB of memory" in lines[0] and "--overwrite-input-shape x:" in lines[0] and "internal error" not in lines[0]
    if mode == "rewrite":
        assert "--no-validate" in lines[0] and not (tmp_path / "out.onnx").exists()


def test_the_reference_holds_no_suite_inputs():
    """Suites are regenerated from their seed; an exposed graph input is not recorded."""
    model = global_average_pool_model([1, 8, 64, 64])
    reference = record_reference(model)
    input_bytes = 8 * 64 * 64 * 4
    assert reference.exposed == ["x"] and reference.held_bytes() < input_bytes // 100
    assert all(set(run) == {"y"} for run in reference.recorded)
    for index, suite in enumerate(DEFAULT_SUITES):
        expected = make_feeds(reference.inputs, suite, reference.seed)["x"]
        np.testing.assert_array_equal(reference.suite_feeds(index)["x"], expected)
        np.testing.assert_array_equal(reference.outputs[index]["x"], expected)  # the pool's input is the run's input
    names = [name for name, _ in reference.feeds]
    assert names == [s.name for s in DEFAULT_SUITES] == reference.run_names


def test_big_recorded_activations_wait_on_disk(monkeypatch):
    monkeypatch.setattr(budget, "SPILL_MIN_BYTES", 1024)
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["n"], name="neg"), helper.make_node("MaxPool", ["n"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "g", [info("x", TensorProto.FLOAT, [1, 4, 16, 16])], [info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    reference = record_reference(model)
    kept = [run["n"] for run in reference.recorded]
    assert all(isinstance(k, Path) and k.exists() for k in kept) and reference.held_bytes() == 0
    x = reference.suite_feeds(0)["x"]
    np.testing.assert_array_equal(reference.recorded_output(0, "n"), -x)
    rewritten, _ = rewrite_model(model)
    result = validate_models(model, rewritten)
    assert result.passed and [n.passed for n in result.nodes] == [True], result.summary()
    zero_padded = onnx.ModelProto()
    zero_padded.CopyFrom(model)
    zero_padded.graph.node[1].attribute.pop()  # no pads: the output shrinks, the node check fails
    assert not validate_models(model, zero_padded).passed
    reference.close()
    assert not any(k.exists() for k in kept)
