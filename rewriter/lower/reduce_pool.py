"""ReduceMean / ReduceMax over all spatial axes with keepdims: global pools in disguise.

PyTorch's dynamo exporter writes ``AdaptiveAvgPool2d(1)`` as ``ReduceMean`` and
``AdaptiveMaxPool2d(1)`` as ``ReduceMax``. When a reduce covers exactly the
spatial axes of an N, C, spatial... tensor and keeps its dims, it computes
GlobalAveragePool / GlobalMaxPool and is lowered the same way. Any other
reduce is not a pool and the pass leaves it alone without a report row.
"""

from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from .checks import refuse_site, resolve_spec
from .global_pool import lower_global_pool

KIND = {"ReduceMean": "average", "ReduceMax": "max"}


class ReducePoolRule:
    op_types = ("ReduceMean", "ReduceMax")

    def is_pool(self, site: PoolSite) -> bool:
        """Reduces exactly axes 2.. of a rank >= 3 input and keeps them."""
        if site.input_shape is None or len(site.input_shape) < 3 or not site.attrs.get("keepdims", 1):
            return False
        axes = site.attrs.get("axes")
        if axes is None:
            return False  # no axes means "all axes" (or none): not a per-channel pool
        rank = len(site.input_shape)
        return sorted(a % rank for a in axes) == list(range(2, rank))

    def check(self, site: PoolSite) -> Optional[str]:
        return refuse_site(site) or resolve_spec(site, KIND[site.op_type])

    def rewrite(self, site: PoolSite, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        assert site.spec is not None
        return lower_global_pool(b, x, site.spec, input_nonnegative=site.input_nonnegative)
