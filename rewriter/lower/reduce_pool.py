"""ReduceMean / ReduceMax acting as global pools (:mod:`rewriter.reductions` says which).

* **Channels first** (``NCHW``, axes ``2..``): a GlobalAveragePool / GlobalMaxPool in
  disguise, lowered the same way (:mod:`.global_pool`).
* **Channels last** (``NHWC``, axes ``1 .. rank-2``): no Transpose. The tensor
  ``[N, H, W, C]`` is read as an NCHW one whose channels are ``H`` and whose spatial
  axes are ``(W, C)``. The mean is one group-1 Conv with an ``H x W x 1`` kernel of
  weights ``1/(H W)``: it sums H (the channels) and W (the kernel's height) for every C
  (its width 1 keeps C). Where that kernel breaks the target's conv limits, the mean
  over W is a depthwise pool over the spatial axes of kernel ``(W, 1)`` (laid out or
  cascaded within the limits like any average), then a 1x1 conv of weights ``1/H``
  over the channels. The max is a depthwise global max over ``W`` (kernel ``(W, 1)``,
  as any max pool), then a ladder over the channel axis: each level halves the
  channels with two 1x1 group-1 convs (``a - b`` and ``b`` of each pair), a Relu and
  an Add, ``max(a, b) = relu(a - b) + b``.
* **Channels last without a batch axis** (``HWC``, axes ``0 .. rank-2``): a conv reads
  axis 0 as its batch axis and never mixes values across it, so no program of Conv,
  Relu, Add and Concat computes the reduction; with Reshape it is read as
  ``[1, H, W, C]`` and lowered as NHWC.
* **keepdims 0** (or a chain that drops axes) changes the rank, which no conv does:
  the result is reshaped where the target allows Reshape, else the node is kept
  with that reason.

A chain of reductions is rewritten from its first node's input; its earlier nodes
go with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Union

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..profile import conv_violations
from ..reductions import CHANNELS_FIRST, CHANNELS_LAST_NO_BATCH, ReduceChain
from ..site import PoolSite
from ..spec import AxisSpec, PoolSpec
from .checks import STATIC_SHAPE_HINT, Lowering, PoolPlan, Refusal
from .global_pool import StridedMaxPlan, _strided_axis, lower_global_pool, plan_global_pool
from .max_pool import plan_max_pool

KIND = {"ReduceMean": "average", "ReduceMax": "max"}


@dataclass(frozen=True)
class ReductionPlan(PoolPlan):
    """A reduction lowered around a pool plan: ``inner`` (the global pool of channels
    first; for channels last, the pool over the spatial axes but the last, None when
    ``single_conv`` does it all or there are none), then for channels last the
    reduction over the channel axis; ``view`` is the shape the convs read (after
    ``reshape_in``), ``reshape_out`` the output's shape when the rank changes."""

    inner: Optional[PoolPlan] = None
    layout: str = CHANNELS_FIRST
    view: tuple = ()
    single_conv: bool = False
    reshape_in: Optional[tuple[int, ...]] = None
    reshape_out: Optional[tuple[int, ...]] = None

    @property
    def channels(self) -> int:
        return int(self.view[1])

    @property
    def strategy(self) -> str:
        """E.g. ``NHWC: strided max 2/s2 + 3/s1 x none + channel max ladder (3 levels) + Reshape``."""
        parts = []
        if self.reshape_in is not None:
            parts.append("Reshape")
        inner = replace(self.inner, axes=self.axes) if self.inner is not None and self.axes else self.inner
        if self.layout == CHANNELS_FIRST:
            parts.append((inner.strategy if inner is not None else "") or "global pool")
        elif self.single_conv:
            parts.append("one channel conv")
        else:
            if inner is not None:
                parts.append(inner.strategy or "spatial mean conv")
            if self.channels > 1:
                levels = math.ceil(math.log2(self.channels))
                parts.append("channel mean conv" if self.spec.kind == "average" else f"channel max ladder ({levels} levels)")
        if self.reshape_out is not None:
            parts.append("Reshape")
        return f"{self.layout}: " + " + ".join(parts)


