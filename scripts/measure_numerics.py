"""Measure how far the rewritten pools are from onnxruntime's native ones, in ulps.

MaxPool: max(a, b) = relu(a - b) + b rounds once in ``a - b`` and once in the
Add, so its error is bounded by the *window's* magnitude, not the result's
(``max(1, -1e8)`` can come out as 0). We therefore report the error in ulps of
max |x| over each output's window, which onnxruntime itself computes for us as
MaxPool(|x|) with the same attributes.

Usage: python scripts/measure_numerics.py [--samples N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rewriter import rewrite_model  # noqa: E402

CASES = [
    ("MaxPool", [1, 16, 32, 32], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", [1, 16, 32, 32], dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", [1, 16, 20, 20], dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
    ("MaxPool", [1, 16, 20, 20], dict(kernel_shape=[13, 13], pads=[6, 6, 6, 6])),
    ("GlobalMaxPool", [1, 16, 7, 7], {}),
    ("AveragePool", [1, 16, 32, 32], dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", [1, 16, 28, 28], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
    ("AveragePool", [1, 16, 15, 15], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("GlobalAveragePool", [1, 16, 7, 7], {}),
]


def _model(op: str, shape: list[int], attrs: dict, dtype: int) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", dtype, shape)], [helper.make_tensor_value_info("y", dtype, None)]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def relu_levels(model: onnx.ModelProto) -> int:
    """Relus of the rewritten pool: one per pairwise max of a ladder, one per level of
    a nested chain. Each rounds a difference of window elements (and adds it up)."""
    return sum(1 for node in model.graph.node if node.op_type == "Relu")


def measure(op: str, shape: list[int], attrs: dict, *, dtype=np.float32, samples: int = 3, seed: int = 0) -> dict:
    """Worst error in ulps of the window magnitude, and the share of outputs not bit-exact."""
    onnx_dtype = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    original = _model(op, shape, attrs, onnx_dtype)
    rewritten, _ = rewrite_model(original)
    native, ours = _session(original), _session(rewritten)
    window_op = "GlobalMaxPool" if op.startswith("Global") else "MaxPool"
    window_attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    magnitude = _session(_model(window_op, shape, window_attrs, onnx_dtype))
    rng = np.random.default_rng(seed)
    worst, inexact, total = 0.0, 0, 0
    for _ in range(samples):
        x = rng.standard_normal(shape).astype(dtype)
        expected = native.run(None, {"x": x})[0].astype(np.float64)
        actual = ours.run(None, {"x": x})[0].astype(np.float64)
        window = magnitude.run(None, {"x": np.abs(x)})[0]
        ulps = np.abs(actual - expected) / np.spacing(window).astype(np.float64)
        worst = max(worst, float(ulps.max()))
        inexact += int(np.count_nonzero(actual != expected))
        total += actual.size
    return {"worst_ulps": worst, "inexact_share": inexact / total, "relu_levels": relu_levels(rewritten)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    print(f"{'op':<18} {'attributes':<58} {'dtype':<8} {'relus':>5} {'worst ulps':>10} {'not bit-exact':>13}")
    for dtype in (np.float32, np.float16):
        for op, shape, attrs in CASES:
            r = measure(op, shape, attrs, dtype=dtype, samples=args.samples)
            steps = r["relu_levels"] if "Max" in op else "-"
            print(
                f"{op:<18} {str(attrs or shape[2:]):<58} {np.dtype(dtype).name:<8} {steps!s:>5} "
                f"{r['worst_ulps']:>10.2f} {r['inexact_share']:>12.1%}"
            )


if __name__ == "__main__":
    main()
