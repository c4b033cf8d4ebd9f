"""Lowering rules: one per pool op family.

Each rule has a pure ``check(site, lowering, variant=0)`` that returns a
:class:`~rewriter.lower.checks.Refusal` (what the report shows for a kept node)
or a :class:`~rewriter.lower.checks.PoolPlan`, and ``rewrite(site, plan,
builder, x)`` which builds that plan and returns its result tensor. A rule may
also have a group hook, ``shared_groups(candidates, lowering)`` with
``rewrite_group``, for nodes that are cheaper built together (SPP's pools).
"""

from __future__ import annotations

from typing import Protocol, Union

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..ops import POOL_OPS, SITE_OPS
from ..site import PoolSite
from .checks import Lowering, PoolPlan, Refusal
from .average_pool import AveragePoolRule
from .global_pool import GlobalPoolRule
from .lp_pool import LpPoolRule
from .max_pool import MaxPoolRule
from .reduce_pool import ReducePoolRule


class Rule(Protocol):
    op_types: tuple[str, ...]

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]: ...

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor: ...


RULES: tuple[Rule, ...] = (MaxPoolRule(), AveragePoolRule(), GlobalPoolRule(), LpPoolRule(), ReducePoolRule())


def rule_for(op_type: str) -> Rule:
    for rule in RULES:
        if op_type in rule.op_types:
            return rule
    raise KeyError(op_type)


__all__ = ["Rule", "RULES", "POOL_OPS", "SITE_OPS", "rule_for"]
