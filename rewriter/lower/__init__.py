"""Lowering rules: one per pool op family.

Each rule has ``check(site) -> reason | None`` (None means it applies; the
reason is what the report shows for a kept node) and ``rewrite(site, builder)``
which builds the replacement and returns its result tensor.
"""

from __future__ import annotations

from typing import Optional, Protocol

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..ops import POOL_OPS, SITE_OPS
from ..site import PoolSite
from .average_pool import AveragePoolRule
from .global_pool import GlobalPoolRule
from .lp_pool import LpPoolRule
from .max_pool import MaxPoolRule
from .reduce_pool import ReducePoolRule


class Rule(Protocol):
    op_types: tuple[str, ...]

    def check(self, site: PoolSite) -> Optional[str]: ...

    def rewrite(self, site: PoolSite, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor: ...


RULES: tuple[Rule, ...] = (MaxPoolRule(), AveragePoolRule(), GlobalPoolRule(), LpPoolRule(), ReducePoolRule())


def rule_for(op_type: str) -> Rule:
    for rule in RULES:
        if op_type in rule.op_types:
            return rule
    raise KeyError(op_type)


__all__ = ["Rule", "RULES", "POOL_OPS", "SITE_OPS", "rule_for"]
