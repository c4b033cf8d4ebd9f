"""A long average as a cascade of short strided depthwise convs.

A window of ``K = k1 * k2 * ...`` taps that tiles its axis (no padding, stride
equal to the kernel, or a single window) is the mean of ``k1``-means of
``k2``-means ...: one conv per factor, kernel = stride = ``k_i``, weights
``1/k_i``, no padding. Each stage may cover several axes at once (a ``5x5``
stride-5 conv), and each must fit the target's conv limits; this is how a
160-wide global average fits a target whose kernels stop at 31 and strides at 7.

On an axis the window covers whole (a global pool), two more freedoms:

* the last stage leaves one value, so its stride does not matter: any stride the
  profile allows (GAP 40 with kernels <= 5 and strides <= 2: ``2x2/s2`` three
  times, then ``5x5`` at stride 1);
* zero padding adds nothing to a sum, so a stage may pad its input up to a
  multiple of its taps, where the profile allows that pad (GAP 7x7 with kernels
  <= 5: pad 7 -> 8 by one zero row and column in the first ``2x2/s2``, then
  ``2x2/s2`` twice). Every real element still lands in exactly one window per
  stage; the first stage's weights carry the correction ``(padded taps) / (H*W)``,
  so the result is ``sum / (H*W)``.

A stage's taps may sit in a larger kernel with zero taps after them, for a target
that insists on certain kernels (tidl's depthwise convs are 3x3, 5x5 or 7x7 at
stride 1, or 3x3 at stride 2: a 2-tap mean at stride 2 is a 3x3/s2 kernel with a
zero row and column).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from itertools import product
from math import prod
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..profile import ConvLimits, conv_violations
from ..spec import AxisSpec, PoolSpec

# Per axis and stage, the search weighs this many ways to shrink the axis (the
# ones that shrink it most), so its cost stays small for long axes and wide limits.
SHORTLIST = 6


@dataclass(frozen=True)
class AxisStep:
    """One stage along one axis: ``taps`` averaged at the start of a ``kernel`` (the
    rest zero taps), at ``stride`` (None: any, the stage leaves one value), with
    ``pad_end`` zeros; ``left``: what is left to average along the axis after it."""

    kernel: int
    stride: Optional[int]
    pad_end: int
    taps: int
    left: int


@dataclass(frozen=True)
class Stage:
    """One depthwise conv of a cascade: per spatial axis its kernel, stride, end
    padding (none at the beginning) and the leading taps that carry weight."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pad_end: tuple[int, ...]
    taps: tuple[int, ...]

    @property
    def pads(self) -> list[int]:
        return [0] * len(self.kernel) + list(self.pad_end)

    def describe(self) -> str:
        """E.g. ``2x2/s2 pad 1``."""
        def shown(values: tuple[int, ...]) -> str:
            return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

        text = "x".join(map(str, self.kernel)) + "/s" + shown(self.strides)
        return text + (f" pad {shown(self.pad_end)}" if any(self.pad_end) else "")


def tiles(a: AxisSpec) -> bool:
    """Whether the axis's windows tile it from index 0 without padding or overlap:
    ``size // kernel`` outputs, each a mean of its own ``kernel`` taps."""
    return (
        a.pad_begin == a.pad_end == 0
        and a.dilation == 1
        and (a.stride == a.kernel or a.out_size == 1)
        and a.out_size == a.size // a.kernel
    )


