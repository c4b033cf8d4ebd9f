"""MaxPool lowered to Conv, Relu, Add and Concat.

Per axis (max over a box is the max along each axis in turn), the first
strategy of :data:`~rewriter.lower.max_strategies.MAX_STRATEGIES` that applies:

- Short windows (up to 5 taps): the nested relu chain of ``max_nested.py``,
  ``b + relu(t2 - b + relu(t1 - t2))``: one fused Conv+Add+Relu per tap, every
  conv evaluated at the output positions only.
- Longer windows: a doubling ladder of pairwise maxes, ``max(a, b) = relu(a - b)
  + b``: widths 1, 2, 4, ... then one last step with overlapping windows that also
  applies the stride. That is ceil(log2 k) pairwise maxes per axis.

ONNX pads MaxPool with -inf, and a conv pads with zeros. How the borders are
made exact:

- Input provably >= 0: the convs' own zero padding is already exact.
- Signed input, padding on one side (strided pools like ResNet's stem, ceil_mode
  overhang): the nested chain with the padded taps first, each level computed
  only where its tap is real.
- Signed input, padding on both sides: the anchored ladder. Every window has a
  tap that is real in all windows (the centre of a "same" pool); the ladder grows
  each window outward from it, and a step's relu term is simply left out where
  its other operand lies in the padding. No padded copy, no Concat.
- Large signed strided tensors padded on both sides: the nested chain exact on
  one side and zero-padded on the other (the zero-padded ladder for long kernels),
  then the few border outputs it gets wrong recomputed on thin slices and fixed
  exactly in place.
- Otherwise (no tap is real in every window: tiny extents): a padded copy, whose
  padded taps are replaced by a real element already in every window containing
  that tap (the edge element for dilation 1, the first or last element of the
  same residue class otherwise), built as a Concat of one-element selection convs
  and the input.

A "same" stride-1 pool whose input is already a max over some reach (SPPF's
chained pools, or the smaller pools of SPP's 5/9/13) grows from that reach with
anchored steps instead of starting over: 2 steps per axis where 4 would be needed.

On a target that runs smaller MaxPools natively, a "same" stride-1 pool is a
cascade of those instead (``max_cascade.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Optional, Sequence, Union

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from ..spec import AxisSpec, PoolSpec
from .checks import Lowering, PoolPlan, Refusal, checked_spec
from .max_cascade import CascadePlan, GlobalCascadePlan, lower_global_native_cascade, lower_native_cascade, plan_native_cascade, plan_whole_window_native
from .max_ladders import grow, pairwise_max, replicate_pad
from .max_strategies import AxisContext, NoStrategyError, choose
from .qdq_max import qdq_lowering, qdq_site_refusal
from .windows import conv_window_run

# The ops every shared ladder may emit: the target must run them all.
SHARED_LADDER_OPS = ("Conv", "Relu", "Add")


def plan_max_pool(
    spec: PoolSpec,
    lowering: Lowering,
    *,
    channels: int,
    input_nonnegative: bool,
    input_reach: Optional[tuple[tuple[int, int], ...]] = None,
) -> Union[PoolPlan, Refusal]:
    """Each axis's strategy, or why none applies. ``input_reach``: per axis, the (left,
    right) reach over which the input is already a max (it comes out of "same"
    stride-1 MaxPools, as in SPPF)."""
    if _strides_at_once(spec, lowering):
        inner = plan_max_pool(
            replace(spec, axes=tuple(a.at_stride_one() for a in spec.axes)),
            lowering,
            channels=channels,
            input_nonnegative=input_nonnegative,
            input_reach=input_reach,
        )
        if isinstance(inner, Refusal):
            return inner
        last = plan_max_pool(
            replace(spec, axes=spec.axes[-1:]), replace(lowering, max_strategies=tuple(
                s for s in lowering.max_strategies if s.name in STRIDES_AT_ONCE_LAST)),
            channels=channels, input_nonnegative=input_nonnegative,
            input_reach=input_reach[-1:] if input_reach else None,
        )
        if not isinstance(last, Refusal) and len({a.stride for a in spec.axes}) == 1:
            return StridesAtOncePlan(spec, inner.axes[:-1] + last.axes, inner, last_strided=True)
        return StridesAtOncePlan(spec, inner.axes, inner)
    values = channels * math.prod(a.size for a in spec.axes)
    choices = []
    for axis, a in enumerate(spec.axes):
        reach = input_reach[axis] if input_reach and len(input_reach) == spec.rank else (0, 0)
        context = AxisContext(lowering.target, input_nonnegative, reach, values)
        try:
            choices.append(choose(a, context, lowering.max_strategies))
        except NoStrategyError as err:
            return Refusal(f"spatial axis {axis}: {err}", spec=spec)
    return PoolPlan(spec, tuple(choices))


@dataclass(frozen=True)
class StridesAtOncePlan(PoolPlan):
    """A strided pool on a target whose depthwise convs take one stride on every axis
    (``equal_strides``, or ``depthwise_kernels``): each axis at stride 1 (``inner``),
    then one pick conv applies every axis's stride at once."""

    inner: Optional[PoolPlan] = None
    # The last axis built at its own stride, its convs that read the other axes' result
    # applying their strides too (every such conv strides that axis: the nested chain).
    last_strided: bool = False

    @property
    def strategy(self) -> str:
        strides = "x".join(str(a.stride) for a in self.spec.axes)
        if self.last_strided:
            names = [c.strategy.name for c in self.axes]
            return f"{' x '.join(names[:-1])} at stride 1 x {names[-1]}, strides {strides} at once"
        return f"{self.inner.strategy} at stride 1, then strides {strides} at once"  # type: ignore[union-attr]


