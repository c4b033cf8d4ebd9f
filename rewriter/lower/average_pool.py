"""AveragePool lowered to Conv and Add.

Zero padding contributes nothing to a sum, so the conv's own pads are exact.
onnxruntime's divisor is a product of per-axis counts (see
:meth:`PoolSpec.divisors`), which makes the pool separable:

* axes where every window has the same count fold into one N-D depthwise
  conv with weights ``1/K``;
* an axis with position-dependent counts (count_include_pad=0 with pads, or
  ceil_mode windows running past the end): one conv with the commonest count,
  plus, for the runs of windows with another count, the difference from thin
  convs over those windows, padded back to full length and added (no full-size
  Concat; both ends of an axis in one padding conv);
* windows that tile the input (global pools, kernel = stride without padding)
  whose plain conv breaks the target's conv limits: a cascade of short strided
  convs (:mod:`.average_cascade`).
"""

from __future__ import annotations

from itertools import groupby
from typing import NamedTuple, Optional, Union

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..profile import ConvLimits, conv_violations
from ..site import PoolSite
from ..spec import AxisSpec, PoolSpec
from .average_cascade import build_cascade, cascade_stages
from .checks import Lowering, PoolPlan, Refusal, checked_spec
from .max_cascade import GlobalCascadePlan, lower_global_native_cascade, plan_whole_window_native
from .qdq_max import qdq_site_refusal
from .windows import conv_window_run


# Above this many taps, one N-D kernel costs more weights than one 1-D conv per
# axis (a 55x55 global pool: 3025 weights per channel instead of 110).
MAX_FOLDED_TAPS = 64


def lower_average_pool(b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec) -> gs.Tensor:
    """Build the average pool of ``x`` described by ``spec``; returns the result tensor.
    In a QDQ region (the builder's :attr:`~SubgraphBuilder.one_conv_per_mean`) the
    mean is one conv however many taps it has: a second would round a partial mean."""
    max_taps = None if b.one_conv_per_mean else MAX_FOLDED_TAPS
    stages = None if plain_fits(spec, b.target.conv_limits, max_taps) else cascade_stages(spec, b.target.conv_limits)
    if stages:
        return build_cascade(b, x, spec, stages)
    divisors = [spec.divisors(i) for i in range(spec.rank)]
    uniform = [len(set(d)) == 1 for d in divisors]
    scale_op = "Div" if b.can("Div") else "Mul" if b.can("Mul") and not all(uniform) else None
    if scale_op:
        return sum_then_scale(b, x, spec, divisors, scale_op)
    y = x
    for group in folded_groups(spec, uniform, max_taps):
        y = uniform_axes_conv(b, y, spec, group, divisors)
    for axis, a in enumerate(spec.axes):
        if not uniform[axis]:
            y = average_along_axis(b, y, axis, a, divisors[axis])
    return y


def folded_groups(spec: PoolSpec, axes: list[bool], max_taps: Optional[int] = MAX_FOLDED_TAPS) -> list[list[bool]]:
    """The selected axes as one conv, or one conv per axis past ``max_taps`` taps (None: no limit)."""
    taps = 1
    for a, selected in zip(spec.axes, axes):
        taps *= a.kernel if selected else 1
    if max_taps is None or taps <= max_taps:
        return [axes] if any(axes) else []
    return [[i == j for j in range(spec.rank)] for i in range(spec.rank) if axes[i]]


def sum_then_scale(b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec, divisors: list[list[int]], op: str) -> gs.Tensor:
    """Profiles with Div or Mul: summing convs, then a constant divisor map.

    Div divides the sum by the count, as onnxruntime does (its summation order
    still differs); Mul multiplies by a rounded 1/count.
    """
    ones = [[1] * len(d) for d in divisors]
    summed = x
    for group in folded_groups(spec, [True] * spec.rank):
        summed = uniform_axes_conv(b, summed, spec, group, ones)
    counts = np.ones([1] * spec.rank)
    for axis, d in enumerate(divisors):
        shape = [1] * spec.rank
        shape[axis] = len(d) if len(set(d)) > 1 else 1
        counts = counts * np.asarray(d if len(set(d)) > 1 else d[:1], dtype=np.float64).reshape(shape)
    return b.scale_by_map(summed, op, counts if op == "Div" else 1.0 / counts)


class ConvShape(NamedTuple):
    """A depthwise conv's kernel shape, strides, dilations and pads (begins, then ends)."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pads: list[int]


def uniform_axes_shape(spec: PoolSpec, axes: list[bool]) -> ConvShape:
    """The conv of :func:`uniform_axes_conv` over the selected axes (the others untouched)."""
    picked = [(a.kernel, a.stride, a.dilation, a.pad_begin, a.conv_end_pad) if on else (1, 1, 1, 0, 0) for a, on in zip(spec.axes, axes)]
    kernel, strides, dilations, begins, ends = (list(column) for column in zip(*picked))
    return ConvShape(kernel, strides, dilations, begins + ends)


def uniform_axes_conv(
    b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec, uniform: list[bool], divisors: list[list[int]]
) -> gs.Tensor:
    """One conv over all axes whose divisor is the same for every window."""
    shape = uniform_axes_shape(spec, uniform)
    total = 1
    for is_uniform, div in zip(uniform, divisors):
        total *= div[0] if is_uniform else 1
    kernel = np.full(shape.kernel, 1.0 / total)
    return b.depthwise_conv(x, kernel, strides=shape.strides, dilations=shape.dilations, pads=shape.pads, hint="avg")


def plain_fits(spec: PoolSpec, limits: ConvLimits, max_taps: Optional[int] = MAX_FOLDED_TAPS) -> bool:
    """Whether the plain lowering's main convs (one per folded group of axes) fit ``limits``."""
    shapes = [uniform_axes_shape(spec, group) for group in folded_groups(spec, [True] * spec.rank, max_taps)]
    return not any(conv_violations(*shape, depthwise=True, limits=limits) for shape in shapes)


