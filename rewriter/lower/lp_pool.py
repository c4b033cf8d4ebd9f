"""LpPool and GlobalLpPool: reported, never rewritten.

For p other than 1 and infinity the p-norm is not piecewise-linear, so no
network of Conv, Relu, Add and Concat computes it exactly.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from .checks import Lowering, PoolPlan, Refusal


class LpPoolRule:
    op_types = ("LpPool", "GlobalLpPool")

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Refusal:
        return Refusal(f"{site.op_type} is not piecewise-linear: no Conv/Relu/Add/Concat network computes it exactly")

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        raise NotImplementedError("LpPool is never rewritten")
