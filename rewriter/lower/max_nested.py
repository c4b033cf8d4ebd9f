"""The max over each window as one chain of nested relus, read straight from x.

For window taps ``t1, ..., tk`` with ``b = tk`` the base::

    e1 = relu(t1 - t2)
    ei = relu(ti - t(i+1) + e(i-1))      = relu(max(t1..ti) - t(i+1))
    max = b + e(k-1)

Each level is one conv of x (+1 on one tap, -1 on the next) with the level
before added and a Relu, which onnxruntime and accelerator compilers fuse into
one pass; the last conv reads the base and adds the chain. A k-tap window costs
k convs, all evaluated at the output positions only: the stride applies from the
first conv on. The doubling ladder costs two convs per pairwise max and runs the
early ones at full resolution, so on strided and short windows the chain wins.

Signed input, -inf padding: where a level's plus tap lies in the padding the
level must be ``relu(-inf - t) = 0``. That is exact when, in every window, the
taps in the padding come first in the chain; then the levels after them are
exactly the chain over the real taps. So each level is computed only over the
outputs where its plus tap is real, and a 1x1 conv pads it with zeros when the
next level covers more outputs. With padding on one side (a strided pool whose
last window stays inside, ceil_mode overhang, asymmetric pads) the taps sorted
by where they are real give such an order; with padding on both sides there is
none, and :func:`plan_nested` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise, permutations
from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..spec import AxisSpec
from .windows import conv_pool_windows, pool_windows_layout

# Longer windows are cheaper as a doubling ladder (2 convs per doubling), and the
# chain's rounding grows with its length.
MAX_NESTED_TAPS = 5

Range = tuple[int, int]  # first and last output, inclusive


@dataclass(frozen=True)
class NestedLevel:
    """``relu(x[plus] - x[minus] + previous level)`` over outputs ``first..last``
    (where ``plus`` is real); 0 elsewhere."""

    plus: int
    minus: int
    first: int
    last: int

    @property
    def outputs(self) -> Range:
        return (self.first, self.last)


@dataclass(frozen=True)
class NestedPlan:
    base: int  # a tap real in every window
    levels: tuple[NestedLevel, ...]
    out_size: int

    def placements(self) -> int:
        """1x1 convs that pad a level out to the next level's outputs."""
        ranges = [level.outputs for level in self.levels] + [(0, self.out_size - 1)]
        return sum(1 for have, want in pairwise(ranges) if have != want)

    def convs(self) -> int:
        return len(self.levels) + 1 + self.placements()


def plan_nested(a: AxisSpec, *, zero_padding_exact: bool, zero_side: Optional[str] = None) -> Optional[NestedPlan]:
    """The cheapest chain for the windows of ``a`` (fewest convs, then fewest MACs),
    or None when the kernel is too long or the padding lies on both sides.

    ``zero_padding_exact``: the conv's zero padding is already exact (input >= 0),
    so every tap counts as real everywhere. ``zero_side`` ("begin" or "end"): taps
    in the padding on that side count as real zeros; the chain is then exact except
    in that side's border windows whose real elements are all negative (it gives 0),
    for the caller to fix.
    """
    if a.kernel > MAX_NESTED_TAPS:
        return None

    def counts(position: int) -> bool:
        if zero_padding_exact or 0 <= position < a.size:
            return True
        return zero_side == ("begin" if position < 0 else "end")

    everywhere = (0, a.out_size - 1)
    real: dict[int, Range] = {}
    for t in range(a.kernel):
        outputs = [o for o in range(a.out_size) if counts(a.window_start(o) + t * a.dilation)]
        if outputs:  # a tap that is never real drops out of every window
            real[t] = (outputs[0], outputs[-1])
    best: Optional[tuple[tuple[int, int], NestedPlan]] = None
    for base in (t for t, r in real.items() if r == everywhere):
        for order in permutations(t for t in real if t != base):
            ranges = [real[t] for t in order] + [everywhere]
            if not all(_within(inner, outer) for inner, outer in pairwise(ranges)):
                continue
            chain = list(order) + [base]
            levels = tuple(NestedLevel(p, m, *real[p]) for p, m in pairwise(chain))
            plan = NestedPlan(base, levels, a.out_size)
            key = (plan.convs(), _macs(a, plan))
            if best is None or key < best[0]:
                best = (key, plan)
    return best[1] if best else None


def _within(inner: Range, outer: Range) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def _macs(a: AxisSpec, plan: NestedPlan) -> int:
    """Kernel taps times outputs over the chain's convs (zero taps cost like the others)."""
    total = a.out_size * len(pool_windows_layout(a, {plan.base: 1.0}).taps)
    for level in plan.levels:
        layout = pool_windows_layout(a, {level.plus: 1.0, level.minus: -1.0}, first=level.first, last=level.last)
        total += (level.last - level.first + 1) * len(layout.taps)
    return total


def nested_max(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: NestedPlan) -> gs.Tensor:
    """Build ``plan``: the max over each window of ``a`` along ``axis``."""
    level: Optional[gs.Tensor] = None
    have: Range = (0, 0)
    for step in plan.levels:
        diff = conv_pool_windows(b, x, axis, a, {step.plus: 1.0, step.minus: -1.0}, first=step.first, last=step.last, hint="nested_diff")
        if level is not None:
            diff = b.add(diff, _padded(b, level, axis, have, step.outputs))
        level, have = b.relu(diff), step.outputs
    base = conv_pool_windows(b, x, axis, a, {plan.base: 1.0}, hint="nested_base")
    if level is None:
        return base
    return b.add(base, _padded(b, level, axis, have, (0, a.out_size - 1)))


def _padded(b: SubgraphBuilder, level: gs.Tensor, axis: int, have: Range, want: Range) -> gs.Tensor:
    """``level`` (over outputs ``have``) zero-padded out to outputs ``want``."""
    if have == want:
        return level
    return b.conv_along(level, axis, [1.0], pad_begin=have[0] - want[0], pad_end=want[1] - have[1], hint="nested_place")
