"""What a rule needs to know about one pool node, independent of the graph API.

A :class:`PoolSite` is built by :func:`build_site` from a :class:`NodeFacts` and
a :class:`GraphFacts`, which the pass adapts from an ``onnx.GraphProto`` or an
onnx-graphsurgeon ``Graph``; the rules never touch either directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .weights_on_disk import tensor_value
from .graphs import producers as graph_producers
from .spec import RawPool

Dim = Optional[object]  # int when static, a str or None when dynamic


@dataclass
class PoolSite:
    """One pool node and the facts about its surroundings that decide its lowering."""

    name: str
    op_type: str
    attrs: dict
    opset: int
    input_name: str
    output_name: str
    input_shape: Optional[tuple[Dim, ...]]
    dtype: Optional[np.dtype]
    dtype_name: str
    indices_used: bool = False
    input_nonnegative: bool = False
    input_from_conv: bool = False  # onnxruntime keeps it in the conv's blocked layout
    # Per spatial axis, (left, right): the input is already a max over that reach of
    # some tensor (it comes out of "same" stride-1 MaxPools, as in SPPF); None if not.
    input_reach: Optional[tuple[tuple[int, int], ...]] = None
    input_chain_start: str = ""  # where that chain of "same" MaxPools starts ("": the input itself)
    between_qdq: bool = False  # input from DequantizeLinear, output only into QuantizeLinear

    @property
    def raw(self) -> RawPool:
        """The node's attributes, decoded without a shape."""
        return RawPool(self.op_type, self.attrs, self.opset)

    @property
    def display_name(self) -> str:
        return self.name or f"<{self.op_type} -> {self.output_name}>"

    def spatial_is_dynamic(self) -> bool:
        return self.input_shape is not None and not all(isinstance(d, int) and d >= 0 for d in self.input_shape[2:])


Producer = Callable[[str], Optional[tuple[str, Sequence[str], dict]]]


@dataclass(frozen=True)
class NodeFacts:
    """A node as every graph API can give it: names of its tensors, decoded attributes."""

    name: str
    op_type: str
    attrs: Mapping[str, object]
    inputs: Sequence[str]
    outputs: Sequence[str]


class GraphFacts(Protocol):
    """What a site needs to know about the graph around a node."""

    def producer(self, name: str) -> Optional[tuple[str, Sequence[str], dict]]:
        """``(op_type, input names, attributes)`` of the node writing ``name``; None for inputs and initializers."""

    def constant(self, name: str) -> Optional[np.ndarray]:
        """The value of a constant tensor; None when ``name`` is computed."""

    def reader_ops(self, name: str) -> list[str]:
        """The op types of the nodes reading ``name``."""

    def is_graph_output(self, name: str) -> bool: ...

    def tensor_type(self, name: str) -> tuple[Optional[tuple[Dim, ...]], Optional[np.dtype], str]:
        """Shape (None when unknown), numpy dtype (None when not one we lower) and dtype name."""


def build_site(
    node: NodeFacts, opset: int, facts: GraphFacts, nonnegative: Callable[[str], bool], is_pool: Callable[[PoolSite], bool]
) -> Optional[PoolSite]:
    """The site of ``node`` with the facts about its surroundings; None when the node is
    no pool (``is_pool``: a Reduce over other axes)."""
    shape, dtype, dtype_name = facts.tensor_type(node.inputs[0])
    attrs = dict(node.attrs)
    if len(node.inputs) > 1 and node.inputs[1] and "axes" not in attrs:  # Reduce*-18 axes
        axes = facts.constant(node.inputs[1])
        if axes is not None:
            attrs["axes"] = [int(v) for v in axes.reshape(-1)]
    x, y = node.inputs[0], node.outputs[0]
    indices = node.outputs[1] if len(node.outputs) > 1 else ""
    site = PoolSite(
        name=node.name,
        op_type=node.op_type,
        attrs=attrs,
        opset=opset,
        input_name=x,
        output_name=y,
        input_shape=shape,
        dtype=dtype,
        dtype_name=dtype_name,
        indices_used=bool(indices) and (bool(facts.reader_ops(indices)) or facts.is_graph_output(indices)),
    )
    if not is_pool(site):
        return None
    feeder, readers = facts.producer(x), facts.reader_ops(y)
    site.input_nonnegative = nonnegative(x)
    site.input_from_conv = comes_out_of_conv(x, facts.producer)
    site.input_reach = max_window_reach(x, facts.producer)
    site.input_chain_start = max_window_source(x, facts.producer)
    site.between_qdq = (
        feeder is not None and feeder[0] == "DequantizeLinear" and bool(readers)
        and all(op == "QuantizeLinear" for op in readers) and not facts.is_graph_output(y)
    )
    return site


# Ops whose output is >= 0 whatever their input (NaN aside).
NONNEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "Exp", "Abs", "Softplus", "HardSigmoid", "Sqrt"}
# Ops whose output is >= 0 when their (data) input is.
SIGN_PRESERVING_OPS = {
    "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool",
    "GlobalMaxPool", "AveragePool", "GlobalAveragePool", "Slice", "Gather", "DepthToSpace",
    "SpaceToDepth", "Expand", "Tile", "Pad",
}


# Ops onnxruntime runs in a conv's blocked (NCHWc) layout when their input is in it:
# activations and batch norm (folded into the conv), Add, and the pools themselves.
BLOCKED_AFTER_CONV = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Add", "BatchNormalization", "MaxPool", "AveragePool"}
)


