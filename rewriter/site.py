"""What a rule needs to know about one pool node, independent of the graph API.

A :class:`PoolSite` is built by :func:`build_site` from a :class:`NodeFacts` and
a :class:`GraphFacts`, which the pass adapts from an ``onnx.GraphProto`` or an
onnx-graphsurgeon ``Graph``; the rules never touch either directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import onnx
from onnx import numpy_helper

from .weights_on_disk import tensor_value
from .graphs import producers as graph_producers
from .ops import MAX_POOL_OPS, REDUCE_POOL_OPS
from .reductions import CHANNELS_FIRST, ReduceChain, pooling_reduction, raw_reduce
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
    # Input from DequantizeLinear, output only into QuantizeLinear (a max: read by anything).
    between_qdq: bool = False
    # The quantized region's facts when ``between_qdq`` (its ``refusal`` says why it is
    # not one the quantized lowering handles); None outside QDQ regions.
    qdq: Optional["QdqRegion"] = None
    # A ReduceMean / ReduceMax acting as a global pool (its layout, a chain's earlier
    # nodes); None for the pool ops. ``input_name`` is then the chain's start.
    reduction: Optional[ReduceChain] = None

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

    def readers(self, name: str) -> list[tuple[str, Sequence[str], dict, Sequence[str]]]:
        """``(op_type, input names, attributes, output names)`` of each node reading ``name``."""

    def is_graph_output(self, name: str) -> bool: ...

    def tensor_type(self, name: str) -> tuple[Optional[tuple[Dim, ...]], Optional[np.dtype], str]:
        """Shape (None when unknown), numpy dtype (None when not one we lower) and dtype name."""


def build_site(
    node: NodeFacts, opset: int, facts: GraphFacts, nonnegative: Callable[[str], bool], is_pool: Callable[[PoolSite], bool]
) -> Optional[PoolSite]:
    """The site of ``node`` with the facts about its surroundings; None when the node is
    no pool (``is_pool``: a Reduce over other axes)."""
    attrs = dict(node.attrs)
    reduction = None
    if node.op_type in REDUCE_POOL_OPS:
        raw = raw_reduce(node.op_type, node.inputs, attrs, facts.constant)
        if raw.axes is not None:
            attrs["axes"] = list(raw.axes)  # Reduce*-18 axes: the constant input, as the report shows them
        reduction = pooling_reduction(node.op_type, node.inputs, node.attrs, facts, lambda name: _rank(facts, name))
    x, y = (reduction.start if reduction is not None else node.inputs[0]), node.outputs[0]
    shape, dtype, dtype_name = facts.tensor_type(x)
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
        reduction=reduction,
    )
    if not is_pool(site):
        return None
    if reduction is not None and reduction.layout != CHANNELS_FIRST:
        # Channels last: the spatial axes are not 2.., so no MaxPool chain or QDQ
        # analysis (both read NCHW) applies; the rule refuses QDQ regions of its own.
        site.input_nonnegative = nonnegative(x)
        site.between_qdq = dequantized_source(x, facts) is not None
        return site
    site.input_nonnegative = nonnegative(x)
    site.input_from_conv = comes_out_of_conv(x, facts.producer)
    site.input_reach = max_window_reach(x, facts.producer)
    site.input_chain_start = max_window_source(x, facts.producer)
    dequantized = dequantized_source(x, facts)
    quantizers = quantizing_readers(y, facts) if dequantized is not None or site.op_type in MAX_POOL_OPS else None
    if dequantized is None:
        # A float max read only by QuantizeLinear nodes directly (TensorRT-style placement):
        # Q(max(x)) = max(Q(x)), Q being monotone, so it is built quantized from its input
        # quantized as its output is (and checked after the Q); otherwise no QDQ region.
        direct = quantizers is not None and bool(quantizers[0]) and not quantizers[1]  # read by the Qs themselves
        region = quantized_as_output(quantizers, facts) if direct and str(dtype_name) == "float32" else None  # type: ignore[arg-type]
        if region is not None and region.usable:
            site.between_qdq, site.qdq = True, region
        return site
    if quantizers is None and site.op_type in MAX_POOL_OPS:
        quantizers = ([], ())  # a max hands on the very float the original returns: its readers need no Q
    site.between_qdq = quantizers is not None
    if site.between_qdq:
        site.qdq = qdq_region(dequantized, quantizers, facts)  # type: ignore[arg-type]
    return site


def _rank(facts: GraphFacts, name: str) -> Optional[int]:
    shape = facts.tensor_type(name)[0]
    return len(shape) if shape is not None else None


# Ops that only move values (one data input, the first): a quantizer gives their output the
# input's scale, so a pool reached through them from a DequantizeLinear, or reaching a
# QuantizeLinear through them, is still in the QDQ region.
SCALE_SHARING_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}
_SHARING_DEPTH = 8


def dequantized_source(x: str, facts: GraphFacts) -> Optional[tuple[tuple[str, Sequence[str], dict], tuple[str, ...]]]:
    """The DequantizeLinear ``x`` comes from, directly or through :data:`SCALE_SHARING_OPS`
    and max pools (:data:`~rewriter.ops.MAX_POOL_OPS`: a chain of max pools with no QDQ pair between them), and
    the ops passed on the way (nearest first); None when it comes from anything else."""
    through: list[str] = []
    feeder = facts.producer(x)
    while feeder is not None and feeder[0] in SCALE_SHARING_OPS | MAX_POOL_OPS and len(through) < _SHARING_DEPTH and feeder[1]:
        through.append(feeder[0])
        feeder = facts.producer(feeder[1][0])
    if feeder is None or feeder[0] != "DequantizeLinear":
        return None
    return feeder, tuple(through)


def quantizing_readers(y: str, facts: GraphFacts, depth: int = 0) -> Optional[tuple[list[tuple[str, Sequence[str], dict]], tuple[str, ...]]]:
    """The QuantizeLinear nodes that read ``y``, directly or through :data:`SCALE_SHARING_OPS`,
    max pools or a Concat (which places the values as they are), and the ops
    passed on the way; None when anything else reads it (or it is a graph output)."""
    readers = facts.readers(y)
    if not readers or facts.is_graph_output(y):
        return None
    found: list[tuple[str, Sequence[str], dict]] = []
    through: list[str] = []
    for op, inputs, attrs, outputs in readers:
        if not inputs or (inputs[0] != y and op != "Concat"):
            return None
        if op == "QuantizeLinear":
            found.append((op, inputs, attrs))
            continue
        if op not in SCALE_SHARING_OPS | MAX_POOL_OPS | {"Concat"} or depth >= _SHARING_DEPTH or not outputs:
            return None
        further = quantizing_readers(outputs[0], facts, depth + 1)
        if further is None:
            return None
        found.extend(further[0])
        through.extend([op, *further[1]])
    return found, tuple(through)


# The integer types of the activations a quantized lowering handles, with their ranges.
QDQ_INT_TYPES = {"int8": (-128, 127), "uint8": (0, 255)}


@dataclass(frozen=True)
class Quantization:
    """One per-tensor quantization: ``real = scale * (q - zero_point)``."""

    scale: np.float32
    zero_point: int
    dtype: np.dtype  # int8 or uint8
    scale_dtype: np.dtype  # the float type DequantizeLinear gives (the scale's)

    @property
    def int_range(self) -> tuple[int, int]:
        return QDQ_INT_TYPES[self.dtype.name]

    @property
    def steps(self) -> tuple[int, int]:
        """The range of ``q - zero_point``: what the dequantized value is, in steps."""
        lo, hi = self.int_range
        return lo - self.zero_point, hi - self.zero_point


@dataclass(frozen=True)
class QdqRegion:
    """A pool between DequantizeLinear and QuantizeLinear: the input DQ's integer tensor
    and quantization, and the quantization of each QuantizeLinear reading the output.
    ``refusal`` says why the quantized lowering does not handle it ("" when it does)."""

    # "" when the pool does not read a DQ's output itself (scale-sharing ops between, or a
    # float max quantized as its output): the rewrite requantizes its input with ``input``.
    int_input: str = ""
    input: Optional[Quantization] = None
    outputs: tuple[Quantization, ...] = ()
    refusal: str = ""
    output_through: bool = False  # the QuantizeLinear nodes are reached through other ops

    @property
    def usable(self) -> bool:
        return not self.refusal and self.input is not None

    @property
    def same_scales(self) -> bool:
        """Every output Q quantizes with the input's scale and zero point."""
        return all(q == self.input for q in self.outputs)