class Run(NamedTuple):
    """Consecutive outputs along one axis whose windows have the same count."""

    count: int
    first: int
    length: int

    @property
    def end(self) -> int:
        return self.first + self.length


def average_along_axis(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, divisors: list[int]) -> gs.Tensor:
    """Windows along one axis, each divided by its own count.

    One conv divides every window by the commonest count; each run of windows with
    another count gets the difference, ``sum * (1/count - 1/common)``: that conv's
    own outputs there rescaled by a thin conv, padded back to full length with zeros
    and added.
    onnxruntime fuses each such Add into a conv and keeps its blocked layout, which
    a full-size Concat would break. Runs at both ends (a "same" pool) share one
    thin tensor, ``[tail, head]``, and one conv puts both in place; with a single
    window at each end and one count, one two-tap conv makes that thin tensor.
    On a target that concatenates along the axis, the runs are convs of their own,
    concatenated.
    """
    runs, first = [], 0
    for count, run in groupby(divisors):
        length = len(list(run))
        runs.append(Run(count, first, length))
        first += length
    common = max(runs, key=lambda r: r.length).count

    def windows(first: int, length: int, weight: float, hint: str) -> gs.Variable:
        return conv_window_run(
            b, x, axis, a.size, start=a.window_start(first), count=length, stride=a.stride,
            taps=[weight] * a.kernel, dilation=a.dilation, hint=hint,
        )

    n = a.out_size
    if b.target.profile is not None and len(runs) > 1 and b.concat_runs_natively(axis):
        # On an accelerator a Concat of the runs is cheap, and each run's conv fits the
        # target's limits where placing corrections across the axis needs pads or
        # dilations as long as the axis (onnxruntime's CPU layout cost does not apply).
        return b.concat([windows(run.first, run.length, 1.0 / run.count, "avg_run") for run in runs], axis)
    main = windows(0, n, 1.0 / common, "avg")

    def difference(run: Run) -> gs.Variable:
        """``sum * (1/count - 1/common)`` over the run's windows: main's own outputs there,
        times ``common/count - 1``."""
        return conv_window_run(b, main, axis, n, start=run.first, count=run.length, stride=1, taps=[common / run.count - 1.0], hint="avg_fix")

    fixes = [run for run in runs if run.count != common]
    head, tail = _from_start(fixes), _to_end(fixes, n)
    y: Optional[gs.Tensor] = None
    if head and tail and len(head) + len(tail) == len(fixes):
        # Both ends from one thin tensor [tail, head] and one conv: its first tap puts
        # the tail at the end, its second (dilation = the extent) the head at the start.
        if len(head) == len(tail) == 1 and head[0].length == tail[0].length == 1 and head[0].count == tail[0].count:
            # One window at each end with one count ("same" pool, k = 2p + 1): main's last
            # and first outputs, by the same dilation trick.
            ends = b.conv_along(main, axis, [common / head[0].count - 1.0] * 2, dilation=n, pad_begin=1, pad_end=1, hint="avg_ends")
        else:
            thin = [difference(run) for run in tail + head]
            ends = thin[0] if len(thin) == 1 else b.concat(thin, axis)
        tail_length, head_length = n - tail[0].first, head[-1].end
        y = b.conv_along(ends, axis, [1.0, 1.0], dilation=n, pad_begin=n - tail_length, pad_end=n - head_length, hint="avg_place")
    else:
        for run in fixes:
            placed = b.conv_along(difference(run), axis, [1.0], pad_begin=run.first, pad_end=n - run.end, hint="avg_place")
            y = placed if y is None else b.add(placed, y)
    return main if y is None else b.add(main, y)


def _from_start(runs: list[Run]) -> list[Run]:
    """The runs that follow each other from output 0."""
    chained: list[Run] = []
    for run in runs:
        if run.first == (chained[-1].end if chained else 0):
            chained.append(run)
    return chained


def _to_end(runs: list[Run], out_size: int) -> list[Run]:
    """The runs that follow each other up to the last output, in order."""
    chained: list[Run] = []
    for run in reversed(runs):
        if run.end == (chained[0].first if chained else out_size):
            chained.insert(0, run)
    return chained


class AveragePoolRule:
    """AveragePool from opset 7 on (onnxruntime has no kernel for version 1)."""

    op_types = ("AveragePool",)

    def check(self, site: PoolSite, lowering: Lowering, variant: int = 0) -> Union[PoolPlan, Refusal]:
        why = lowering.target.pool_refusal(site.op_type)
        if why:
            return Refusal(why)
        refused = qdq_site_refusal(site)
        if refused:
            return refused
        spec = checked_spec(site, "average", lowering, variant)
        if isinstance(spec, Refusal):
            return spec
        if site.between_qdq:
            from .qdq_average import qdq_average_plan  # it reads this module's conv layout

            return qdq_average_plan(site, spec, lowering)
        # One window over the whole input: the global average, native where the target runs it.
        native = None if site.spatial_is_dynamic() else plan_whole_window_native(spec, lowering.target)
        return native if native is not None else PoolPlan(spec)

    def rewrite(self, site: PoolSite, plan: PoolPlan, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        from .qdq_average import CountBlocksPlan, build_count_blocks

        if isinstance(plan, GlobalCascadePlan):
            return lower_global_native_cascade(b, x, plan)
        if isinstance(plan, CountBlocksPlan):
            assert site.qdq is not None
            return build_count_blocks(b, x, plan.spec, site.qdq.outputs[0])
        return lower_average_pool(b, x, plan.spec)
