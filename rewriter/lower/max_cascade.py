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
from itertools import product
from math import prod
from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..profile import PoolLimits
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


# -- global pools ------------------------------------------------------------------

# (the strided pool, the global pool) a global pool of each kind may become.
GLOBAL_POOL_OPS = {"max": ("MaxPool", "GlobalMaxPool"), "average": ("AveragePool", "GlobalAveragePool")}
# A global cascade has at most this many strided stages (each at least halves an axis
# on every profile with a stride of 2), and the search keeps this many maps per stage.
MAX_GLOBAL_STAGES = 10
GLOBAL_BEAM = 48


@dataclass(frozen=True)
class GlobalCascadePlan(PoolPlan):
    """A global pool built as native strided pools (``stages``), then, when ``finish``
    is set, the native global pool of the reduced map (its spec)."""

    op: str = "MaxPool"
    stages: tuple[PoolSpec, ...] = ()
    finish: Optional[PoolSpec] = None

    @property
    def strategy(self) -> str:
        """E.g. ``cascade of native AveragePool 2x2/s2 + GlobalAveragePool 20x20``."""
        def shown(values: list[int]) -> str:
            return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

        parts = [
            "x".join(str(a.kernel) for a in s.axes) + "/s" + shown([a.stride for a in s.axes])
            + (" pad " + shown([a.pad_end for a in s.axes]) if any(a.pad_end for a in s.axes) else "")
            for s in self.stages
        ]
        text = f"cascade of native {self.op} " + " + ".join(parts) if parts else "native"
        if self.finish is not None:
            text += (" + " if parts else " ") + GLOBAL_POOL_OPS[self.spec.kind][1] + " " + "x".join(str(a.size) for a in self.finish.axes)
        return text


def plan_global_native_cascade(spec: PoolSpec, target: Target) -> Optional[GlobalCascadePlan]:
    """A global pool (``spec`` from :func:`~rewriter.spec.global_pool_spec`) as the fewest
    native pools, or None.

    Max: MaxPools whose windows cover their input (overlap is harmless: max is
    idempotent; the end padding they may need is ONNX's -inf), down to 1 per axis.
    Average: AveragePools with kernel = stride tiling their input exactly (no padding,
    every window the same count, so the mean of means is the mean). Either may end
    with the native global pool of the reduced map. Fewest nodes first, then the fewest
    window taps read; a search over the maps each stage can reach, keeping the
    smallest :data:`GLOBAL_BEAM` per stage.
    """
    pools = target.profile.pools if target.profile is not None else {}
    pool_op, global_op = GLOBAL_POOL_OPS[spec.kind]
    if pool_op not in pools and global_op not in pools:
        return None
    if global_op in pools and pools[global_op].rewrite_even_if_native is not None:
        # The profile measured the conv rewrite cheaper than the target's own global pool
        # (ethos-u: Vela's MEAN); its native window pools are dearer than the convs too
        # (AVERAGE_POOL_2D of the whole map: 0.62-0.72x of the MEAN against 0.36-0.56x).
        return None
    finishes = global_op in pools
    level: dict[tuple[int, ...], tuple[int, tuple[PoolSpec, ...]]] = {tuple(a.size for a in spec.axes): (0, ())}
    best: Optional[tuple[int, GlobalCascadePlan]] = None
    for count in range(MAX_GLOBAL_STAGES + 1):
        # Plans of count + 1 nodes: count stages then the global pool, or count + 1 stages.
        for sizes, (cost, stages) in level.items():
            finish = PoolSpec(spec.kind, tuple(AxisSpec(n, n, 1, 1, 0, 0, 1) for n in sizes))
            if finishes and target.native_pool_refusal(global_op, finish) is None:
                total = cost + prod(sizes)
                if best is None or total < best[0]:
                    best = (total, GlobalCascadePlan(spec, op=pool_op, stages=stages, finish=finish))
        following: dict[tuple[int, ...], tuple[int, tuple[PoolSpec, ...]]] = {}
        if pool_op in pools:
            for sizes, (cost, stages) in level.items():
                for stage in _native_stages(spec.kind, sizes, pools[pool_op], pool_op, target):
                    after = stage.out_shape
                    total = cost + prod(after) * prod(a.kernel for a in stage.axes)
                    if after not in following or total < following[after][0]:
                        following[after] = (total, stages + (stage,))
        for sizes, (cost, stages) in following.items():
            if all(n == 1 for n in sizes) and (best is None or cost < best[0]):
                best = (cost, GlobalCascadePlan(spec, op=pool_op, stages=stages))
        if best is not None:
            return best[1]
        level = dict(sorted(following.items(), key=lambda item: (prod(item[0]), item[1][0]))[:GLOBAL_BEAM])
        if not level:
            return None
    return None


