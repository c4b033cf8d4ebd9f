"""MaxPool lowered to Conv, Relu, Add and Concat.

Per axis (max over a box is the max along each axis in turn), one of:

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from ..spec import AxisSpec, PoolSpec
from .checks import refuse_site, resolve_spec
from .max_nested import nested_max, plan_nested
from .windows import conv_window_run

# Fixing the borders afterwards beats a padded copy only on large tensors: it adds
# a dozen small nodes per border (measured on onnxruntime CPU with scripts/bench.py).
BORDER_FIX_MIN_VALUES = 1 << 18
# The nested relu chain (max_nested.py) evaluates every conv at the output positions
# only; it is used while it takes at most this many convs more than the zero-padded
# doubling ladder (measured with scripts/bench.py).
NESTED_EXTRA_CONVS = 1


def lower_max_pool(
    b: SubgraphBuilder,
    x: gs.Tensor,
    spec: PoolSpec,
    *,
    input_nonnegative: bool,
    input_reach: Optional[tuple[tuple[int, int], ...]] = None,
) -> gs.Tensor:
    """Build the max pool of ``x`` described by ``spec``; returns the result tensor.
    ``input_reach``: per axis, the (left, right) reach over which ``x`` is already a
    max (it comes out of "same" stride-1 MaxPools, as in SPPF)."""
    large = b.channels * math.prod(a.size for a in spec.axes) >= BORDER_FIX_MIN_VALUES
    y = x
    for axis, axis_spec in enumerate(spec.axes):
        reach = input_reach[axis] if input_reach and len(input_reach) == spec.rank else (0, 0)
        y = max_along_axis(b, y, axis, axis_spec, input_nonnegative=input_nonnegative, fix_borders=large, input_reach=reach)
    return y


def shareable(spec: PoolSpec) -> bool:
    """Pools that can share one ladder along their first axis with others on the same input."""
    return all(a.stride == 1 and a.dilation == 1 for a in spec.axes) and spec.axes[0].kernel >= 2


def lower_shared_max_pools(
    b: SubgraphBuilder, x: gs.Tensor, specs: list[PoolSpec], *, input_nonnegative: bool
) -> list[gs.Tensor]:
    """Several stride-1 max pools of one input (SPP's 5/9/13). Centred windows that
    nest: each from the one before (:func:`pools_from_each_other`). Otherwise one
    doubling ladder along the first axis: pad once by the largest pads (zeros for
    an input >= 0, else a padded copy), climb to the widest width needed, and give
    each pool its own last step at its offset; the other axes per pool."""
    if not b.can("Max"):
        grown = pools_from_each_other(b, x, specs, input_nonnegative=input_nonnegative)
        if grown is not None:
            return grown
    firsts = [s.axes[0] for s in specs]
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
    for spec, a in zip(specs, firsts):
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
            y = b.add(b.relu(diff), base)
        outputs.append(_other_axes(b, y, spec, input_nonnegative=input_nonnegative))
    return outputs


def _other_axes(b: SubgraphBuilder, y: gs.Tensor, spec: PoolSpec, *, input_nonnegative: bool) -> gs.Tensor:
    """Pool ``y`` along every axis but the first."""
    large = b.channels * math.prod(ax.size for ax in spec.axes) >= BORDER_FIX_MIN_VALUES
    for axis, other in list(enumerate(spec.axes))[1:]:
        y = max_along_axis(b, y, axis, other, input_nonnegative=input_nonnegative, fix_borders=large)
    return y


def pools_from_each_other(
    b: SubgraphBuilder, x: gs.Tensor, specs: list[PoolSpec], *, input_nonnegative: bool
) -> Optional[list[gs.Tensor]]:
    """"Same" stride-1 pools whose windows nest (SPP's 5/9/13): the smallest as usual,
    then each larger one from the one before, whose outputs already hold the max over
    its reach, by anchored steps (:func:`grow`): 9x9 from 5x5 is 2 steps per axis, as
    in SPPF. None when some pool is not centred or the reaches do not nest."""
    reaches = [_centred_reach(spec) for spec in specs]
    if any(r is None for r in reaches):
        return None
    order = sorted(range(len(specs)), key=lambda i: sum(left + right for left, right in reaches[i]))  # type: ignore[union-attr]
    for inner, outer in pairwise(order):
        if any(l1 > l2 or r1 > r2 for (l1, r1), (l2, r2) in zip(reaches[inner], reaches[outer])):  # type: ignore[arg-type]
            return None
    first = order[0]
    outputs = {first: lower_max_pool(b, x, specs[first], input_nonnegative=input_nonnegative)}
    for previous, i in pairwise(order):
        y = outputs[previous]
        for axis, (have, target) in enumerate(zip(reaches[previous], reaches[i])):  # type: ignore[arg-type]
            y = grow(b, y, axis, specs[i].axes[axis].size, have, target)
        if y is outputs[previous]:  # the same pool twice: each output needs a tensor of its own
            y = b.conv_along(y, 0, [1.0], hint="copy")
        outputs[i] = y
    return [outputs[i] for i in range(len(specs))]


def _centred_reach(spec: PoolSpec) -> Optional[tuple[tuple[int, int], ...]]:
    """Per axis (left, right) of a pool whose output q is the max over ``[q - left, q + right]``."""
    if not all(_centred(a) for a in spec.axes):
        return None
    return tuple((a.pad_begin, a.kernel - 1 - a.pad_begin) for a in spec.axes)


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


def _centred(a: AxisSpec) -> bool:
    """Stride 1, no dilation, as many outputs as inputs: output q's window is
    ``[q - pad_begin, q + kernel - 1 - pad_begin]``."""
    return a.stride == 1 and a.dilation == 1 and a.out_size == a.size and a.pad_begin + a.pad_end == a.kernel - 1


def _ladder_width(kernel: int) -> int:
    """The width the ladder climbs to before the last, overlapping step."""
    width = 1
    while 2 * width < kernel:
        width *= 2
    return width


def max_along_axis(
    b: SubgraphBuilder,
    x: gs.Tensor,
    axis: int,
    a: AxisSpec,
    *,
    input_nonnegative: bool,
    fix_borders: bool = False,
    input_reach: tuple[int, int] = (0, 0),
) -> gs.Tensor:
    """1-D max pool with -inf padding semantics along one spatial axis."""
    if a.kernel == 1:
        # pads < kernel means no padding; the windows are single elements.
        return x if a.stride == 1 else b.conv_along(x, axis, [1.0], stride=a.stride, hint="pick")
    if input_reach != (0, 0) and _centred(a) and not b.can("Max"):
        # x already holds the max over its own reach: the anchored steps may shift by one
        # more than that reach at once (SPPF's second and third 5-tap pools: 2 steps, not 4).
        own = (a.pad_begin, a.kernel - 1 - a.pad_begin)
        return grow(b, x, axis, a.size, input_reach, (input_reach[0] + own[0], input_reach[1] + own[1]))
    zero_padding_exact = input_nonnegative or not (a.pad_begin or a.used_end_pad)
    if not b.can("Max"):
        nested = plan_nested(a, zero_padding_exact=zero_padding_exact)
        if nested is not None and nested.convs() <= 2 * _ladder_steps(a.kernel) + NESTED_EXTRA_CONVS:
            return nested_max(b, x, axis, a, nested)
    if not (a.pad_begin or a.used_end_pad):
        return ladder(b, x, axis, a, conv_pads=(0, 0))
    if input_nonnegative:
        return ladder(b, x, axis, a, conv_pads=(a.pad_begin, a.conv_end_pad))
    if b.can("Max") or (a.dilation == 1 and b.can("Pad")):
        return ladder(b, replicate_pad(b, x, axis, a), axis, a, conv_pads=(0, 0))
    if fix_borders and a.stride > 1:
        # Measured on large strided pools: convs at the output positions with a thin fix
        # of the border outputs beat the anchored ladder, whose steps run at full
        # resolution (an odd-sized ResNet stem: 4.5 -> 2.6 of native); on small ones the
        # fix's dozen thin nodes cost more than they save, and with stride 1 the anchored
        # ladder wins. The nested chain needs the fix on one side only.
        corrected = nested_with_border_fixed(b, x, axis, a)
        if corrected is None:
            corrected = zero_padded_with_borders_fixed(b, x, axis, a)
        if corrected is not None:
            return corrected
    plan = plan_anchored(a)
    if plan is not None:
        # More steps than the doubling ladder on long kernels (6 against 4 on 13x13), and
        # still about 1.5x as fast: a padded copy's Concat has no blocked onnxruntime kernel.
        return anchored_ladder(b, x, axis, a, plan)
    return ladder(b, replicate_pad(b, x, axis, a), axis, a, conv_pads=(0, 0))


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


def _ladder_steps(kernel: int) -> int:
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
            reach = shifts[-1] * d
            merge = not identity and first_anchor + reach >= 0 and last_anchor + reach <= n - 1
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
        return b.add(b.relu(diff), base)
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
        return b.add(placed, b.conv_along(m, axis, [1.0], hint="max_base"))
    return b.add(placed, m)


def zero_padded_with_borders_fixed(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec) -> Optional[gs.Tensor]:
    """The zero-padded ladder, exact except in border windows whose real elements
    are all negative (there it gives 0), then :func:`borders_fixed` on both sides.
    Returns None when a window touches both ends (tiny extents)."""
    if not _fixable(a, ("begin", "end")):
        return None
    return borders_fixed(b, x, ladder(b, x, axis, a, conv_pads=(a.pad_begin, a.conv_end_pad)), axis, a, ("begin", "end"))


def nested_with_border_fixed(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec) -> Optional[gs.Tensor]:
    """Padding on both sides: the nested chain, exact on one side (level ranges) and
    zero-padded on the other, then :func:`borders_fixed` on that other side. None
    when no chain applies or a window touches both ends."""
    plans = []
    for side in ("end", "begin"):
        plan = plan_nested(a, zero_padding_exact=False, zero_side=side)
        if plan is not None and _fixable(a, (side,)):
            plans.append((plan.convs(), side, plan))
    if not plans:
        return None
    _, side, plan = min(plans, key=lambda p: p[0])
    return borders_fixed(b, x, nested_max(b, x, axis, a, plan), axis, a, (side,))


def _border_outputs(a: AxisSpec, side: str) -> int:
    """How many outputs have a window reaching into the padding on ``side``."""
    if side == "begin":
        return sum(1 for o in range(a.out_size) if a.window_start(o) < 0)
    return sum(1 for o in range(a.out_size) if a.window_start(o) + a.effective_kernel > a.size)


def _fixable(a: AxisSpec, sides: tuple[str, ...]) -> bool:
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
    return b.add(b.relu(diff), base)


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


class MaxPoolRule:
    """MaxPool (every opset) with its Indices output unused."""

    op_types = ("MaxPool",)

    def check(self, site: PoolSite) -> Optional[str]:
        if site.indices_used:
            return "Indices output is used: Conv/Relu/Add cannot produce argmax indices"
        return refuse_site(site) or resolve_spec(site, "max")

    def rewrite(self, site: PoolSite, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        assert site.spec is not None
        # The reach's anchored steps depend on the extent: not with dynamic spatial dims.
        reach = None if site.spatial_is_dynamic() else site.input_reach
        return lower_max_pool(b, x, site.spec, input_nonnegative=site.input_nonnegative, input_reach=reach)
