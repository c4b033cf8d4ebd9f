"""A "same" MaxPool as a cascade of MaxPools the target runs natively.

A stride-1 MaxPool whose output q is the max over ``[q - left, q + right]``
(a centred window, :attr:`~rewriter.spec.AxisSpec.centred`) padded with -inf
equals two such pools in turn whose reaches add up: max is associative, and a
window of the second pool that reaches into the padding only drops positions
whose own windows lie inside the first's (the element between q and any tap is
real). So k = k1 + k2 - 1 per axis: SPPF's 5x5 is two 3x3 on TIDL, SPP's 13x13
is two 7x7 on RKNN.

The fewest stages win: for n = 1, 2, ... each axis's reach is split as evenly as
the n stages allow (the smallest largest window, and the fewest comparisons),
and the first n whose every stage the profile runs natively is the plan. One
stage re-emits the pool with explicit pads and no ceil_mode, for a target that
refuses only its auto_pad or ceil_mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..spec import AxisSpec, PoolSpec
from ..target import Target
from .checks import PoolPlan


@dataclass(frozen=True)
class CascadePlan(PoolPlan):
    """A max pool built as native MaxPools in turn, each stage's resolved spec."""

    stages: tuple[PoolSpec, ...] = ()

    @property
    def strategy(self) -> str:
        """E.g. ``cascade of native MaxPool 3x3 + 3x3``."""
        kernels = " + ".join("x".join(str(a.kernel) for a in stage.axes) for stage in self.stages)
        return f"cascade of native MaxPool {kernels}" if len(self.stages) > 1 else f"native MaxPool {kernels}"


def plan_native_cascade(spec: PoolSpec, target: Target) -> Optional[CascadePlan]:
    """The cascade of the fewest native MaxPools that computes ``spec`` exactly, or None
    (no native MaxPool on the target, a window that is not centred, or no split fits)."""
    if target.profile is None or "MaxPool" not in target.profile.pools:
        return None
    if spec.kind != "max" or not all(a.centred for a in spec.axes):
        return None
    reaches = [a.reach for a in spec.axes]
    for count in range(1, max(1, *(max(r) for r in reaches)) + 1):
        splits = [(_even_split(left, count), _even_split(right, count)) for left, right in reaches]
        stages = tuple(
            PoolSpec("max", tuple(_centred_axis(a.size, lefts[i], rights[i]) for a, (lefts, rights) in zip(spec.axes, splits)))
            for i in range(count)
        )
        if all(target.native_pool_refusal("MaxPool", stage) is None for stage in stages):
            return CascadePlan(spec, stages=stages)
    return None


def lower_native_cascade(b: SubgraphBuilder, x: gs.Tensor, plan: CascadePlan) -> gs.Tensor:
    """Build the cascade: one native MaxPool per stage."""
    y = x
    for stage in plan.stages:
        y = b.native_max_pool(y, stage)
    return y


def _even_split(reach: int, count: int) -> list[int]:
    """``reach`` as ``count`` parts differing by at most one, largest first."""
    return [reach // count + (1 if i < reach % count else 0) for i in range(count)]


def _centred_axis(size: int, left: int, right: int) -> AxisSpec:
    return AxisSpec(size, left + right + 1, 1, 1, left, right, size)