def plan_whole_window_native(spec: PoolSpec, target: Target) -> Optional[GlobalCascadePlan]:
    """A MaxPool or AveragePool whose one window is its whole input (no padding or
    dilation: an exported adaptive pool to 1x1) is that global pool, so on a profile it
    is the fewest native pools that compute it (:func:`plan_global_native_cascade`), or
    None. rknn-toolkit2 2.5.0 turns such an AveragePool into a GlobalAveragePool itself
    (``convert_avgpool_to_global``), so the native one builds exactly as the original
    does, compiler warnings included (measured, issue 22)."""
    if target.profile is None or not all(a.size == a.kernel and a.out_size == 1 and a.dilation == 1 and not a.pad_begin and not a.pad_end for a in spec.axes):
        return None
    return plan_global_native_cascade(PoolSpec(spec.kind, tuple(AxisSpec(a.size, a.size, 1, 1, 0, 0, 1) for a in spec.axes)), target)


def lower_global_native_cascade(b: SubgraphBuilder, x: gs.Tensor, plan: GlobalCascadePlan) -> gs.Tensor:
    """Build the cascade: one native pool per stage, then the native global pool."""
    y = x
    for stage in plan.stages:
        y = b.native_pool(plan.op, y, stage)
    if plan.finish is not None:
        y = b.native_pool(GLOBAL_POOL_OPS[plan.spec.kind][1], y, plan.finish)
    return y


def _native_stages(kind: str, sizes: tuple[int, ...], limits: PoolLimits, op: str, target: Target) -> list[PoolSpec]:
    """The native pools one stage of a global cascade may be, from a map of ``sizes``."""
    per_axis = [_axis_options(kind, n, limits) for n in sizes]
    if limits.square or limits.windows is not None:
        # One kernel (and, with windows, one stride) on every axis.
        keys = set(per_axis[0])
        for options in per_axis[1:]:
            keys &= set(options)
        combos = [tuple(options[key] for options in per_axis) for key in sorted(keys)]
    else:
        # The axes are independent: per axis, the cheapest way to each output size.
        shortlists = []
        for options in per_axis:
            by_size: dict[int, AxisSpec] = {}
            for a in sorted(options.values(), key=lambda a: (a.kernel, a.stride, a.pad_end)):
                by_size.setdefault(a.out_size, a)
            shortlists.append([by_size[n] for n in sorted(by_size)[:6]])
        combos = list(product(*shortlists))
    stages = []
    for axes in combos:
        if all(a.out_size == a.size for a in axes) and any(n > 1 for n in sizes):
            continue  # a stage that reduces nothing
        for count_include_pad in ((False, True) if kind == "average" else (False,)):
            stage = PoolSpec(kind, tuple(axes), count_include_pad=count_include_pad)
            if target.native_pool_refusal(op, stage) is None:
                stages.append(stage)
                break
    return stages


def _axis_options(kind: str, n: int, limits: PoolLimits) -> dict[tuple[int, int], AxisSpec]:
    """Per (kernel, stride), the window along one axis of extent ``n`` that a stage may
    use: covering it (max, end padding allowed) or tiling it (average, none)."""
    def allowed(r, value: int) -> bool:
        return r is None or value in r

    if limits.windows is not None:
        pairs = sorted(set(limits.windows))
    else:
        kernels = [k for k in range(1, n + 1) if allowed(limits.kernel, k)]
        if kind == "average":
            kernels = [k for k in kernels if n % k == 0]
        else:
            # The longest windows reduce the most; past n, one window over the padded axis.
            kernels = kernels[-24:] + [k for k in range(n + 1, n + 1 + (limits.kernel.lo if limits.kernel else 1)) if allowed(limits.kernel, k)][:1]
        pairs = []
        for k in kernels:
            strides = [s for s in range(1, k + 1) if allowed(limits.stride, s)]
            pairs += [(k, s) for s in (strides[-12:] if k < n else strides[:1] + strides[-1:])]
    options = {}
    for k, s in pairs:
        if kind == "average":
            if n % k == 0 and (s == k or k == n):
                options[(k, s)] = AxisSpec(n, k, s, 1, 0, 0, n // k)
            continue
        # The least end padding that makes the last window end on the last element.
        pad = next((p for p in range(max(0, k - n), k) if (n + p - k) % s == 0), None)
        if pad is not None and s <= k:
            options[(k, s)] = AxisSpec(n, k, s, 1, 0, pad, (n + pad - k) // s + 1)
    return options