# The last-axis strategies whose every conv reading the axis's input strides it.
STRIDES_AT_ONCE_LAST = frozenset({"nested-chain", "single-tap"})


def _strides_at_once(spec: PoolSpec, lowering: Lowering) -> bool:
    limits = lowering.target.conv_limits
    joint = limits.equal_strides or limits.depthwise_kernels is not None
    return joint and spec.rank > 1 and any(a.stride > 1 for a in spec.axes)


def lower_max_pool(b: SubgraphBuilder, x: gs.Tensor, plan: PoolPlan) -> gs.Tensor:
    """Build the max pool ``plan`` describes, axis by axis; returns the result tensor."""
    if isinstance(plan, StridesAtOncePlan) and plan.last_strided:
        inner = plan.inner.spec.axes  # type: ignore[union-attr]
        y = x
        for axis, (a, choice) in enumerate(zip(inner[:-1], plan.axes[:-1])):
            y = choice.build(b, y, axis, a)
        b.strided_reads = (y.name, tuple(a.stride for a in plan.spec.axes))
        try:
            return plan.axes[-1].build(b, y, plan.spec.rank - 1, plan.spec.axes[-1])
        finally:
            b.strided_reads = None
    if isinstance(plan, StridesAtOncePlan):
        y = lower_max_pool(b, x, replace(plan.inner, axes=plan.axes))  # type: ignore[arg-type]  # the axes the pass traces
        return b.depthwise_conv(y, np.ones([1] * plan.spec.rank), strides=[a.stride for a in plan.spec.axes], hint="strides")
    y = x
    for axis, (a, choice) in enumerate(zip(plan.spec.axes, plan.axes)):
        y = choice.build(b, y, axis, a)
    return y


def shareable(spec: PoolSpec) -> bool:
    """Pools that can share one ladder along their first axis with others on the same input."""
    return all(a.stride == 1 and a.dilation == 1 for a in spec.axes) and spec.axes[0].kernel >= 2


