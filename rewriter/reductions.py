"""Which ReduceMean / ReduceMax nodes act as global pools: one answer for the pass and the validator.

A reduction is a global pool when the axes it reduces (one node, or a chain of
single-purpose reductions of the same op) are all the spatial axes of a layout
that keeps a batch axis and one channel axis:

* ``NCHW`` (channels first): rank >= 4, axes ``2 .. rank-1`` (PyTorch's dynamo
  exporter, ``AdaptiveAvgPool2d(1)``);
* ``NHWC`` (channels last): rank >= 4, axes ``1 .. rank-2`` (tf2onnx and keras2onnx
  heads: ``ReduceMean`` axes (1, 2), ``Transpose -> ReduceMax`` axes (1, 2));
* ``HWC`` (channels last without a batch axis): rank >= 3, axes ``0 .. rank-2``
  (channels-last audio CNNs exported without a batch dim).

What is proven and what is read: the rewrite computes exactly what the node does
whatever the layout (a mean or max over those axes, for each value of the others).
The layout is a reading of the axis pattern, not a fact of the graph: batch first,
then either the channels and the spatial axes, or the spatial axes and the
channels. The patterns are disjoint, so the reading is never ambiguous between
them. What stays untouched, as before: any reduction over one axis (a rank-3
``ReduceMean(axes=[-1])`` is a LayerNorm's mean over the features far more often
than a 1-D global pool, and NPU compilers fuse a LayerNorm only if it stays),
and any other set of axes (the channel axis with the spatial ones, a subset).

A chain (a global max split into ``ReduceMax`` over axis 3, then axis 2: an
opset-9 export) counts when each earlier reduction's output is read only by the
next one (and is no graph output), the reductions reduce disjoint axes, and
together they reduce one of the patterns above; the chain is one site, named
after its last node, and its earlier nodes go with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .graphs import producers, weightless_copy
from .ops import REDUCE_POOL_OPS, is_onnx_op
from .spec import RawReduce

# Layout names, as the report shows them.
CHANNELS_FIRST, CHANNELS_LAST, CHANNELS_LAST_NO_BATCH = "NCHW", "NHWC", "HWC"
_LONGEST_CHAIN = 8


def pooling_layout(rank: int, axes: Sequence[int]) -> Optional[str]:
    """The layout in which reducing ``axes`` (normalised, sorted) of a rank-``rank``
    tensor is a global pool, or None (see the module's doc)."""
    axes = list(axes)
    if rank >= 4 and axes == list(range(2, rank)):
        return CHANNELS_FIRST
    if rank >= 4 and axes == list(range(1, rank - 1)):
        return CHANNELS_LAST
    if rank >= 3 and axes == list(range(0, rank - 1)):
        return CHANNELS_LAST_NO_BATCH
    return None


@dataclass(frozen=True)
class ReduceChain:
    """One reduction acting as a global pool: a single node or a chain of them.

    ``start`` is the tensor the first node reads (``rank`` its rank), ``axes`` the
    axes of ``start`` reduced in all, ``kept`` the axes of ``start`` the output still
    has (in order; reduced ones kept by keepdims included), ``absorbed`` the outputs
    of the chain's earlier nodes (they go with the site), ``node_axes`` each node's
    axes as written.
    """

    op_type: str
    start: str
    rank: int
    axes: tuple[int, ...]
    layout: str
    kept: tuple[int, ...]
    absorbed: tuple[str, ...] = ()
    node_axes: tuple[tuple[int, ...], ...] = ()
    keepdims: tuple[bool, ...] = ()

    @property
    def kind(self) -> str:
        return "max" if self.op_type == "ReduceMax" else "average"

    def out_shape(self, start_shape: Sequence[object]) -> tuple[object, ...]:
        """The output's shape, from the start's."""
        return tuple(1 if a in self.axes else start_shape[a] for a in self.kept)

    def describe(self) -> str:
        """The report's attribute column, e.g. ``global NHWC (axes 1,2, keepdims 0)`` or
        ``global NCHW (axes 3 then 2)``."""
        def join(axes: Sequence[int]) -> str:
            return ",".join(str(a) for a in axes)

        written = " then ".join(join(a) for a in self.node_axes) or join(self.axes)
        keep = "" if all(self.keepdims) else " keepdims " + "/".join(str(int(k)) for k in self.keepdims)
        return f"global {self.layout} (axes {written}{keep})"


class ReduceGraph(Protocol):
    """What finding a chain needs to know of the graph around a node."""

    def producer(self, name: str) -> Optional[tuple[str, Sequence[str], dict]]: ...

    def constant(self, name: str) -> Optional[np.ndarray]: ...

    def reader_ops(self, name: str) -> list[str]: ...

    def is_graph_output(self, name: str) -> bool: ...


def raw_reduce(op_type: str, inputs: Sequence[str], attrs: dict, constant: Callable[[str], Optional[np.ndarray]]) -> RawReduce:
    """The node's :class:`~rewriter.spec.RawReduce`, its axes input read when constant."""
    axes_input = None
    if len(inputs) > 1 and inputs[1] and "axes" not in attrs:  # Reduce*-18: the axes are an input
        value = constant(inputs[1])
        axes_input = [int(v) for v in value.reshape(-1)] if value is not None else None
    return RawReduce(op_type, attrs, axes_input)


def pooling_reduction(
    op_type: str, inputs: Sequence[str], attrs: dict, graph: ReduceGraph, rank: Callable[[str], Optional[int]]
) -> Optional[ReduceChain]:
    """The global pool that the reduction writing its output computes (the longest
    chain ending at it that is one), or None. ``rank`` gives a tensor's rank (None: unknown)."""
    if op_type not in REDUCE_POOL_OPS or not inputs or not inputs[0]:
        return None
    nodes = [(list(inputs), dict(attrs), "")]
    x = inputs[0]
    while len(nodes) < _LONGEST_CHAIN:
        feeder = graph.producer(x)
        if feeder is None or feeder[0] != op_type or not feeder[1] or graph.is_graph_output(x) or len(graph.reader_ops(x)) != 1:
            break
        nodes.insert(0, (list(feeder[1]), dict(feeder[2]), x))
        x = feeder[1][0]
    for first in range(len(nodes)):
        chain = _chain(op_type, nodes[first:], graph, rank)
        if chain is not None:
            return chain
    return None


def _chain(op_type: str, nodes: list, graph: ReduceGraph, rank: Callable[[str], Optional[int]]) -> Optional[ReduceChain]:
    start = nodes[0][0][0]
    r = rank(start)
    if r is None:
        return None
    alive, reduced, written, keepdims = list(range(r)), set(), [], []
    for inputs, attrs, _ in nodes:
        raw = raw_reduce(op_type, inputs, attrs, graph.constant)
        axes = raw.reduced_axes(len(alive))
        if axes is None:
            return None
        these = {alive[i] for i in axes}
        if these & reduced:
            return None  # a size-1 axis reduced again: not one pool
        reduced |= these
        written.append(tuple(a % len(alive) for a in raw.axes or ()))
        keepdims.append(raw.keepdims)
        if not raw.keepdims:
            alive = [a for i, a in enumerate(alive) if i not in axes]
    layout = pooling_layout(r, sorted(reduced))
    if layout is None:
        return None
    absorbed = tuple(output for _, _, output in nodes[:-1])
    return ReduceChain(op_type, start, r, tuple(sorted(reduced)), layout, tuple(alive), absorbed, tuple(written), tuple(keepdims))


class _ProtoGraph:
    """:class:`ReduceGraph` of one protobuf graph (what the validator has)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.producers = producers([graph])
        self.initializers = {t.name: t for t in graph.initializer}
        self.readers: dict[str, list[str]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node.op_type)
        self.outputs = {o.name for o in graph.output}

    def producer(self, name: str) -> Optional[tuple[str, Sequence[str], dict]]:
        node = self.producers.get(name)
        if node is None:
            return None
        return node.op_type, list(node.input), {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def constant(self, name: str) -> Optional[np.ndarray]:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def reader_ops(self, name: str) -> list[str]:
        return self.readers.get(name, [])

    def is_graph_output(self, name: str) -> bool:
        return name in self.outputs


def declared_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of every tensor whose shape the model itself declares (inputs, value_info, outputs)."""
    g = model.graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in [*g.input, *g.value_info, *g.output] if v.type.tensor_type.HasField("shape")}


