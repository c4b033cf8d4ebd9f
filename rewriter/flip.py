"""``--flip-kernels``: store every Conv/ConvTranspose weight reversed along its spatial axes.

Deep-learning "convolution" is cross-correlation, ``O[i] = sum_m I[i + m] K[m]``.
Some DSP and FPGA backends implement true convolution, ``O[i] = sum_m I[i - m] K[m]``,
which is cross-correlation with the kernel reversed. A model whose kernels are
stored reversed therefore computes the original function on such a backend.

ConvTranspose: on a true-convolution backend we take ConvTranspose to be the
adjoint of its Conv, which is ONNX's ConvTranspose with the kernel reversed; so
its weights are reversed too (see :mod:`rewriter.true_conv`).

Weights are flipped where they are constants: initializers, Constant nodes, and
the quantized initializer behind a DequantizeLinear. A weight computed at run
time cannot be flipped ahead of time and is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner
from onnx import numpy_helper

from .graphs import all_graphs, functions_containing, producers
from .ops import ONNX_DOMAINS

CONV_OPS = ("Conv", "ConvTranspose")
SEMANTICS_KEY = "conv_semantics"


class FlipError(ValueError):
    """A weight that is not a constant: flipping it would need run-time work."""


@dataclass
class FlipReport:
    flipped: list[str] = field(default_factory=list)  # conv node names (or their output names)
    tensors: list[str] = field(default_factory=list)  # constants that were reversed
    inlined: list[str] = field(default_factory=list)  # local functions inlined because they hold convs


def flip_conv_kernels(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FlipReport]:
    """A copy of ``model`` with every Conv and ConvTranspose kernel spatially reversed,
    and ``metadata_props`` saying ``conv_semantics = convolution``."""
    report = FlipReport()
    with_convs = functions_containing(model, CONV_OPS)
    if with_convs:
        # A function body's weights may be its inputs: flip at the call sites instead.
        model = onnx.inliner.inline_selected_functions(model, with_convs, exclude=False)
        report.inlined = [f"{d}.{n}" if d else n for d, n in with_convs]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graphs = list(all_graphs(out.graph))
    initializers = {t.name: t for g in graphs for t in g.initializer}
    constant_nodes = {n.output[0]: n for g in graphs for n in g.node if n.op_type == "Constant"}
    made_by = producers(graphs)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for g in graphs:
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for g in graphs for o in g.output}
    done: set[str] = set()
    for g in graphs:
        for node in g.node:
            if node.op_type not in CONV_OPS or node.domain not in ONNX_DOMAINS:
                continue
            chain = _constant_chain(node.input[1], made_by, initializers, constant_nodes)
            source = chain[-1] if chain else None
            if source is None:
                raise FlipError(
                    f"{node.op_type} '{node.name or node.output[0]}': weight '{node.input[1]}' is computed at run time; "
                    "a true-convolution backend would need it reversed, which cannot be done ahead of time"
                )
            for tensor in chain:  # reversing the constant reverses every tensor on the way
                readers = consumers.get(tensor, [])
                if tensor in graph_outputs or any(
                    not (r.op_type in CONV_OPS and list(r.input[1:2]) == [tensor]) and r.op_type not in PASS_THROUGH for r in readers
                ):
                    raise FlipError(f"weight '{tensor}' is also used by a non-convolution node; reversing it would change that node")
            if source not in done:
                _reverse_constant(source, initializers, constant_nodes)
                done.add(source)
                report.tensors.append(source)
            report.flipped.append(node.name or node.output[0])
    entries = {p.key: p for p in out.metadata_props}
    if SEMANTICS_KEY in entries:
        entries[SEMANTICS_KEY].value = "convolution"
    else:
        out.metadata_props.add(key=SEMANTICS_KEY, value="convolution")
    return out, report


# Ops a constant weight may pass through on its way to a conv: they keep its layout.
# (A DequantizeLinear's per-axis scales run along the output-channel axis, which a
# spatial flip keeps.)
PASS_THROUGH = ("DequantizeLinear", "Identity")


def _constant_chain(name: str, producers: dict, initializers: dict, constant_nodes: dict) -> list[str]:
    """The tensors from a weight back to the constant it comes from (last), through
    DequantizeLinear / Identity nodes; empty when the weight is computed at run time."""
    chain = [name]
    for _ in range(16):
        if name in initializers or name in constant_nodes:
            return chain
        node = producers.get(name)
        if node is None or node.op_type not in PASS_THROUGH:
            return []
        name = node.input[0]
        chain.append(name)
    return []


def _reverse_constant(name: str, initializers: dict, constant_nodes: dict) -> None:
    if name in initializers:
        tensor = initializers[name]
        tensor.CopyFrom(_reversed(tensor))
        return
    node = constant_nodes[name]
    for attr in node.attribute:
        if attr.name == "value":
            attr.t.CopyFrom(_reversed(attr.t))
            return
    raise FlipError(f"Constant '{name}' holds its value in an attribute other than 'value'")


def _reversed(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor)
    if array.ndim < 3:
        raise FlipError(f"weight '{tensor.name}' has rank {array.ndim}; a conv kernel has at least 3")
    flipped = np.ascontiguousarray(np.flip(array, axis=tuple(range(2, array.ndim))))
    return numpy_helper.from_array(flipped, tensor.name)