def lower_shared_max_pools(b: SubgraphBuilder, x: gs.Tensor, plans: list[PoolPlan], *, input_nonnegative: bool) -> list[tuple[gs.Tensor, str]]:
    """Several stride-1 max pools of one input (SPP's 5/9/13), each planned as if alone;
    returns each output with the strategy that built it. Centred windows that nest:
    each from the one before (:func:`pools_from_each_other`). Otherwise one doubling
    ladder along the first axis: pad once by the largest pads (zeros for an input >= 0,
    else a padded copy), climb to the widest width needed, and give each pool its own
    last step at its offset; the other axes per pool, by their plans."""
    if not b.can("Max"):
        grown = pools_from_each_other(b, x, plans)
        if grown is not None:
            return grown
    firsts = [p.spec.axes[0] for p in plans]
    begin, end = max(a.pad_begin for a in firsts), max(a.used_end_pad for a in firsts)
    size = firsts[0].size
    if input_nonnegative:
        m, origin, length, pads = x, -begin, size, (begin, end)  # convs read x as zero outside it
    else:
        padding = AxisSpec(size, 1, 1, 1, begin, end, size + begin + end)  # only its pads matter
        m, origin, length, pads = replicate_pad(b, x, 0, padding), 0, size + begin + end, (0, 0)
    rungs = {1: (m, origin, length)}
    widest = max(_ladder_width(a.kernel) for a in firsts)
    width = 1
    while width < widest:
        shift = width
        m = pairwise_max(b, m, 0, shift=shift, stride=1, pads=pads)
        length = length + pads[0] + pads[1] - shift
        origin, pads, width = 0, (0, 0), width * 2
        rungs[width] = (m, origin, length)
    outputs = []
    for plan, a in zip(plans, firsts):
        w = _ladder_width(a.kernel)
        rung, origin, length = rungs[w]
        start = begin - a.pad_begin + origin  # this pool's first window, in the rung's coordinates
        run = dict(start=start, count=a.out_size, stride=1, dilation=a.kernel - w)
        if b.can("Max"):
            left = conv_window_run(b, rung, 0, length, taps=[1.0, 0.0], hint="max_left", **run)
            right = conv_window_run(b, rung, 0, length, taps=[0.0, 1.0], hint="max_right", **run)
            y = b.max(left, right)
        else:
            diff = conv_window_run(b, rung, 0, length, taps=[-1.0, 1.0], hint="max_diff", **run)
            base = conv_window_run(b, rung, 0, length, taps=[1.0, 0.0], hint="max_base", **run)
            y = b.max_step(b.relu(diff), base)
        for axis, (other, choice) in list(enumerate(zip(plan.spec.axes, plan.axes)))[1:]:
            y = choice.build(b, y, axis, other)
        outputs.append((y, " x ".join(["shared-ladder"] + [c.strategy.name for c in plan.axes[1:]])))
    return outputs


def pools_from_each_other(b: SubgraphBuilder, x: gs.Tensor, plans: list[PoolPlan]) -> Optional[list[tuple[gs.Tensor, str]]]:
    """"Same" stride-1 pools whose windows nest (SPP's 5/9/13): the smallest by its plan,
    then each larger one from the one before, whose outputs already hold the max over
    its reach, by anchored steps (:func:`grow`): 9x9 from 5x5 is 2 steps per axis, as
    in SPPF. None when some pool is not centred or the reaches do not nest."""
    specs = [p.spec for p in plans]
    if not all(a.centred for spec in specs for a in spec.axes):
        return None
    reaches = [tuple(a.reach for a in spec.axes) for spec in specs]
    order = sorted(range(len(specs)), key=lambda i: sum(left + right for left, right in reaches[i]))
    for inner, outer in pairwise(order):
        if any(l1 > l2 or r1 > r2 for (l1, r1), (l2, r2) in zip(reaches[inner], reaches[outer])):
            return None
    first = order[0]
    outputs = {first: (lower_max_pool(b, x, plans[first]), plans[first].strategy)}
    grown = " x ".join(["grow-from-reach"] * len(specs[0].axes))
    for previous, i in pairwise(order):
        y = outputs[previous][0]
        for axis, (have, target) in enumerate(zip(reaches[previous], reaches[i])):
            y = grow(b, y, axis, specs[i].axes[axis].size, have, target)
        if y is outputs[previous][0]:  # the same pool twice: each output needs a tensor of its own
            y = b.copy(y)
        outputs[i] = (y, grown)
    return [outputs[i] for i in range(len(specs))]


