"""The exact means that decide which quantized outputs are QuantizeLinear ties
(rewriter/validate/ties.py, through rewriter/validate/exact.py) against onnxruntime's
AveragePool over a grid of attributes, and the CLI on a model with averages at ties."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rewriter.validate.ties import TieSite, tie_mask

ATTRS = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 2], strides=[3, 2]),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1, count_include_pad=1),
    dict(kernel_shape=[2, 3], strides=[2, 1], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 3], strides=[1, 2], auto_pad="SAME_LOWER", count_include_pad=1),
    dict(kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 1], pads=[1, 1, 1, 1]),
]


def _average(attrs: dict, shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], "avg",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("attrs", ATTRS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_exact_means_are_onnxruntimes_averages(attrs: dict) -> None:
    import onnxruntime as ort

    shape = [1, 2, 9, 10]
    n = np.random.default_rng(0).integers(-128, 128, shape).astype(np.float64)
    session = ort.InferenceSession(_average(attrs, shape).SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": n.astype(np.float32)})[0]
    site = TieSite("y", _average(attrs, shape), "xq", "x", "yq", 1.0, 1.0, 0, (-128, 127))
    t, bound = site.steps(n)
    assert t.shape == want.shape
    np.testing.assert_allclose(t, want, rtol=0, atol=1e-4)
    assert np.all(bound < 1e-3)
    # A tie is a half step: exactly the means whose doubled value is odd here (scale 1, zero point 0).
    half = np.abs(2 * t - np.round(2 * t)) < 1e-9
    assert np.array_equal(tie_mask(site, n), half & (np.round(2 * t) % 2 == 1) & (t > -128) & (t < 127))


def test_global_and_reduce_means() -> None:
    n = np.random.default_rng(1).integers(-128, 128, [1, 3, 4, 6]).astype(np.float64)
    for op, attrs in (("GlobalAveragePool", {}), ("ReduceMean", {"axes": [2, 3], "keepdims": 1}), ("ReduceMean", {"axes": [-1], "keepdims": 0})):
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "mean",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(n.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        piece = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        site = TieSite("y", piece, "xq", "x", "yq", 0.5, 0.25, 3, (-128, 127))
        t, _ = site.steps(n)
        axes = (2, 3) if op == "GlobalAveragePool" else tuple(attrs["axes"])
        expected = n.mean(axis=axes, keepdims=attrs.get("keepdims", 1) == 1) * 2 + 3
        np.testing.assert_allclose(t, expected, rtol=0, atol=1e-12)


def test_cli_rewrites_averages_at_ties_and_keeps_them_when_asked(tmp_path, capsys) -> None:
    """The CLI on quantize_static's VGG/DenseNet: the 2x2 average rewritten, -v counting its
    tie outputs (``ties off/at``) and the table allowing what they move (``ties ...``), the
    report carrying the fields; --keep-tie-averages keeps it, everything else bit-exact."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import quantized as Q
    from rewriter import cli

    source, out, report = tmp_path / "q.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(Q.quantized("vgg_densenet", Q.Quantization("uint8", True, False)), source)
    assert cli.main([str(source), str(out), "--report", str(report), "-v"]) == 0
    printed = capsys.readouterr().out
    assert "ties off/at" in printed and " ties 0.021 " in printed, printed
    data = json.loads(report.read_text())
    assert data["totals"]["kept"] == 0 and data["validation"]["passed"]
    nodes = {n["name"]: n for n in data["validation"]["nodes"]}
    assert nodes["dense/avgpool"]["tie_outputs"] > 0 and nodes["vgg/maxpool"]["tie_outputs"] == 0
    (logits,) = data["validation"]["outputs"]
    assert logits["error"] > 0 and logits["tie_effect"] > 0 and logits["level_disagreement"] is not None
    assert "tie_effect" in data["validation"]["tolerance"]

    assert cli.main([str(source), str(out), "--report", str(report), "--keep-tie-averages", "-q"]) == 0
    data = json.loads(report.read_text())
    rows = {n["name"]: n for n in data["nodes"]}
    assert rows["dense/avgpool"]["status"] == "kept" and "keep_tie_averages" in rows["dense/avgpool"]["reason"]
    assert data["validation"]["passed"] and all(o["error"] == 0 for o in data["validation"]["outputs"])
