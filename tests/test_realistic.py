"""The stand-in models (tests/realistic.py) and bug mutators (tests/bugs.py) are what they claim.

Fast: builds each model, runs it on onnxruntime, checks each mutator's
candidate runs with the same output shapes and differs from the original far
beyond rounding, at the broken pool's output and at the graph outputs.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import bugs
import realistic
from rewriter.validate.runners import stale_value_info
from helpers import run


@functools.lru_cache(maxsize=None)
def _model(name: str, dynamic: bool) -> onnx.ModelProto:
    return realistic.BUILDERS[name](dynamic=dynamic)


def _with_output(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    new = onnx.ModelProto()
    new.CopyFrom(model)
    new.graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return new


def _rel(ref: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(other.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(realistic.BUILDERS))
def test_builder_model_is_valid_and_runs(name, dynamic):
    model = _model(name, dynamic)
    onnx.checker.check_model(model, full_check=True)
    assert realistic.pool_counts(model) == realistic.POOLS[name]
    feeds = realistic.example_feeds(model)
    # The dynamic forms carry value_info computed from -1 dims, which onnxruntime's NCHWc
    # optimizer trusts and miscomputes with on some CPUs (where its block size divides the
    # channels): validation runs them without it (stale_value_info), and so does this check.
    plain, optimized = run(model, feeds), run(_without_stale_value_info(model), feeds, optimize=True)
    for out, a, b in zip(model.graph.output, plain, optimized):
        assert np.isfinite(a).all() and np.abs(a).max() > 0, out.name
        assert _rel(a, b) < 1e-3, out.name  # optimizer noise, not a different network
        dims = [d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim]
        assert len(dims) == a.ndim and all(d in (None, -1, n) for d, n in zip(dims, a.shape)), (out.name, dims, a.shape)
    declared = {vi.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    deploy = realistic.deploy_shapes(model)
    assert set(declared) == set(deploy)
    for input_name, dims in declared.items():
        if dynamic:
            assert any(d == -1 or isinstance(d, str) for d in dims), dims
            assert bool(model.graph.value_info)  # stale once the shapes are fixed
        else:
            assert dims == deploy[input_name]


def _without_stale_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    if not stale_value_info(model):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    return copy


def test_builders_are_deterministic():
    assert realistic.mtcnn_pnet().SerializeToString() == realistic.mtcnn_pnet().SerializeToString()
    assert realistic.mtcnn_pnet(seed=1).SerializeToString() != realistic.mtcnn_pnet().SerializeToString()


def test_activations_stay_order_one_through_depth():
    """BN calibration: no pool input of the deepest model blows up or dies out."""
    model = _model("ocr_se_recognizer", False)
    pools = [n for n in model.graph.node if n.op_type.endswith("Pool")]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in pools:
        probe.graph.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    values = run(probe, realistic.example_feeds(model, seed=3))[len(model.graph.output):]
    for n, v in zip(pools, values):
        assert 0.05 < float(np.std(v)) < 20, (n.name, float(np.std(v)))


def test_paddle_question_dims_share_one_dim_param():
    model = realistic.paddle_det(dynamic=True, dim_style="question")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["?", "?"] and dims[0].dim_value == -1
    assert realistic.overwrite_input_shape_args(model) == ["--overwrite-input-shape", "x:1,3,72,72"]
    run(model, realistic.example_feeds(model, shapes={"x": [1, 3, 40, 72]}))  # H != W under one "?"


def test_keras_pools_are_what_tf2onnx_writes():
    nodes = {n.name: n for n in _model("keras_nhwc_classifier", False).graph.node}
    avg = {a.name: helper.get_attribute_value(a) for a in nodes["average_pooling2d"].attribute}
    assert avg["auto_pad"] == b"SAME_UPPER" and avg["count_include_pad"] == 0
    assert _model("keras_nhwc_classifier", False).graph.input[0].type.tensor_type.shape.dim[3].dim_value == 3


def test_text_model_takes_int64_ids():
    model = _model("text_1d_classifier", True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    (probs,) = run(model, {"input_ids": np.array([[0, 5, 7, 255, 3, 3, 3, 1] * 4], np.int64)})
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("case", bugs.CASES, ids=lambda c: c.id)
def test_mutant_runs_keeps_shapes_and_differs(case):
    original, candidate = case.build()
    onnx.checker.check_model(candidate, full_check=True)
    pool_output = next(n for n in original.graph.node if n.name == case.node).output[0]
    assert pool_output in {o for n in candidate.graph.node for o in n.output}
    feeds = realistic.example_feeds(original, seed=1)
    ref = run(_with_output(original, pool_output), feeds)
    got = run(_with_output(candidate, pool_output), feeds)
    assert [a.shape for a in ref] == [b.shape for b in got]
    assert _rel(ref[-1], got[-1]) > 1e-3  # the pool itself: far beyond a few ulps
    assert max(_rel(a, b) for a, b in zip(ref[:-1], got[:-1])) > 1e-4  # and it shows downstream
    assert original.SerializeToString() == case.build()[0].SerializeToString()  # the original is untouched


def test_every_bug_class_has_cases_on_two_models():
    by_class: dict[str, set[str]] = {}
    for case in bugs.CASES:
        by_class.setdefault(case.mutator.__name__, set()).add(case.builder)
    assert set(by_class) == {"zero_padded_maxpool", "average_missing_column", "dropped_ceil_window",
                             "flipped_count_include_pad", "pool_on_wrong_tensor"}
    assert all(len(models) >= 2 for models in by_class.values()), by_class


def test_mutators_refuse_what_they_cannot_break():
    with pytest.raises(ValueError, match="ceil_mode adds no window"):
        bugs.dropped_ceil_window(realistic.mtcnn_pnet(size=25))
    with pytest.raises(ValueError, match="dynamic input dim|unknown"):
        bugs.dropped_ceil_window(_model("mtcnn_pnet", True))
    with pytest.raises(ValueError, match="no MaxPool with explicit non-zero pads named 'max_pooling2d'"):
        bugs.zero_padded_maxpool(_model("keras_nhwc_classifier", False), "max_pooling2d")


def test_replace_last_window_on_any_tensor():
    original = _model("mtcnn_pnet", False)
    candidate = bugs.replace_last_window(original, "prob1")
    feeds = realistic.example_feeds(original)
    (ref, _), (got, _) = run(original, feeds), run(candidate, feeds)
    np.testing.assert_array_equal(got[..., :-1, :-1], ref[..., :-1, :-1])
    np.testing.assert_array_equal(got[..., -1, :-1], ref[..., -2, :-1])
    assert _rel(ref, got) > 1e-3


def test_rewire_rewritten_pool():
    from rewriter import rewrite_model

    original = _model("yolo_sppf_detector", False)
    rewritten, _ = rewrite_model(original)
    feeds = realistic.example_feeds(original)
    ref = run(original, feeds)
    assert max(_rel(a, b) for a, b in zip(ref, run(rewritten, feeds))) < 1e-3
    pre_silu = next(n for n in original.graph.node if n.name == "sppf/m1").input[0]
    pre_silu = next(n for n in original.graph.node if n.output[0] == pre_silu).input[0]
    candidate = bugs.rewire_rewritten_pool(rewritten, "sppf/m1", pre_silu)
    assert max(_rel(a, b) for a, b in zip(ref, run(candidate, feeds))) > 1e-3


TORCH_DATA = Path(__file__).parent / "data" / "torch"
TORCH_DYNAMIC = {  # export -> (pool ops it holds, two shapes its dynamic axes accept)
    "ocr_se.ts13_dynhw.onnx": ({"GlobalAveragePool": 3, "MaxPool": 1, "AveragePool": 1}, [(1, 3, 32, 48), (2, 3, 32, 80)]),
    "ocr_se.dynamo_dynhw.onnx": ({"ReduceMean": 3, "MaxPool": 1, "AveragePool": 1}, [(1, 3, 32, 48), (2, 3, 32, 80)]),
    "yolo_sppf.ts13_dynhw.onnx": ({"MaxPool": 3}, [(1, 3, 64, 64), (2, 3, 96, 48)]),
    "yolo_sppf.dynamo_dynhw.onnx": ({"MaxPool": 3}, [(1, 3, 64, 64), (2, 3, 96, 48)]),
}


@pytest.mark.parametrize("name", sorted(TORCH_DYNAMIC))
def test_torch_dynamic_exports_are_dynamic_and_run(name):
    """The committed PyTorch exports (scripts/export_torch_blocks.py) free batch and width (and height)."""
    pools, shapes = TORCH_DYNAMIC[name]
    model = onnx.load(TORCH_DATA / name)
    onnx.checker.check_model(model)
    counts = collections.Counter(n.op_type for n in model.graph.node if n.op_type in {*pools, "GlobalMaxPool"})
    assert dict(counts) == pools
    dims = model.graph.input[0].type.tensor_type.shape.dim
    free = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
    assert free == ([0, 3] if name.startswith("ocr") else [0, 2, 3])
    results = [run(model, {"x": np.random.default_rng(0).standard_normal(s).astype(np.float32)})[0] for s in shapes]
    assert results[0].shape != results[1].shape and all(np.isfinite(r).all() for r in results)