def _ladder_width(kernel: int) -> int:
    """The width the ladder climbs to before the last, overlapping step."""
    width = 1
    while 2 * width < kernel:
        width *= 2
    return width


@dataclass(frozen=True)
class SharedPlan:
    """Max pools of one input that share one ladder: their positions among the
    candidates, and each one's plan as if it were alone."""

    members: tuple[int, ...]
    plans: tuple[PoolPlan, ...]


class MaxPoolRule:
    """MaxPool (every opset) with its Indices output unused."""

    op_types = ("MaxPool",)

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
        if site.indices_used:
            return Refusal("Indices output is used: Conv/Relu/Add cannot produce argmax indices")
        refused = qdq_site_refusal(site)
        if refused:
            return refused
        lowering = qdq_lowering(site, lowering)
        # Natively run pools: cheaper than any Conv lowering, and blind to the extents
        # (the pass still rebuilds it for other stand-ins of dynamic ones, to be sure).
        spec = checked_spec(site, "max", lowering, variant, extents_matter=False)
        cascade = None if isinstance(spec, Refusal) else plan_native_cascade(spec, lowering.target)
        if cascade is not None:
            return cascade
        spec = checked_spec(site, "max", lowering, variant)
        if isinstance(spec, Refusal):
            return spec
        # One window over the whole input: the global max, native where the target runs it.
        whole = None if site.spatial_is_dynamic() else plan_whole_window_native(spec, lowering.target)
        if whole is not None:
            return whole
        # The reach's anchored steps depend on the extent: not with dynamic spatial dims.
        reach = None if site.spatial_is_dynamic() else site.input_reach
        return plan_max_pool(spec, lowering, channels=int(site.input_shape[1]), input_nonnegative=site.input_nonnegative, input_reach=reach)  # type: ignore[index,arg-type]

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        if isinstance(plan, CascadePlan):
            return lower_native_cascade(b, x, plan)
        if isinstance(plan, GlobalCascadePlan):
            return lower_global_native_cascade(b, x, plan)
        return lower_max_pool(b, x, plan)

    def shared_groups(self, candidates: Sequence[tuple[PoolSite, PoolPlan]], lowering: Lowering) -> list[SharedPlan]:
        """The group hook: which of ``candidates`` (selected MaxPools of one graph whose
        checks passed) share one ladder: pools on the same input whose shape allows it
        (SPP's 5/9/13), each planned as if its input were no max over a reach."""
        if lowering.target.refusal(SHARED_LADDER_OPS):
            return []
        by_input: dict[tuple, list[int]] = {}
        for i, (site, plan) in enumerate(candidates):
            if not site.spatial_is_dynamic() and shareable(plan.spec) and not isinstance(plan, (CascadePlan, GlobalCascadePlan)):
                by_input.setdefault((site.input_name, site.dtype_name, site.between_qdq), []).append(i)
        groups = []
        for members in by_input.values():
            alone = [(i, self._reach_free(candidates[i], lowering)) for i in members]
            kept = [(i, p) for i, p in alone if isinstance(p, PoolPlan)]
            if len(kept) > 1:
                groups.append(SharedPlan(tuple(i for i, _ in kept), tuple(p for _, p in kept)))  # type: ignore[misc]
        return groups

    def rewrite_group(self, sites: Sequence[PoolSite], group: SharedPlan, b: SubgraphBuilder, x: gs.Tensor) -> list[tuple[gs.Tensor, str]]:
        """Build a :meth:`shared_groups` group; each output with the strategy that built it."""
        return lower_shared_max_pools(b, x, list(group.plans), input_nonnegative=sites[0].input_nonnegative)

    @staticmethod
    def _reach_free(candidate: tuple[PoolSite, PoolPlan], lowering: Lowering) -> Union[PoolPlan, Refusal]:
        site, plan = candidate
        if site.input_reach is None:
            return plan
        lowering = qdq_lowering(site, lowering)
        return plan_max_pool(plan.spec, lowering, channels=int(site.input_shape[1]), input_nonnegative=site.input_nonnegative)  # type: ignore[index,arg-type]
