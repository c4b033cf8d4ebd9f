"""Validation of quantized (QDQ) models: what is compared exactly, at which levels,
and where a node check inside a QDQ region starts and ends.

In a quantized model an output is a function of integers: an integer output is
the integers themselves, and a float output made by DequantizeLinear (possibly
through ops that only move values: Reshape, Flatten, Transpose, ...) is
``(q - zero_point) * scale`` of integers. A correct rewrite of a pool inside a
QDQ region reproduces those integers, so such outputs are compared **exactly**:
no tolerance and no noise floor.

onnxruntime runs a QDQ model two ways: as written (``ORT_DISABLE_ALL``: every
DequantizeLinear, float op and QuantizeLinear on its own) and with its integer
kernels (``ORT_ENABLE_ALL`` fuses ``DQ -> op -> Q`` into QLinearConv,
QLinearAveragePool, QLinearGlobalAveragePool, QLinearAdd, ...). The two do not
always agree with each other: QLinearAveragePool rounds some ties of
``sum / K`` differently from a float QuantizeLinear (measured on the models of
``tests/quantized.py``: an AveragePool 2x2 between DQ and Q, int8 zero point
-128, scale 0.02364, differs between the levels on 3.6% of its outputs; the
quantized VGG/DenseNet model's logits by one step on two of five suites). So
the candidate is run at both levels and each run is compared with the original
**at the same level**: the original at ``ORT_DISABLE_ALL`` is the graph's
meaning by the ONNX spec, the original at ``ORT_ENABLE_ALL`` is what a user
deploying on onnxruntime gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from ..graphs import producers
from ..ops import MAX_POOL_OPS

AS_WRITTEN = "ORT_DISABLE_ALL"
INTEGER_KERNELS = "ORT_ENABLE_ALL"
# The levels a quantized model's candidate runs at, in order.
QUANTIZED_LEVELS = (AS_WRITTEN, INTEGER_KERNELS)
EXACT_REFERENCE = "the original at the same onnxruntime graph-optimization level"

_QUANTIZE_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
# Ops that move or select values without computing new ones: DQ's floats pass through unchanged.
SHAPE_ONLY_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Slice", "Gather",
                  "Split", "Concat", "Tile", "DepthToSpace", "SpaceToDepth"}
# What a walk to a region's DQ or Q may pass: ops that move values, and max pools (which pick them).
_PICKING_OPS = SHAPE_ONLY_OPS | MAX_POOL_OPS
_INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
                  onnx.TensorProto.INT32, onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64,
                  onnx.TensorProto.BOOL, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
_EIGHT_BIT = {onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8}


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` computes with quantized integers (QDQ nodes, QLinear* or *Integer ops)."""
    return any(n.op_type in _QUANTIZE_OPS or n.op_type.startswith("QLinear") for n in model.graph.node)


def exact_outputs(model: onnx.ModelProto, elem_types: Optional[Mapping[str, int]] = None) -> list[str]:
    """The graph outputs of a quantized ``model`` to compare exactly: integer outputs, and
    outputs made by DequantizeLinear, directly or through :data:`SHAPE_ONLY_OPS` whose
    data inputs are all such (their other inputs, shapes and indices, are constants or
    integers). Empty for a model that is not quantized: its float path is unchanged."""
    if not is_quantized(model):
        return []
    types = dict(elem_types or {})
    for value in list(model.graph.output) + list(model.graph.value_info) + list(model.graph.input):
        if value.type.tensor_type.elem_type:
            types.setdefault(value.name, value.type.tensor_type.elem_type)
    made_by = producers([model.graph])
    constants = {t.name for t in model.graph.initializer}
    memo: dict[str, bool] = {}

    def from_dequantize(name: str, depth: int = 0) -> bool:
        if name in memo:
            return memo[name]
        node = made_by.get(name)
        memo[name] = False  # cycles and deep chains: not exact
        if node is None or depth > 64:
            return False
        if node.op_type == "DequantizeLinear":
            memo[name] = True
        elif node.op_type in SHAPE_ONLY_OPS:
            data = [i for i in node.input[: _data_inputs(node)] if i]
            memo[name] = bool(data) and all(
                from_dequantize(i, depth + 1) or (i in constants and types.get(i) in _INTEGER_TYPES) for i in data
            ) and any(i not in constants for i in data)
        return memo[name]

    return [o.name for o in model.graph.output if types.get(o.name) in _INTEGER_TYPES or from_dequantize(o.name)]


def _data_inputs(node: onnx.NodeProto) -> int:
    """How many leading inputs of a shape-only op carry the values (the rest are shapes, axes, indices)."""
    return len(node.input) if node.op_type == "Concat" else 1


@dataclass(frozen=True)
class QdqIndex:
    """Who makes and who reads each tensor of a model's main graph, its initializers and
    outputs: built once per model for all of its node checks' :func:`through_qdq` walks."""

    made_by: Mapping[str, onnx.NodeProto]
    readers: Mapping[str, list[onnx.NodeProto]]
    constants: Mapping[str, onnx.TensorProto]
    outputs: frozenset[str]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "QdqIndex":
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        return cls(producers([model.graph]), readers, {t.name: t for t in model.graph.initializer},
                   frozenset(o.name for o in model.graph.output))