class ReducePoolRule:
    op_types = ("ReduceMean", "ReduceMax")

    def is_pool(self, site: PoolSite) -> bool:
        """Whether the reduce acts as a global pool (:func:`rewriter.reductions.pooling_reduction`
        found one ending at it when the site was built)."""
        return site.reduction is not None

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
        """The global pool's plan (channels first, same rank), else a :class:`ReductionPlan`
        or why the reduction is kept."""
        chain = site.reduction
        assert chain is not None
        kind = KIND[site.op_type]
        reshape_out = _reshape_out(site, chain)
        if chain.layout == CHANNELS_FIRST and reshape_out is None:
            return plan_global_pool(site, kind, lowering, variant)  # GlobalAveragePool / GlobalMaxPool in disguise
        why = _refusal(site, chain, lowering, reshape_out)
        if why is not None:
            return Refusal(why)
        if chain.layout == CHANNELS_FIRST:
            inner = plan_global_pool(site, kind, lowering, variant)
            if isinstance(inner, Refusal):
                return inner
            return ReductionPlan(inner.spec, inner.axes, inner=inner, view=tuple(site.input_shape), reshape_out=reshape_out)  # type: ignore[arg-type]
        reshape_in = None
        view = tuple(site.input_shape)  # type: ignore[arg-type]
        if chain.layout == CHANNELS_LAST_NO_BATCH:
            view = (1,) + view
            reshape_in = view
        return _plan_channels_last(site, kind, lowering, view, reshape_in, reshape_out)

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        """Build ``plan`` on ``x``, the chain's start."""
        if not isinstance(plan, ReductionPlan):
            return lower_global_pool(b, x, plan)
        inner = replace(plan.inner, axes=plan.axes) if plan.inner is not None and plan.axes else plan.inner
        y = x
        if plan.reshape_in is not None:
            y = b.reshape(y, plan.reshape_in, extents=plan.view[2:])
        if plan.layout == CHANNELS_FIRST:
            assert inner is not None
            y = lower_global_pool(b, y, inner)
        elif plan.single_conv:
            reduced = plan.view[2:-1]
            weights = np.full((1, plan.channels, *reduced, 1), 1.0 / (plan.channels * math.prod(reduced)))
            y = b.channel_conv(y, weights, hint="mean")
        else:
            if inner is not None:
                y = lower_global_pool(b, y, inner)
            if plan.channels > 1:
                y = _channel_mean(b, y, plan.channels) if plan.spec.kind == "average" else _channel_max(b, y, plan.channels)
        if plan.reshape_out is not None:
            y = b.reshape(y, plan.reshape_out)
        return y


def _reshape_out(site: PoolSite, chain: ReduceChain) -> Optional[tuple[int, ...]]:
    """The output's shape for a Reshape (0 for a dynamic batch) when it is not the shape
    the convs leave (the input's rank, reduced axes 1, and for channels last the
    channel axis last), else None."""
    shape = site.input_shape
    if shape is None:
        return None
    out = chain.out_shape(shape)
    if chain.layout == CHANNELS_LAST_NO_BATCH:
        conv = (1,) + tuple(1 if a in chain.axes else d for a, d in enumerate(shape))
    else:
        conv = tuple(1 if a in chain.axes else d for a, d in enumerate(shape))
    if out == conv:
        return None
    return tuple(0 if i == 0 and not isinstance(d, int) else int(d) for i, d in enumerate(out))  # type: ignore[arg-type]


def _refusal(site: PoolSite, chain: ReduceChain, lowering: Lowering, reshape_out: Optional[tuple[int, ...]]) -> Optional[str]:
    """Why a channels-last or rank-changing reduction is kept, or None."""
    target = lowering.target
    why = target.dtype_refusal(site.dtype_name)
    if why:
        return why
    if site.between_qdq or site.qdq is not None:
        return "a channels-last or rank-changing reduction in a QDQ region: only channels-first ones that keep their rank have a quantized lowering"
    shape = site.input_shape
    if shape is None:
        return f"input shape unknown: {STATIC_SHAPE_HINT}"
    first = 0 if chain.layout == CHANNELS_LAST_NO_BATCH else 1  # the batch axis may stay dynamic
    if not all(isinstance(d, int) and d > 0 for d in shape[first:]):
        return f"dynamic dims {list(shape)}: the lowering needs every dim but the batch static; {STATIC_SHAPE_HINT}"
    where = target.profile.name if target.profile is not None else "the strict op set"
    through = "--allow Reshape, or a profile listing it, lets it through"
    if chain.layout == CHANNELS_LAST_NO_BATCH and not target.can("Reshape"):
        return (f"reduces axis 0, which a conv reads as its batch axis: no Conv/Relu/Add/Concat program mixes values "
                f"across it; needs Reshape, an op not in {where} ({through})")
    if reshape_out is not None and not target.can("Reshape"):
        return (f"changes the rank ({len(shape)} -> {len(reshape_out)}, keepdims 0), which no Conv/Relu/Add/Concat "
                f"program does; needs Reshape, an op not in {where} ({through})")
    return None


