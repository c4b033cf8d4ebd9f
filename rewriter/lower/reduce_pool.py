"""ReduceMean / ReduceMax over all spatial axes with keepdims: global pools in disguise.

PyTorch's dynamo exporter writes ``AdaptiveAvgPool2d(1)`` as ``ReduceMean`` and
``AdaptiveMaxPool2d(1)`` as ``ReduceMax``. When a reduce covers exactly the
spatial axes of an N, C, H, W... tensor (rank >= 4) and keeps its dims, it
computes GlobalAveragePool / GlobalMaxPool and is lowered the same way. Any
other reduce is not a pool and the pass leaves it alone without a report row:
in particular a rank-3 ``ReduceMean(axes=[-1])``, which is far more often a
LayerNorm's mean over the features of ``[N, tokens, features]`` than a 1-D
global pool, and which NPU compilers fuse as a LayerNorm only if it stays.
"""

from __future__ import annotations

from typing import Union

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from .checks import Lowering, PoolPlan, Refusal
from .global_pool import lower_global_pool, plan_global_pool

KIND = {"ReduceMean": "average", "ReduceMax": "max"}


class ReducePoolRule:
    op_types = ("ReduceMean", "ReduceMax")

    def is_pool(self, site: PoolSite) -> bool:
        """Whether the reduce is a global pool: keepdims=1 on a rank >= 4 input, reducing
        exactly the axes after the channel axis (2 .. rank-1, negative axes normalised).

        ``site.attrs["axes"]`` holds the attribute (opset < 18) or the constant second
        input (opset 18+). Missing or empty axes reduce every axis, or nothing with
        ``noop_with_empty_axes=1``: neither is a pool.
        """
        if site.input_shape is None or not site.attrs.get("keepdims", 1):
            return False
        rank = len(site.input_shape)
        axes = site.attrs.get("axes")
        if rank < 4 or not axes:
            return False
        if any(not -rank <= int(a) < rank for a in axes):
            return False  # out of range: invalid, and not ours to judge
        normalised = [int(a) % rank for a in axes]
        return len(set(normalised)) == len(normalised) and sorted(normalised) == list(range(2, rank))

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
        return plan_global_pool(site, KIND[site.op_type], lowering, variant)

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        return lower_global_pool(b, x, plan)