def through_qdq(
    model: onnx.ModelProto, start: str, output: str, index: Optional[QdqIndex] = None
) -> tuple[str, str, Optional[int], tuple[str, ...]]:
    """Where the check of a node inside a QDQ region starts and ends, in integers.

    A check that starts at a DequantizeLinear's output (8-bit, per-tensor), directly or
    through ops that only move or pick values (a Transpose of an NHWC export, a max pool
    with no QDQ pair after it), starts at the integers that DQ reads instead: the node
    only ever sees values on its grid, and a quantized lowering may requantize them.
    One whose node output feeds only one QuantizeLinear ends at that Q's integers, so a
    rewrite is judged by the integers it hands on, exactly; so does a float max pool
    read only by QuantizeLinear nodes (the first one's: max commutes with a monotone Q).
    A start in integers whose output reaches a QuantizeLinear only further on (through
    such ops, or a Concat) ends at the output quantized as that Q quantizes:
    ``quantize_as`` names its scale and zero point. Returns ``(start, end, zero point
    of the start's DequantizeLinear or None, quantize_as)``; a check that is not in a
    QDQ region comes back unchanged. ``index``: :meth:`QdqIndex.of` the model, when the
    caller walks many nodes."""
    index = index or QdqIndex.of(model)
    made_by, constants = index.made_by, index.constants
    zero_point = None
    dq, hops = made_by.get(start), 0
    while dq is not None and dq.op_type in _PICKING_OPS and _data_inputs(dq) == 1 and dq.input and hops < _WALK:
        dq, hops = made_by.get(dq.input[0]), hops + 1
    if dq is not None and dq.op_type == "DequantizeLinear" and _per_tensor_8bit(dq, constants):
        zero_point = int(numpy_helper.to_array(constants[dq.input[2]])) if len(dq.input) > 2 and dq.input[2] else 0
        start = dq.input[0]
    readers = index.readers.get(output, [])
    end, quantize_as = output, ()
    graph_output = output in index.outputs
    if zero_point is not None and len(readers) == 1 and readers[0].op_type == "QuantizeLinear" and not graph_output:
        end = readers[0].output[0]
    elif (made_by.get(output) is not None and made_by[output].op_type in MAX_POOL_OPS and readers and not graph_output
          and all(r.op_type == "QuantizeLinear" for r in readers)):
        # A float max read only by QuantizeLinear: max commutes with a monotone Q, and a
        # rewrite may build it quantized from its input quantized so; judged after the Q.
        end = readers[0].output[0]
    elif zero_point is not None:
        quantize_as = _quantizer_further_on(index, output)
    return start, end, zero_point, quantize_as


_WALK = 8  # ops walked through to a DQ or a Q


def _quantizer_further_on(index: QdqIndex, output: str) -> tuple[str, ...]:
    """(scale, zero point) of the first per-tensor 8-bit QuantizeLinear reached from
    ``output`` through ops that only move or pick values (or a Concat); () if none."""
    frontier, seen = [output], set()
    for _ in range(_WALK):
        following = []
        for name in frontier:
            for node in index.readers.get(name, []):
                if node.op_type == "QuantizeLinear" and node.input[0] == name and _per_tensor_8bit(node, index.constants) and len(node.input) > 2:
                    return (node.input[1], node.input[2])
                if node.op_type in _PICKING_OPS and node.output and node.output[0] not in seen:
                    seen.add(node.output[0])
                    following.append(node.output[0])
        frontier = following
    return ()


def _per_tensor_8bit(node: onnx.NodeProto, constants: Mapping[str, onnx.TensorProto]) -> bool:
    """A DequantizeLinear with a constant scalar scale and an 8-bit zero point (or none: uint8 0)."""
    scale = constants.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None or int(np.prod(scale.dims, dtype=np.int64)) != 1:
        return False
    if len(node.input) < 3 or not node.input[2]:
        return True
    zp = constants.get(node.input[2])
    return zp is not None and zp.data_type in _EIGHT_BIT and int(np.prod(zp.dims, dtype=np.int64)) == 1


def integer_values(kind: str, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, floor: Optional[int]) -> np.ndarray:
    """Adversarial integers for a check that starts at a quantized tensor: ``"full-range"``
    (uniform over the dtype), ``"low"`` (the lowest quarter: the all-negative suite of a
    zero point in the middle), ``"tie-heavy"`` (five adjacent values: ties in every
    window). ``floor`` (a provably non-negative start's zero point) bounds them below."""
    info = np.iinfo(dtype)
    lo = info.min if floor is None else max(info.min, floor)
    hi = info.max
    if kind == "low":
        hi = lo + max((hi - lo) // 4, 1)
    elif kind == "tie-heavy":
        middle = lo + (hi - lo) // 2
        lo, hi = middle - 2, middle + 2
    return rng.integers(lo, hi + 1, shape).astype(dtype)


INTEGER_SUITES = ("full-range", "low", "tie-heavy")