def whole(a: AxisSpec) -> bool:
    """Whether the window covers the whole axis (one output): free last stride, padding."""
    return tiles(a) and a.kernel == a.size


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def cascade_stages(spec: PoolSpec, limits: ConvLimits) -> Optional[list[Stage]]:
    """The stages that average the pool's windows, each a conv within ``limits``: the
    fewest padded stages (an exact tiling without pads wherever one fits), then the fewest
    stages, then the fewest MACs per window. None when an axis does not tile or no cascade
    fits (a prime extent past the kernel limit, where no padding helps).

    MACs are counted per output window, so the choice does not depend on the extent
    (a strided conv with kernel = stride reads each of its inputs once).
    """
    if not all(tiles(a) for a in spec.axes):
        return None
    rank = spec.rank
    # The per-axis rules, to shortlist each axis's steps before they are combined.
    axis_limits = replace(limits, equal_strides=False, depthwise_kernels=None, max_kernel_area=None, spatial_ranks=None)
    extra_strides = sorted({1} | ({limits.stride.lo} if limits.stride else set()) | {s for _, _, s in limits.depthwise_kernels or ()})
    any_stride = next((s for s in extra_strides if limits.stride is None or s in limits.stride), 1)

    def fits_alone(axis: int, step: AxisStep) -> bool:
        kernel, strides, pads = [1] * rank, [1] * rank, [0] * (2 * rank)
        kernel[axis], strides[axis], pads[rank + axis] = step.kernel, step.stride or any_stride, step.pad_end
        if limits.depthwise_kernels is not None and rank == 2 and not any(
            step.kernel in dk[:2] and (step.stride is None or step.stride == dk[2]) for dk in limits.depthwise_kernels
        ):
            return False
        return not conv_violations(kernel, strides, [1] * rank, pads, True, axis_limits)

    def shortlist(axis: int, left: int) -> list[AxisStep]:
        steps = [s for s in _axis_steps(spec.axes[axis], left, limits) if fits_alone(axis, s)]
        return sorted(steps, key=lambda s: (s.left, s.kernel, s.pad_end))[:SHORTLIST]

    def stage_of(steps: tuple[AxisStep, ...]) -> Optional[Stage]:
        # A free stride: kernel = stride where allowed (as every other stage), else the
        # other axes' stride, else the smallest the profile takes.
        own = tuple(s.stride if s.stride is not None else s.kernel for s in steps)
        fixed = sorted({s.stride for s in steps if s.stride is not None})
        choices = [own] + [tuple(s.stride if s.stride is not None else free for s in steps) for free in fixed + extra_strides]
        for strides in choices if any(s.stride is None for s in steps) else [own]:
            stage = Stage(tuple(s.kernel for s in steps), strides, tuple(s.pad_end for s in steps), tuple(s.taps for s in steps))
            if not conv_violations(stage.kernel, stage.strides, [1] * rank, stage.pads, True, limits):
                return stage
        return None

    start = tuple(a.size if whole(a) else a.kernel for a in spec.axes)
    # Dijkstra over what is left to average per axis; costs (padded stages, stages, MACs)
    # are additive. Padded stages count first: an exact tiling without pads is preferred
    # wherever one fits (no correction factor, no zeros read, and a compiler sees plain
    # kernel = stride convs), even at the price of a stage more (GAP 160 on rknn:
    # 5x5/s5 + 4x4/s4 + 8x8, not 7x7/s7 pad 1 + 23x23).
    heap: list[tuple[int, int, int, tuple[int, ...], int, list[Stage]]] = [(0, 0, 0, start, 0, [])]
    settled: set[tuple[int, ...]] = set()
    pushed = 0  # ties go to the first found, never to comparing stages
    while heap:
        padded, stages, macs, left, _, path = heapq.heappop(heap)
        if left in settled:
            continue
        settled.add(left)
        if all(k == 1 for k in left):
            return path
        for steps in product(*(shortlist(axis, n) for axis, n in enumerate(left))):
            rest = tuple(s.left for s in steps)
            if rest == left or rest in settled:
                continue
            stage = stage_of(steps)
            if stage is not None:
                # One window's stage output has prod(rest) values, each of prod(kernel) taps.
                pushed += 1
                cost = (padded + int(any(stage.pad_end)), stages + 1, macs + prod(rest) * prod(stage.kernel))
                heapq.heappush(heap, (*cost, rest, pushed, path + [stage]))
    return None


def _axis_steps(a: AxisSpec, left: int, limits: ConvLimits) -> list[AxisStep]:
    """Every step one stage may take along an axis with ``left`` to average."""
    hi = limits.kernel.hi if limits.kernel is not None else max(left, 1)
    if limits.depthwise_kernels is not None:
        hi = min(hi, max(max(k[:2]) for k in limits.depthwise_kernels))
    # Kernels a target insists on, to hold fewer taps with zero taps after them.
    sizes = {k for dk in limits.depthwise_kernels or () for k in dk[:2]} | ({limits.kernel.lo} if limits.kernel else set())

    def kernels(taps: int) -> list[int]:
        return sorted({taps} | {k for k in sizes if k > taps})

    steps = []
    if not whole(a):
        for t in _divisors(left):
            if t <= hi and (t > 1 or left == 1):
                steps += [AxisStep(k, t, k - t, t, left // t) for k in kernels(t)]
        return steps
    for t in range(1, min(left, hi) + 1):
        if t == left:  # the last stage: one window, any stride
            steps += [AxisStep(k, None, k - t, t, 1) for k in kernels(t)]
        elif t > 1:
            pad = -left % t  # zeros up to a multiple of t
            steps += [AxisStep(k, t, pad + k - t, t, (left + pad) // t) for k in kernels(t)]
    return steps


def build_cascade(b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec, stages: list[Stage]) -> gs.Tensor:
    """The mean as one strided conv per stage, each averaging its taps; the first also
    scales by ``(taps over all stages) / (window taps)``, which is 1 without padding."""
    correction = prod(t for stage in stages for t in stage.taps) / prod(a.kernel for a in spec.axes)
    y = x
    for i, stage in enumerate(stages):
        weights = np.ones([1] * len(stage.kernel)) * (correction if i == 0 else 1.0)
        for axis, (k, t) in enumerate(zip(stage.kernel, stage.taps)):
            shape = [1] * len(stage.kernel)
            shape[axis] = k
            weights = weights * np.array([1.0 / t] * t + [0.0] * (k - t)).reshape(shape)
        y = b.depthwise_conv(y, weights, strides=list(stage.strides), pads=stage.pads, hint="avg_stage")
    return y
