"""GlobalMaxPool and GlobalAveragePool: a pool whose window is the whole extent.

With static spatial dims they are exactly a MaxPool or AveragePool with
``kernel = extent``, so they reuse those lowerings through the same spec.
On a target (``--target``), first:

* a cascade of the pools the target runs natively (:func:`~.max_cascade.plan_global_native_cascade`):
  tidl's 40x40 average is an AveragePool 2x2/s2, then its native GlobalAveragePool
  on 20x20;
* for the max, a cascade of short strided max stages built from convs, one axis at
  a time (:func:`plan_strided_max`): no padding, no dilation and no Concat, so it fits
  profiles the whole-extent ladder breaks (its pairwise maxes are dilated up to half
  the extent), and it reads a shrinking map.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..profile import conv_violations
from ..site import PoolSite
from ..spec import PoolSpec
from ..target import Target
from .average_cascade import Stage, build_cascade, cascade_stages
from .average_pool import lower_average_pool, plain_fits
from .checks import Lowering, PoolPlan, Refusal, checked_spec
from .max_cascade import GlobalCascadePlan, lower_global_native_cascade, plan_global_native_cascade
from .max_pool import lower_max_pool, plan_max_pool
from .qdq_average import qdq_average_plan
from .qdq_max import qdq_lowering, qdq_site_refusal

MaxStage = tuple[int, int, int]  # (spatial axis, kernel, stride) of one strided max stage


@dataclass(frozen=True)
class AverageCascadePlan(PoolPlan):
    """A global average as a cascade of strided depthwise convs (:mod:`.average_cascade`)."""

    stages: tuple[Stage, ...] = ()

    @property
    def strategy(self) -> str:
        """E.g. ``conv cascade 2x2/s2 pad 1 + 2x2/s2 + 2x2/s2``."""
        return "conv cascade " + " + ".join(stage.describe() for stage in self.stages)


@dataclass(frozen=True)
class StridedMaxPlan(PoolPlan):
    """A global max as strided max stages along one axis at a time, each ``k`` taps at
    stride ``s`` over windows that cover the axis (no padding)."""

    stages: tuple[MaxStage, ...] = ()

    @property
    def strategy(self) -> str:
        """E.g. ``strided max 2/s2 + 2/s2 + 5/s1 x 2/s2 + ...`` (per axis)."""
        per_axis = [" + ".join(f"{k}/s{s}" for ax, k, s in self.stages if ax == axis) or "none" for axis in range(self.spec.rank)]
        return "strided max " + " x ".join(per_axis)


def plan_global_pool(site: PoolSite, kind: str, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
    """The plan of a pool over the whole (static) extent, "max" or "average"."""
    refused = qdq_site_refusal(site)
    if refused:
        return refused
    spec = checked_spec(site, kind, lowering, variant)
    if isinstance(spec, Refusal):
        return spec
    if kind == "average" and site.between_qdq:
        return qdq_average_plan(site, spec, lowering)
    lowering = qdq_lowering(site, lowering)
    native = plan_global_native_cascade(spec, lowering.target)
    if native is not None:
        return native
    if kind == "average":
        limits = lowering.target.conv_limits
        stages = None if lowering.target.profile is None or plain_fits(spec, limits) else cascade_stages(spec, limits)
        return AverageCascadePlan(spec, stages=tuple(stages)) if stages else PoolPlan(spec)
    # Its stages are nested relu chains: not in a QDQ region (rewriter.lower.qdq_max).
    strided = None if site.between_qdq else plan_strided_max(spec, lowering.target)
    if strided is not None:
        return strided
    # A whole-extent window touches no padding, so non-negativity buys nothing.
    return plan_max_pool(spec, lowering, channels=int(site.input_shape[1]), input_nonnegative=site.input_nonnegative)  # type: ignore[index,arg-type]


def plan_strided_max(spec: PoolSpec, target: Target) -> Optional[StridedMaxPlan]:
    """On a target profile, the global max as strided max stages whose every conv fits
    its conv limits, or None (no profile, Relu or Add not run, no stages fit, or a 1x1 map).

    A stage of ``k`` taps at stride ``s`` on an axis of ``n`` needs ``(n - k) % s == 0``:
    its windows then cover the axis without padding (overlap is harmless, max is
    idempotent), and ``(n - k) / s + 1`` values are left; the last stage has ``k = n``
    and any stride. Per axis, the fewest nodes (``3k - 2`` a stage), then the fewest MACs.
    """
    if target.profile is None or not {"Conv", "Relu", "Add"} <= target.ops:
        return None
    stages: list[MaxStage] = []
    for axis, a in enumerate(spec.axes):
        axis_stages = _strided_axis(spec.rank, axis, a.size, target)
        if axis_stages is None:
            return None
        stages += [(axis, k, s) for k, s in axis_stages]
    return StridedMaxPlan(spec, stages=tuple(stages)) if stages else None


def _strided_axis(rank: int, axis: int, size: int, target: Target) -> Optional[list[tuple[int, int]]]:
    """The (kernel, stride) stages that reduce one axis of ``size`` to 1 (Dijkstra on
    the length left), or None."""
    limits = target.conv_limits
    hi = limits.kernel.hi if limits.kernel is not None else size

    def fits(k: int, s: int) -> bool:
        kernel, strides = [1] * rank, [1] * rank
        kernel[axis], strides[axis] = k, s
        return not conv_violations(kernel, strides, [1] * rank, [0] * (2 * rank), True, limits)

    heap: list[tuple[int, int, int, list[tuple[int, int]]]] = [(0, 0, size, [])]
    settled: set[int] = set()
    while heap:
        nodes, macs, n, path = heapq.heappop(heap)
        if n in settled:
            continue
        settled.add(n)
        if n == 1:
            return path
        for k in range(2, min(n, hi) + 1):
            if k == n:  # the last stage: one window, any stride (the first that fits)
                options = [next(((k, s) for s in range(1, 9) if fits(k, s)), None)]
            else:
                options = [(k, s) for s in range(1, k + 1) if (n - k) % s == 0 and fits(k, s)]
            for option in filter(None, options):
                left = (n - k) // option[1] + 1
                if left < n and left not in settled:
                    heapq.heappush(heap, (nodes + 3 * k - 2, macs + k * k * left, left, path + [option]))
    return None


def lower_strided_max(b: SubgraphBuilder, x: gs.Tensor, plan: StridedMaxPlan) -> gs.Tensor:
    """Build each stage as the nested relu chain over its ``k`` taps, at its stride:
    ``e0 = relu(t0 - t1)``, ``ej = relu(tj - t(j+1) + e(j-1))``, max ``= t(k-1) + e(k-2)``;
    every conv has kernel ``k`` and no padding or dilation."""
    y = x
    for axis, k, s in plan.stages:
        level: Optional[gs.Tensor] = None
        for j in range(k - 1):
            taps = np.zeros(k)
            taps[j], taps[j + 1] = 1.0, -1.0
            diff = b.conv_along(y, axis, taps, stride=s, hint="gmax_diff")
            level = b.relu(diff if level is None else b.add(diff, level))
        base = np.zeros(k)
        base[-1] = 1.0
        assert level is not None  # k >= 2
        y = b.add(b.conv_along(y, axis, base, stride=s, hint="gmax_base"), level)
    return y


def lower_global_pool(b: SubgraphBuilder, x: gs.Tensor, plan: PoolPlan) -> gs.Tensor:
    """Build a global pool; its spec comes from :func:`rewriter.spec.global_pool_spec`."""
    if isinstance(plan, GlobalCascadePlan):
        return lower_global_native_cascade(b, x, plan)
    if isinstance(plan, StridedMaxPlan):
        return lower_strided_max(b, x, plan)
    if isinstance(plan, AverageCascadePlan):
        return build_cascade(b, x, plan.spec, list(plan.stages))
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
