"""The building blocks of MaxPool along one axis: pairwise maxes and the ways
they handle -inf padding (ladders, anchored steps, border fixes, padded copies).

Which block builds which axis is decided in :mod:`rewriter.lower.max_strategies`;
the math is in docs/lowering.md. ``max(a, b) = relu(a - b) + b``: the right
operand is the base, and when it wins the result is exactly it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..spec import AxisSpec
from .windows import conv_window_run


def grow(b: SubgraphBuilder, m: gs.Tensor, axis: int, size: int, have: tuple[int, int], target: tuple[int, int]) -> gs.Tensor:
    """Anchored steps that take ``m``, the max over ``[q - left, q + right]`` (clipped to
    the input) for ``have = (left, right)``, to the max over the ``target`` reach: one
    side at a time, each shift at most one more than the reach on its side."""
    left, right = have
    if min(left, right) < 0 or target[0] < left or target[1] < right:
        raise ValueError(f"cannot grow a reach {have} to {target}")
    while (left, right) != target:
        if right < target[1] and (right <= left or left == target[0]):
            shift = min(right + 1, target[1] - right)
            m, right = anchored_step(b, m, axis, size, shift, base_is_input=not b.in_conv_layout(m)), right + shift
        else:
            shift = min(left + 1, target[0] - left)
            m, left = anchored_step(b, m, axis, size, -shift, base_is_input=not b.in_conv_layout(m)), left + shift
    return m


def ladder(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, *, conv_pads: tuple[int, int]) -> gs.Tensor:
    """Doubling ladder: m holds the max over `width` taps from each position; the
    last step overlaps two windows and applies the stride. ``conv_pads`` pad the
    first step with zeros (x already padded otherwise)."""
    m, width = x, 1
    while 2 * width < a.kernel:
        m = pairwise_max(b, m, axis, shift=width * a.dilation, stride=1, pads=conv_pads)
        conv_pads = (0, 0)
        width *= 2
    return pairwise_max(b, m, axis, shift=(a.kernel - width) * a.dilation, stride=a.stride, pads=conv_pads)


def ladder_steps(kernel: int) -> int:
    """Pairwise maxes of the doubling ladder: ceil(log2 k), at least one."""
    return max(1, math.ceil(math.log2(kernel)))


def _growth(reach: int) -> list[int]:
    """Shifts that grow a one-sided reach from 0 to ``reach`` taps, each at most
    one more than the reach so far (the condition that makes cropping exact)."""
    shifts, have = [], 0
    while have < reach:
        shift = min(have + 1, reach - have)
        shifts.append(shift)
        have += shift
    return shifts


@dataclass(frozen=True)
class AnchoredPlan:
    """Windows grown outward from one tap that is real in every window."""

    anchor_tap: int
    shifts: tuple[int, ...]  # signed, in taps: > 0 grows to the right, < 0 to the left
    merge_last: bool  # the last shift is applied at the output positions, with the stride
    identity: bool  # the output is m itself (stride 1, output i anchored at input i)

    @property
    def steps(self) -> int:
        return len(self.shifts)


def plan_anchored(a: AxisSpec) -> Optional[AnchoredPlan]:
    """The cheapest plan for :func:`anchored_ladder`, or None when no tap is real
    in every window (tiny extents, padding wider than the kernel reach)."""
    n, d = a.size, a.dilation
    candidates = []
    for c in range(a.kernel):
        first_anchor = a.window_start(0) + c * d
        last_anchor = a.window_start(a.out_size - 1) + c * d
        if first_anchor < 0 or last_anchor > n - 1:
            continue
        left, right = [-s for s in _growth(c)], _growth(a.kernel - 1 - c)
        identity = a.stride == 1 and first_anchor == 0 and a.out_size == n
        for shifts in (left + right, right + left):
            reach = shifts[-1] * d if shifts else 0  # kernel 1: no step, the anchor is the window
            merge = bool(shifts) and not identity and first_anchor + reach >= 0 and last_anchor + reach <= n - 1
            plan = AnchoredPlan(c, tuple(shifts), merge, identity)
            candidates.append(((plan.steps, not (merge or identity)), plan))
    return min(candidates, key=lambda item: item[0])[1] if candidates else None


def anchored_ladder(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: AnchoredPlan) -> gs.Tensor:
    """Exact -inf padding with no padded copy, for a signed input.

    ``m[q]`` holds the max over the real elements of ``[q - left, q + right]``
    (taps of q's residue class), for every real q, so the base of each step,
    ``m[q]`` itself, is always real. A step ``max(m[q], m[q + shift])`` adds
    ``relu(m[q + shift] - m[q])`` only where ``q + shift`` is real: the diff conv
    runs over those positions alone and the conv that adds the base pads it back
    with zeros. Where ``q + shift`` is not real, the other operand's real elements
    already lie within m[q]'s reach, as long as each shift is at most one more
    than the reach on its side. The output reads m at the anchor tap of each window.
    """
    n, d = a.size, a.dilation
    m = x
    shifts = list(plan.shifts)
    last = shifts.pop() if plan.merge_last else None
    for shift in shifts:
        m = anchored_step(b, m, axis, n, shift * d, base_is_input=not b.in_conv_layout(m))
    first_anchor = a.window_start(0) + plan.anchor_tap * d
    if last is not None:
        reach = last * d
        run = dict(count=a.out_size, stride=a.stride)
        if reach > 0:
            diff = conv_window_run(b, m, axis, n, start=first_anchor, taps=[-1.0, 1.0], dilation=reach, hint="max_diff", **run)
        else:
            diff = conv_window_run(b, m, axis, n, start=first_anchor + reach, taps=[1.0, -1.0], dilation=-reach, hint="max_diff", **run)
        base = conv_window_run(b, m, axis, n, start=first_anchor, taps=[1.0], hint="max_base", **run)
        return b.max_step(b.relu(diff), base)
    if plan.identity:
        return m
    return conv_window_run(b, m, axis, n, start=first_anchor, count=a.out_size, stride=a.stride, taps=[1.0], hint="pick")


def anchored_step(b: SubgraphBuilder, m: gs.Tensor, axis: int, n: int, reach: int, *, base_is_input: bool) -> gs.Tensor:
    """``m[q] + relu(m[q + reach] - m[q])`` where ``q + reach`` is real, else ``m[q]``.

    onnxruntime fuses the Add into the padding conv only when ``m`` is in a conv's
    blocked layout, so otherwise (a graph input) the base is read by a conv of its own.
    """
    length = n - abs(reach)
    if length <= 0:
        return m  # the other operand is never real: nothing to add
    taps = [-1.0, 1.0] if reach > 0 else [1.0, -1.0]
    gain = b.relu(b.conv_along(m, axis, taps, dilation=abs(reach), hint="max_diff"))
    pads = (0, reach) if reach > 0 else (-reach, 0)
    placed = b.conv_along(gain, axis, [1.0], pad_begin=pads[0], pad_end=pads[1], hint="max_place")
    if base_is_input:
        return b.max_step(placed, b.conv_along(m, axis, [1.0], hint="max_base"))
    return b.max_step(placed, m)

def _border_outputs(a: AxisSpec, side: str) -> int:
    """How many outputs have a window reaching into the padding on ``side``."""
    if side == "begin":
        return sum(1 for o in range(a.out_size) if a.window_start(o) < 0)
    return sum(1 for o in range(a.out_size) if a.window_start(o) + a.effective_kernel > a.size)


def fixable(a: AxisSpec, sides: tuple[str, ...]) -> bool:
    """Some border outputs to fix on ``sides``, and no window reaching past both ends."""
    n_left, n_right = _border_outputs(a, "begin"), _border_outputs(a, "end")
    return n_left + n_right <= a.out_size and sum(_border_outputs(a, side) for side in sides) > 0


def borders_fixed(b: SubgraphBuilder, x: gs.Tensor, zero_padded: gs.Tensor, axis: int, a: AxisSpec, sides: tuple[str, ...]) -> gs.Tensor:
    """``zero_padded`` with its border outputs on ``sides`` made exact.

    Those outputs are pooled on a thin slice of x with replicated padding, and
    ``S + (T - S)`` puts them in place: where S is 0 that is T exactly, and
    elsewhere T and S are the same positive max up to rounding, so ``T - S`` is
    exact (Sterbenz). No full-size Concat: onnxruntime keeps its blocked layout.
    """
    out = zero_padded
    n_left, n_right = _border_outputs(a, "begin"), _border_outputs(a, "end")
    if "begin" in sides and n_left:
        width = min(a.size, a.window_start(n_left - 1) + a.effective_kernel)
        part = AxisSpec(width, a.kernel, a.stride, a.dilation, a.pad_begin, 0, n_left)
        true = ladder(b, replicate_pad(b, select_range(b, x, axis, a.size, 0, width), axis, part), axis, part, conv_pads=(0, 0))
        out = place_correction(b, out, zero_padded, true, axis, a.out_size, first=0, count=n_left)
    if "end" in sides and n_right:
        first = a.out_size - n_right
        begin = a.window_start(first)
        part = AxisSpec(a.size - begin, a.kernel, a.stride, a.dilation, 0, a.pad_end, n_right)
        sliced = select_range(b, x, axis, a.size, begin, a.size - begin)
        true = ladder(b, replicate_pad(b, sliced, axis, part), axis, part, conv_pads=(0, 0))
        out = place_correction(b, out, zero_padded, true, axis, a.out_size, first=first, count=n_right)
    return out


def select_range(b: SubgraphBuilder, x: gs.Tensor, axis: int, size: int, start: int, count: int) -> gs.Tensor:
    """``x[start : start + count]`` along ``axis`` for a prefix or a suffix, with a
    two-tap dilated kernel rather than one as long as the axis."""
    if count == size:
        return x
    if start == 0:
        return b.conv_along(x, axis, [1.0, 0.0], dilation=size - count, hint="prefix")
    assert start + count == size
    return b.conv_along(x, axis, [0.0, 1.0], dilation=start, hint="suffix")


def place_correction(
    b: SubgraphBuilder, out: gs.Tensor, zero_padded: gs.Tensor, true: gs.Tensor, axis: int, length: int, *, first: int, count: int
) -> gs.Tensor:
    """``out + (true - zero_padded[first:first+count])``, zero outside those outputs."""
    approx = select_range(b, zero_padded, axis, length, first, count)
    correction = b.add(true, b.conv_along(approx, axis, [-1.0], hint="negate"))
    return b.add(out, b.conv_along(correction, axis, [1.0], pad_begin=first, pad_end=length - first - count, hint="place"))


def pairwise_max(
    b: SubgraphBuilder, m: gs.Tensor, axis: int, *, shift: int, stride: int, pads: tuple[int, int]
) -> gs.Variable:
    """``out[i] = max(m[i*stride], m[i*stride + shift])`` as ``relu(right - left) + left``.

    The left operand is the base: when it wins the result is exactly it. A
    profile that allows Max gets ``Max(left, right)`` instead: bit-exact.
    """
    common = dict(stride=stride, dilation=shift, pad_begin=pads[0], pad_end=pads[1])
    if b.can("Max"):
        left = b.conv_along(m, axis, [1.0, 0.0], hint="max_left", **common)
        right = b.conv_along(m, axis, [0.0, 1.0], hint="max_right", **common)
        return b.max(left, right)
    diff = b.conv_along(m, axis, [-1.0, 1.0], hint="max_diff", **common)
    base = b.conv_along(m, axis, [1.0, 0.0], hint="max_base", **common)
    return b.max_step(b.relu(diff), base)


def replicate_pad(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec) -> gs.Variable:
    """Pad with copies of real elements so that no window's max changes."""
    if a.dilation == 1 and b.can("Pad"):
        return b.pad_edge(x, axis, a.pad_begin, a.used_end_pad)
    n, d = a.size, a.dilation
    left = []
    for q in range(-a.pad_begin, 0):
        r = q % d  # first element of q's residue class
        left.append(r if r < n else n - 1)  # a class with no element never meets a valid window
    right = []
    for q in range(n, n + a.used_end_pad):
        last = q - d * (-(-(q - n + 1) // d))  # last element of q's residue class
        right.append(last if last >= 0 else 0)

    slices: dict[int, gs.Variable] = {}

    def element(i: int) -> gs.Variable:
        if i not in slices:
            slices[i] = conv_window_run(b, x, axis, n, start=i, count=1, stride=1, taps=[1.0], hint="edge")
        return slices[i]

    parts = [element(i) for i in left] + [x] + [element(i) for i in right]
    return b.concat(parts, axis)