def inferred_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """:func:`declared_ranks` after onnx shape inference on a weightless copy (as declared
    where it fails)."""
    try:
        return declared_ranks(onnx.shape_inference.infer_shapes(weightless_copy(model), strict_mode=False))
    except Exception:  # inference raises several types; ranks stay as declared
        return declared_ranks(model)


def pooling_reductions(model: onnx.ModelProto, ranks: Optional[Mapping[str, Optional[int]]] = None) -> dict[str, ReduceChain]:
    """By output name, every reduction of the main graph acting as a global pool (chain ends
    only), with tensor ranks from ``ranks`` where given, else as shape inference gives them."""
    if not any(is_onnx_op(node, REDUCE_POOL_OPS) for node in model.graph.node):
        return {}
    known = {**(declared_ranks(model) if ranks is not None else inferred_ranks(model)), **{k: v for k, v in (ranks or {}).items() if v is not None}}
    graph = _ProtoGraph(model.graph)
    found = {}
    for node in model.graph.node:
        if is_onnx_op(node, REDUCE_POOL_OPS) and node.input and node.output:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            chain = pooling_reduction(node.op_type, list(node.input), attrs, graph, known.get)
            if chain is not None:
                found[node.output[0]] = chain
    absorbed = {name for chain in found.values() for name in chain.absorbed}
    return {name: chain for name, chain in found.items() if name not in absorbed}


__all__ = ["declared_ranks", "pooling_reductions", "CHANNELS_FIRST", "CHANNELS_LAST", "CHANNELS_LAST_NO_BATCH", "ReduceChain", "pooling_layout", "pooling_reduction", "raw_reduce"]
