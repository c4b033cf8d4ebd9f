"""LpPool and GlobalLpPool: reported, never rewritten.

For p other than 1 and infinity the p-norm is not piecewise-linear, so no
network of Conv, Relu, Add and Concat computes it exactly.
"""

from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite


class LpPoolRule:
    op_types = ("LpPool", "GlobalLpPool")

    def check(self, site: PoolSite) -> Optional[str]:
        return f"{site.op_type} is not piecewise-linear: no Conv/Relu/Add/Concat network computes it exactly"

    def rewrite(self, site: PoolSite, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        raise NotImplementedError("LpPool is never rewritten")
