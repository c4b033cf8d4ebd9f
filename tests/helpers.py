"""Model builders and onnxruntime runs shared by the tests."""

from __future__ import annotations

import dataclasses
import json
import functools
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from compat import TEST_OPSET

STRICT_OPS = {"Conv", "Relu", "Add", "Concat"}


def added_nodes_outside(original: onnx.ModelProto, written: onnx.ModelProto, limits: tuple) -> list[str]:
    """What the nodes added to ``written`` break, read from their ONNX attributes (an
    encoding of the limits independent of the rewriter's): ``limits`` is (ops, kernel,
    stride, dilation, pad), each range a (lo, hi) pair or None; pads below the kernel always."""
    ops, kernel, stride, dilation, pad = limits
    own = {n.name for n in original.graph.node}
    weights = {t.name: list(t.dims) for t in written.graph.initializer}
    # A quantized rewrite's weights are an initializer through DequantizeLinear, which it
    # may add (with QuantizeLinear) in a QDQ region whatever the ops.
    dequantized = {n.output[0]: n.input[0] for n in written.graph.node if n.op_type == "DequantizeLinear"}
    weights.update({out: weights[src] for out, src in dequantized.items() if src in weights})
    quantized = ("QuantizeLinear", "DequantizeLinear") if any(n.op_type == "DequantizeLinear" for n in original.graph.node) else ()
    broken = []
    for node in written.graph.node:
        if node.name in own:
            continue
        if node.op_type not in ops and node.op_type not in quantized:
            broken.append(f"{node.name}: op {node.op_type}")
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        k = weights[node.input[1]][2:]
        pads = attrs.get("pads", [0] * 2 * len(k))
        checks = [("kernel", k, kernel), ("stride", attrs.get("strides", [1] * len(k)), stride),
                  ("dilation", attrs.get("dilations", [1] * len(k)), dilation), ("pad", pads, pad)]
        for what, values, bounds in checks:
            if bounds is not None and not all(bounds[0] <= v <= bounds[1] for v in values):
                broken.append(f"{node.name}: {what} {values}")
        if any(p >= k[i % len(k)] for i, p in enumerate(pads)):  # pad_below_kernel
            broken.append(f"{node.name}: pads {pads} on a kernel of {k}")
    return broken


def target_option(target: str, tmp_path, files: dict) -> str:
    """The ``--target`` value: the profile ``files[target]`` written to a file under
    ``tmp_path``, or the built-in name when ``files`` has no such profile."""
    if target not in files:
        return target
    path = tmp_path / f"{target}.json"
    path.write_text(json.dumps(files[target]))
    return str(path)


def pool_model(
    op: str,
    shape: Sequence[Optional[int]],
    attrs: Optional[dict] = None,
    *,
    opset: int = TEST_OPSET,
    dtype: int = TensorProto.FLOAT,
    prefix_relu: bool = False,
    name: str = "pool",
) -> onnx.ModelProto:
    """x -> [Relu ->] <op> -> y, with a declared input shape and no output shape."""
    nodes = []
    src = "x"
    if prefix_relu:
        nodes.append(helper.make_node("Relu", ["x"], ["x_relu"], name="relu"))
        src = "x_relu"
    nodes.append(helper.make_node(op, [src], ["y"], name=name, **(attrs or {})))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", dtype, list(shape))], [helper.make_tensor_value_info("y", dtype, [None] * len(shape))]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, optimize: bool = False) -> list[np.ndarray]:
    """One onnxruntime CPU run; ``optimize`` turns on every graph optimization
    (the fused Conv+Add+Relu and blocked-layout kernels a deployment gets)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def input_suites(shape: Sequence[int], dtype=np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    """Signed normal, all-negative and tie-heavy integer inputs (the seed's randint(-10, 11))."""
    rng = np.random.default_rng(seed)
    return {
        "normal": rng.standard_normal(shape).astype(dtype),
        "negative": (-np.abs(rng.standard_normal(shape)) - 0.5).astype(dtype),
        "ties": rng.integers(-10, 11, shape).astype(dtype),
    }


def op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


class AssumesNonnegative:
    """A MaxPool strategy with the classic bug: every axis lowered as if the input were
    >= 0, so the convs' zero padding stands in for -inf padding."""

    name = "assumes-nonnegative"

    def plan(self, a, context):
        from rewriter.lower.max_strategies import choose

        return choose(a, dataclasses.replace(context, nonnegative=True))

    def build(self, b, x, axis, a, plan):
        return plan.build(b, x, axis, a)


# Rewrite options (``strategies=``) that make MaxPool lowering make that mistake.
ZERO_PADDING_BUG = (AssumesNonnegative(),)


def inject_zero_padding_bug(monkeypatch) -> None:
    """Make the CLI's pass lower MaxPool with :data:`ZERO_PADDING_BUG`."""
    from rewriter import cli

    monkeypatch.setattr(cli, "PoolRewritePass", functools.partial(cli.PoolRewritePass, strategies=ZERO_PADDING_BUG))
