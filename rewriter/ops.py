"""ONNX op names that the lowering and the validator both need, in one place."""

from __future__ import annotations

from typing import Sequence

import onnx

# The default ONNX domain, under both of its spellings.
ONNX_DOMAINS = ("", "ai.onnx")

# Pool ops the pass lowers (lower.RULES handles exactly these and the reduces).
POOL_OPS: frozenset[str] = frozenset({"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "LpPool", "GlobalLpPool"})
# Max pools: their output values are some of their input's (a max picks one value of its window).
MAX_POOL_OPS: frozenset[str] = frozenset({"MaxPool", "GlobalMaxPool"})
# Reduces that are global pools in disguise when they reduce every axis after the channel axis.
REDUCE_POOL_OPS: frozenset[str] = frozenset({"ReduceMean", "ReduceMax"})
# Ops the pass looks at.
SITE_OPS: frozenset[str] = POOL_OPS | REDUCE_POOL_OPS


def is_onnx_op(node: onnx.NodeProto, op_types: frozenset[str]) -> bool:
    """``node`` is one of ``op_types`` of the default ONNX domain."""
    return node.op_type in op_types and node.domain in ONNX_DOMAINS


def onnx_opset(imports: Sequence[onnx.OperatorSetIdProto]) -> int:
    """The version of the default ONNX domain among ``imports`` (1 when absent)."""
    for imp in imports:
        if imp.domain in ONNX_DOMAINS:
            return int(imp.version)
    return 1