def comes_out_of_conv(tensor: str, producer: Producer, max_depth: int = 16) -> bool:
    """Whether onnxruntime holds ``tensor`` in a conv's blocked layout: a Conv output,
    or one reached from a Conv through ops it runs in that layout (measured: it then
    fuses an Add with the tensor into a conv; a graph input it does not). Each tensor
    is looked at once, so residual Adds cannot make the search blow up."""
    pending, seen = deque([(tensor, 0)]), set()
    while pending:
        name, depth = pending.popleft()  # breadth first: each tensor is met at its least depth
        if name in seen or depth > max_depth:
            continue
        seen.add(name)
        made_by = producer(name)
        if made_by is None:
            continue
        op, inputs, _ = made_by
        if op == "Conv":
            return True
        if op in BLOCKED_AFTER_CONV:
            pending.extend((i, depth + 1) for i in inputs if i)
    return False


def _same_pool_chain(tensor: str, producer: Producer) -> tuple[str, Optional[tuple[tuple[int, int], ...]]]:
    """Walk back through a chain of "same" MaxPools ending in ``tensor``: where it starts,
    and the per-axis (left, right) reach the chain adds up to (None when ``tensor`` is
    no such pool's output)."""
    reach: Optional[tuple[tuple[int, int], ...]] = None
    for _ in range(64):
        made_by = producer(tensor)
        own = RawPool(made_by[0], made_by[2]).centred_reach() if made_by is not None else None
        if own is None or (reach is not None and len(own) != len(reach)):
            break
        tensor = made_by[1][0]  # type: ignore[index]
        reach = own if reach is None else tuple((l1 + l2, r1 + r2) for (l1, r1), (l2, r2) in zip(reach, own))
    return tensor, reach


def max_window_reach(tensor: str, producer: Producer) -> Optional[tuple[tuple[int, int], ...]]:
    """Per spatial axis, how far left and right ``tensor`` already holds a max: it comes
    out of a chain of "same" MaxPools (SPPF), each output the max over
    ``[q - left, q + right]`` of :func:`max_window_source`, clipped to it. None when
    the tensor is not such a pool's output."""
    return _same_pool_chain(tensor, producer)[1]


def max_window_source(tensor: str, producer: Producer) -> str:
    """The tensor a chain of "same" MaxPools ending in ``tensor`` starts from (``tensor``
    itself when it is no such pool's output)."""
    return _same_pool_chain(tensor, producer)[0]


class ProtoFacts:
    """Who produces each tensor of protobuf graphs (a graph and its bodies), and the
    value of each constant: what the graph analyses here read."""

    def __init__(self, graphs: Sequence["onnx.GraphProto"]) -> None:
        self.producers = graph_producers(graphs)
        self.initializers = {t.name: t for g in graphs for t in g.initializer}

    def producer(self, name: str) -> Optional[tuple[str, Sequence[str], dict]]:
        node = self.producers.get(name)
        if node is None:
            return None
        return node.op_type, list(node.input), {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def constant(self, name: str) -> Optional[np.ndarray]:
        """The value of an initializer or of a Constant node's ``value``; None otherwise."""
        if name in self.initializers:
            return tensor_value(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None


class NonNegativity:
    """Answers "is this tensor provably >= 0?" from the ops that produce it, with memo.

    ``producer(name)`` gives ``(op_type, inputs, attrs)`` of the producing node
    or None for graph inputs and initializers; ``constant(name)`` gives an
    initializer's value or None.
    """

    def __init__(self, producer: Producer, constant: Callable[[str], Optional[np.ndarray]]) -> None:
        self.producer, self.constant = producer, constant
        self._memo: dict[str, bool] = {}

    @classmethod
    def of_graphs(cls, graphs: Sequence["onnx.GraphProto"]) -> "NonNegativity":
        """The analysis over protobuf graphs (a main graph and its subgraphs)."""
        facts = ProtoFacts(graphs)
        return cls(facts.producer, facts.constant)

    def __call__(self, tensor: str, depth: int = 0) -> bool:
        if tensor not in self._memo:
            if depth > 256:
                return False  # unproven, but not memoized: a shallower query may prove it
            self._memo[tensor] = _is_nonnegative(tensor, self.producer, self.constant, self, depth)
        return self._memo[tensor]


def _is_nonnegative(tensor, producer, constant, recurse: Callable[[str, int], bool], depth: int) -> bool:
    value = constant(tensor)
    if value is not None:
        return bool(value.size) and bool(np.all(value >= 0))
    node = producer(tensor)
    if node is None:
        return False
    op, inputs, attrs = node
    if op in NONNEGATIVE_OPS:
        return True
    if op == "Clip":
        low = attrs.get("min")
        if low is None and len(inputs) > 1 and inputs[1]:
            bound = constant(inputs[1])
            low = None if bound is None else float(bound.reshape(-1)[0])
        return low is not None and low >= 0
    if op == "Pad":
        mode = attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode == "constant":
            fill = constant(inputs[2]) if len(inputs) > 2 and inputs[2] else np.zeros(1)
            value_attr = attrs.get("value", 0.0)
            if fill is None or np.any(fill < 0) or value_attr < 0:
                return False
    if op in SIGN_PRESERVING_OPS:
        return bool(inputs) and recurse(inputs[0], depth + 1)
    if op == "Concat":
        return all(recurse(i, depth + 1) for i in inputs)
    if op == "Max":
        return any(recurse(i, depth + 1) for i in inputs)
    return False
