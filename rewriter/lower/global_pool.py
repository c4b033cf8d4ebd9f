"""GlobalMaxPool and GlobalAveragePool: a pool whose window is the whole extent.

With static spatial dims they are exactly a MaxPool or AveragePool with
``kernel = extent``, so they reuse those lowerings through the same spec.
"""

from __future__ import annotations

from typing import Union

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from .average_pool import lower_average_pool
from .checks import Lowering, PoolPlan, Refusal, checked_spec
from .max_pool import lower_max_pool, plan_max_pool


def plan_global_pool(site: PoolSite, kind: str, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
    """The plan of a pool over the whole (static) extent, "max" or "average"."""
    spec = checked_spec(site, kind, lowering, variant)
    if isinstance(spec, Refusal):
        return spec
    if kind == "average":
        return PoolPlan(spec)
    # A whole-extent window touches no padding, so non-negativity buys nothing.
    return plan_max_pool(spec, lowering, channels=int(site.input_shape[1]), input_nonnegative=site.input_nonnegative)  # type: ignore[index,arg-type]


def lower_global_pool(b: SubgraphBuilder, x: gs.Tensor, plan: PoolPlan) -> gs.Tensor:
    """Build a global pool; its spec comes from :func:`rewriter.spec.global_pool_spec`."""
    if plan.spec.kind == "max":
        return lower_max_pool(b, x, plan)
    return lower_average_pool(b, x, plan.spec)


class GlobalPoolRule:
    """GlobalMaxPool and GlobalAveragePool with static spatial dims."""

    op_types = ("GlobalMaxPool", "GlobalAveragePool")

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
        return plan_global_pool(site, "max" if site.op_type == "GlobalMaxPool" else "average", lowering, variant)

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        return lower_global_pool(b, x, plan)