def _quantization(op: str, inputs: Sequence[str], attrs: dict, data_type: Optional[np.dtype], facts: GraphFacts) -> Union[Quantization, str]:
    """The per-tensor quantization of a Q or DQ node, or why it is none we handle."""
    scale = facts.constant(inputs[1]) if len(inputs) > 1 and inputs[1] else None
    if scale is None:
        return f"the {op}'s scale is computed, not an initializer or Constant"
    zero = facts.constant(inputs[2]) if len(inputs) > 2 and inputs[2] else None
    if len(inputs) > 2 and inputs[2] and zero is None:
        return f"the {op}'s zero point is computed, not an initializer or Constant"
    if scale.size != 1 or (zero is not None and zero.size != 1):
        return f"the {op} quantizes per axis (scale of {scale.size} values): only per-tensor activations are lowered"
    if zero is not None:
        dtype: Optional[np.dtype] = zero.dtype
    elif op == "DequantizeLinear":
        dtype = data_type
    else:  # QuantizeLinear without a zero point: uint8, or its output_dtype (opset 21)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attrs["output_dtype"])) if attrs.get("output_dtype") else np.dtype(np.uint8)
    if dtype is None or np.dtype(dtype).name not in QDQ_INT_TYPES:
        return f"the {op} is {np.dtype(dtype).name if dtype is not None else 'of unknown type'}: only int8 and uint8 are lowered"
    if scale.dtype != np.float32:
        return f"the {op}'s scale is {scale.dtype}: only float32 scales are lowered"
    value = np.float32(scale.reshape(-1)[0])
    if not (np.isfinite(value) and value > 0):
        return f"the {op}'s scale {value} is not positive and finite"
    zp = int(zero.reshape(-1)[0]) if zero is not None else 0
    return Quantization(value, zp, np.dtype(dtype), np.dtype(np.float32))