def _plan_channels_last(
    site: PoolSite, kind: str, lowering: Lowering, view: tuple, reshape_in: Optional[tuple[int, ...]], reshape_out: Optional[tuple[int, ...]]
) -> Union[PoolPlan, Refusal]:
    """Channels last: the pool over the spatial axes but the last (``view[2:-1]``, the
    channel axis ``view[1]``'s convs), then the reduction over the channel axis."""
    channels, spatial = int(view[1]), [int(d) for d in view[2:]]
    reduced, last = spatial[:-1], spatial[-1]
    spec = PoolSpec(kind, tuple(AxisSpec(n, n, 1, 1, 0, 0, 1) for n in reduced) + (AxisSpec(last, 1, 1, 1, 0, 0, last),))
    plan = ReductionPlan(spec, layout=site.reduction.layout, view=view, reshape_in=reshape_in, reshape_out=reshape_out)  # type: ignore[union-attr]
    target = lowering.target
    if kind == "average":
        kernel = [*reduced, 1]
        rank = len(kernel)
        broken = target.profile is not None and conv_violations(kernel, [1] * rank, [1] * rank, [0] * (2 * rank), channels == 1, target.conv_limits)
        if not broken:
            return replace(plan, single_conv=True)
        inner: Optional[PoolPlan] = PoolPlan(spec) if any(n > 1 for n in reduced) else None
        return replace(plan, inner=inner)
    if all(n == 1 for n in reduced):
        return plan
    inner_plan = _strided_spatial_max(spec, lowering) or plan_max_pool(spec, lowering, channels=channels, input_nonnegative=site.input_nonnegative)
    if isinstance(inner_plan, Refusal):
        return inner_plan
    return replace(plan, inner=inner_plan, axes=inner_plan.axes)


def _strided_spatial_max(spec: PoolSpec, lowering: Lowering) -> Optional[StridedMaxPlan]:
    """On a profile, the max over the reduced spatial axes as strided max stages whose convs
    fit its limits (:func:`~.global_pool.plan_strided_max`, the kept last axis left out)."""
    target = lowering.target
    if target.profile is None or not {"Conv", "Relu", "Add"} <= target.ops:
        return None
    stages = []
    for axis, a in enumerate(spec.axes[:-1]):
        if a.size == 1:
            continue
        found = _strided_axis(spec.rank, axis, a.size, target)
        if found is None:
            return None
        stages += [(axis, k, s) for k, s in found]
    return StridedMaxPlan(spec, stages=tuple(stages)) if stages else None


def _channel_mean(b: SubgraphBuilder, x: gs.Tensor, channels: int) -> gs.Tensor:
    """The mean over the channel axis: one 1x1 group-1 conv of weights ``1/channels``."""
    weights = np.full((1, channels) + (1,) * b.rank, 1.0 / channels)
    return b.channel_conv(x, weights, hint="channel_mean")


def _channel_max(b: SubgraphBuilder, x: gs.Tensor, channels: int) -> gs.Tensor:
    """The max over the channel axis, halving it per level: channel ``j`` of a level is
    ``relu(x[2j] - x[2j+1]) + x[2j+1]``, an odd last channel passed on as it is (its
    difference row is zero)."""
    y, n = x, channels
    while n > 1:
        m = (n + 1) // 2
        diff = np.zeros((m, n) + (1,) * b.rank)
        base = np.zeros((m, n) + (1,) * b.rank)
        for j in range(n // 2):
            diff[j, 2 * j], diff[j, 2 * j + 1] = 1.0, -1.0
            base[j, 2 * j + 1] = 1.0
        if n % 2:
            base[m - 1, n - 1] = 1.0
        gain = b.relu(b.channel_conv(y, diff, hint="cmax_diff"))
        y = b.add(gain, b.channel_conv(y, base, hint="cmax_base"))
        n = m
    return y