def qdq_region(
    dequantized: tuple[tuple[str, Sequence[str], dict], tuple[str, ...]],
    quantizers: tuple[list[tuple[str, Sequence[str], dict]], tuple[str, ...]],
    facts: GraphFacts,
) -> QdqRegion:
    """The facts of a pool's QDQ region from its input DequantizeLinear and the
    QuantizeLinear nodes reading its output (each with the scale-sharing ops between
    them and the pool, from :func:`dequantized_source` and :func:`quantizing_readers`):
    read here, once."""
    (_, inputs, attrs), input_through = dequantized
    readers, output_through = quantizers
    _, _, int_name = facts.tensor_type(inputs[0])
    int_dtype = np.dtype(int_name) if int_name in QDQ_INT_TYPES else None
    source = _quantization("DequantizeLinear", inputs, attrs, int_dtype, facts)
    if isinstance(source, str):
        return QdqRegion(refusal=source)
    if int_name and int_name != source.dtype.name:
        return QdqRegion(refusal=f"the DequantizeLinear reads {int_name} with a {source.dtype.name} zero point")
    outputs = _output_quantizations(readers, facts)
    if isinstance(outputs, str):
        return QdqRegion(refusal=outputs)
    return QdqRegion("" if input_through else inputs[0], source, outputs, "", bool(output_through))


def _output_quantizations(readers: Sequence[tuple[str, Sequence[str], dict]], facts: GraphFacts) -> Union[tuple[Quantization, ...], str]:
    """The quantization of each QuantizeLinear in ``readers``, or why one is none we handle."""
    outputs = []
    for op, inputs, attrs in readers:
        q = _quantization(op, inputs, attrs, None, facts)
        if isinstance(q, str):
            return q
        outputs.append(q)
    return tuple(outputs)


def quantized_as_output(quantizers: tuple[list[tuple[str, Sequence[str], dict]], tuple[str, ...]], facts: GraphFacts) -> Optional[QdqRegion]:
    """The region of a float max pool read only by QuantizeLinear nodes of one quantization:
    its input is requantized with that quantization (``int_input`` ""), or None."""
    readers, output_through = quantizers
    outputs = _output_quantizations(readers, facts)
    if isinstance(outputs, str) or any(q != outputs[0] for q in outputs):
        return None
    return QdqRegion("", outputs[0], outputs, "", bool(output_through))


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
        return _facts_of(node)

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


def _facts_of(node: "onnx.NodeProto") -> tuple[str, list[str], dict]:
    return node.op_type, list(node.input), {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
