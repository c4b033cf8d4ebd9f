"""Depthwise convs laid out within a target's conv limits (``--target``).

A depthwise conv computes, per spatial axis, ``out[o] = sum w * x[o * stride + offset]``
over its taps, with ``x`` read as zero outside its extent. That map (:class:`ConvMap`)
does not depend on how the conv is written: a kernel with leading zero taps and more
padding, a dilation, or trailing zero taps all compute it. :func:`plan_conv` finds a
layout the profile accepts (:func:`rewriter.profile.conv_violations` decides), and
when none exists it rewrites the map into an equivalent program of legal convs and
Adds, still exact (only zeros are added):

- a stride the target has no conv for is factored: the conv at a smaller stride,
  then one-tap picks at the rest (strides multiply);
- taps further apart than the longest legal kernel are split into groups whose
  results are added;
- reach beyond the legal pads or kernel (a tap far from the output, pads at least
  the kernel, an output longer or shorter than one conv makes) is first taken by a
  chain of one-tap shift convs that crop the input or grow it with zeros.

What has no such program (a stride of 3 where strides stop at 2, unequal strides
where they must be equal) returns None: the caller emits the conv as it is, and the
fit check names the limit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Sequence, Union

import numpy as np

from .profile import ConvLimits, conv_violations

Offset = tuple[int, ...]

# Bounds on the search where a profile sets no limit.
_UNLIMITED_KERNEL = 64
_MAX_PROGRAM_CONVS = 64


@dataclass(frozen=True)
class ConvMap:
    """What a depthwise conv computes: ``out[o] = sum_t w_t * x[o * strides + offset_t]``
    on every spatial axis, ``x`` zero outside ``sizes``, ``counts`` outputs per axis."""

    taps: tuple[tuple[Offset, float], ...]
    strides: tuple[int, ...]
    counts: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.sizes)

    @classmethod
    def of_conv(
        cls, kernel: np.ndarray, strides: tuple[int, ...], dilations: tuple[int, ...], pads: tuple[int, ...], sizes: tuple[int, ...]
    ) -> "ConvMap":
        """The map of a conv with these attributes on an input of spatial ``sizes``."""
        rank = kernel.ndim
        taps = []
        for index in zip(*np.nonzero(kernel)):
            offset = tuple(int(index[a]) * dilations[a] - pads[a] for a in range(rank))
            taps.append((offset, float(kernel[index])))
        if not taps:  # an all-zero kernel still has a value: zero
            taps.append((tuple(-pads[a] for a in range(rank)), 0.0))
        counts = tuple(
            (sizes[a] + pads[a] + pads[a + rank] - (kernel.shape[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in range(rank)
        )
        return cls(tuple(sorted(taps)), tuple(strides), counts, tuple(sizes))

    def offsets(self, axis: int) -> list[int]:
        return sorted({offset[axis] for offset, _ in self.taps})


@dataclass(frozen=True)
class Layout:
    """One Conv node's attributes (pads: begins, then ends) and dense kernel."""

    kernel: np.ndarray
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]


@dataclass(frozen=True)
class Conv:
    """A legal conv of ``source``'s result."""

    layout: Layout
    source: "Program"


@dataclass(frozen=True)
class Sum:
    """The sum of two programs' results (an Add)."""

    left: "Program"
    right: "Program"


class Input:
    """The conv's input tensor."""


INPUT = Input()
Program = Union[Conv, Sum, Input]


def conv_count(program: Program) -> int:
    """How many Convs ``program`` emits."""
    if isinstance(program, Conv):
        return 1 + conv_count(program.source)
    if isinstance(program, Sum):
        return conv_count(program.left) + conv_count(program.right)
    return 0


def plan_conv(conv: ConvMap, limits: ConvLimits) -> Optional[Program]:
    """A program of legal depthwise convs (and Adds) computing ``conv``, or None."""
    if limits.spatial_ranks is not None and conv.rank not in limits.spatial_ranks:
        return None  # no program of convs changes the rank
    search = _Search(limits)
    try:
        program = search.plan(conv, depth=0)
    except _TooLong:
        return None
    if program is None or conv_count(program) > _MAX_PROGRAM_CONVS:
        return None
    return program


class _TooLong(Exception):
    pass


# How many maps one search may plan before it gives up (a program that long is no use).
_MAX_SEARCH_STEPS = 600
# Per axis, how many of its cheapest layouts one conv's layout is chosen among.
_OPTIONS_PER_AXIS = 9


# -- one conv ----------------------------------------------------------------------


@dataclass(frozen=True)
class _AxisLayout:
    kernel: int
    dilation: int
    pad_begin: int
    pad_end: int

    def index(self, offset: int) -> int:
        return (offset + self.pad_begin) // self.dilation


def _kernel_choices(limits: ConvLimits) -> list[int]:
    if limits.depthwise_kernels is not None:
        return sorted({k for shape in limits.depthwise_kernels for k in shape[:2]})
    hi = limits.kernel.hi if limits.kernel is not None else _UNLIMITED_KERNEL
    lo = limits.kernel.lo if limits.kernel is not None else 1
    return list(range(lo, min(hi, _UNLIMITED_KERNEL) + 1))


def _stride_allowed(stride: int, limits: ConvLimits) -> bool:
    if limits.stride is not None and stride not in limits.stride:
        return False
    return limits.depthwise_kernels is None or any(shape[2] == stride for shape in limits.depthwise_kernels)


def _dilation_choices(offsets: Sequence[int], limits: ConvLimits) -> list[int]:
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    g = math.gcd(*gaps) if gaps else abs(offsets[0])
    found = {1}
    if g > 1:
        found |= {d for d in range(2, g + 1) if g % d == 0}
    dmax = limits.dilation.hi if limits.dilation is not None else max(found)
    dmin = limits.dilation.lo if limits.dilation is not None else 1
    return sorted(d for d in found if dmin <= d <= dmax) or ([1] if dmin <= 1 else [])


@lru_cache(maxsize=256)
def _one_axis(limits: ConvLimits) -> ConvLimits:
    """The rules one axis must keep to by itself (the cross-axis ones, square depthwise
    shapes, equal strides and the rank, are checked on the whole conv)."""
    return replace(limits, spatial_ranks=None, depthwise_kernels=None, equal_strides=False)


def _axis_fits(kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int, limits: ConvLimits) -> bool:
    return not conv_violations((kernel,), (stride,), (dilation,), (pad_begin, pad_end), True, _one_axis(limits))


@lru_cache(maxsize=8192)
def _axis_layouts(offsets: tuple[int, ...], stride: int, count: int, size: int, limits: ConvLimits) -> list[_AxisLayout]:
    """Every layout of one axis within the per-axis limits, cheapest first."""
    lo, hi = offsets[0], offsets[-1]
    found = []
    for kernel in _kernel_choices(limits):
        for dilation in _dilation_choices(offsets, limits):
            if kernel == 1 and dilation != 1:
                continue
            width = (hi - lo) // dilation + 1
            if width > kernel:
                continue
            for lead in range(kernel - width + 1):
                pad_begin = lead * dilation - lo
                if pad_begin < 0:
                    continue
                span = (kernel - 1) * dilation + 1
                least = (count - 1) * stride + span - size - pad_begin
                pad_end = next(
                    (p for p in range(max(0, least), least + stride) if _axis_fits(kernel, stride, dilation, pad_begin, p, limits)), None
                )
                if pad_end is not None:
                    found.append(_AxisLayout(kernel, dilation if kernel > 1 else 1, pad_begin, pad_end))
    found.sort(key=lambda l: (l.kernel, l.dilation != 1, l.pad_begin + l.pad_end))
    return found


def direct_layout(conv: ConvMap, limits: ConvLimits) -> Optional[Layout]:
    """One conv computing ``conv`` that breaks none of ``limits``, fewest MACs first."""
    per_axis = []
    for axis in range(conv.rank):
        if not _stride_allowed(conv.strides[axis], limits):
            return None
        options = _axis_layouts(tuple(conv.offsets(axis)), conv.strides[axis], conv.counts[axis], conv.sizes[axis], limits)
        if not options:
            return None
        per_axis.append(_thin(options))
    for combo in sorted(itertools.product(*per_axis), key=lambda c: (math.prod(l.kernel for l in c), sum(l.pad_begin + l.pad_end for l in c))):
        kernel = tuple(l.kernel for l in combo)
        dilations = tuple(l.dilation for l in combo)
        pads = tuple(l.pad_begin for l in combo) + tuple(l.pad_end for l in combo)
        if conv_violations(kernel, conv.strides, dilations, pads, True, limits):
            continue
        weights = np.zeros(kernel)
        for offset, w in conv.taps:
            weights[tuple(l.index(o) for l, o in zip(combo, offset))] += w
        return Layout(weights, conv.strides, dilations, pads)
    return None


def _thin(options: list[_AxisLayout]) -> list[_AxisLayout]:
    """A few of the cheapest layouts, at most three per kernel length: enough for the
    cross-axis rules (square kernels, equal strides, area) to choose from."""
    kept, per_kernel = [], {}
    for layout in options:
        if per_kernel.get(layout.kernel, 0) < 3:
            kept.append(layout)
            per_kernel[layout.kernel] = per_kernel.get(layout.kernel, 0) + 1
    return kept[:_OPTIONS_PER_AXIS]


# -- programs ----------------------------------------------------------------------


class _Search:
    """One :func:`plan_conv` search: maps already planned, and a bound on the work."""

    def __init__(self, limits: ConvLimits) -> None:
        self.limits = limits
        self.done: dict[ConvMap, Optional[Program]] = {}
        self.steps = 0

    def plan(self, conv: ConvMap, depth: int) -> Optional[Program]:
        if conv not in self.done:
            self.done[conv] = self._plan(conv, depth)
        return self.done[conv]

    def _plan(self, conv: ConvMap, depth: int) -> Optional[Program]:
        self.steps += 1
        if depth > _MAX_PROGRAM_CONVS or self.steps > _MAX_SEARCH_STEPS:
            raise _TooLong
        limits = self.limits
        conv = _free_single_outputs(_without_dead_taps(conv))
        if _is_identity(conv):
            return INPUT
        layout = _cached_layout(conv, limits)
        if layout is not None:
            return Conv(layout, INPUT)
        if not all(_stride_allowed(s, limits) for s in conv.strides):
            return self.factor_strides(conv, depth)
        order = (self.shift_reach, self.split_taps, self.factor_strides)
        if not all(_width_fits(conv.offsets(a), limits) for a in range(conv.rank)):
            order = (self.split_taps, self.shift_reach, self.factor_strides)
        for rewrite in order:
            program = rewrite(conv, depth)
            if program is not None:
                return program
        return None

    def then(self, conv: ConvMap, first: ConvMap, depth: int) -> Optional[Program]:
        """``conv`` planned on the result of ``first`` (``conv.sizes`` are ``first.counts``)."""
        head = self.plan(first, depth + 1)
        if head is None:
            return None
        tail = self.plan(conv, depth + 1)
        return None if tail is None else _substitute(tail, head)

    def factor_strides(self, conv: ConvMap, depth: int) -> Optional[Program]:
        """The conv at stride ``s / f``, then a one-tap pick at stride ``f``. With equal
        strides required, every axis is factored by the same ``f``."""
        limits = self.limits
        if all(s == 1 for s in conv.strides):
            return None
        if limits.equal_strides or limits.depthwise_kernels is not None:
            if len(set(conv.strides)) > 1:
                return None
            factors = [(f,) * conv.rank for f in _factors(conv.strides[0], limits)]
        else:
            axis = max(range(conv.rank), key=lambda a: conv.strides[a])
            factors = []
            for f in _factors(conv.strides[axis], limits):
                step = [1] * conv.rank
                step[axis] = f
                factors.append(tuple(step))
        for step in factors:
            inner_strides = tuple(s // f for s, f in zip(conv.strides, step))
            inner_counts = tuple((c - 1) * f + 1 for c, f in zip(conv.counts, step))
            inner = replace(conv, strides=inner_strides, counts=inner_counts)
            pick = ConvMap((((0,) * conv.rank, 1.0),), step, conv.counts, inner_counts)
            program = self.then(pick, inner, depth)
            if program is not None:
                return program
        return None

    def split_taps(self, conv: ConvMap, depth: int) -> Optional[Program]:
        """Taps split along the axis with the widest reach, each half its own conv, added."""
        if len(conv.taps) < 2:
            return None
        axis = max(range(conv.rank), key=lambda a: conv.offsets(a)[-1] - conv.offsets(a)[0])
        offsets = conv.offsets(axis)
        if len(offsets) < 2:
            return None
        middle = offsets[(len(offsets) - 1) // 2]
        left = replace(conv, taps=tuple(t for t in conv.taps if t[0][axis] <= middle))
        right = replace(conv, taps=tuple(t for t in conv.taps if t[0][axis] > middle))
        a = self.plan(left, depth + 1)
        b = self.plan(right, depth + 1) if a is not None else None
        return None if a is None or b is None else Sum(a, b)

    def shift_reach(self, conv: ConvMap, depth: int) -> Optional[Program]:
        """Move the input under the taps first: crop it or grow it with zeros along one
        axis by the longest shift one legal conv makes, then plan the rest on the shifted
        input."""
        for axis in range(conv.rank):
            offsets = conv.offsets(axis)
            size, count, stride = conv.sizes[axis], conv.counts[axis], conv.strides[axis]
            # The taps run [lo, hi]; the last output's last tap reads end = (count-1)*stride + hi.
            lo, hi = offsets[0], offsets[-1]
            end = (count - 1) * stride + hi
            moves = []
            if lo != 0:
                moves.append(("begin", lo))  # > 0: crop lo from the start; < 0: grow -lo zeros there
            if end != size - 1 and not (stride > 1 and size - 1 - stride < end < size):
                moves.append(("end", end - (size - 1)))  # > 0: grow zeros at the end; < 0: crop
            for side, need in moves:
                for step in _shift_steps(need):
                    if (side == "begin" and size - step < 1) or (side == "end" and size + step < 1):
                        continue  # a crop leaves at least one element
                    if side == "begin":
                        first = _shift(conv, axis, step, size - step)
                        moved = _moved(conv, axis, -step, size - step)
                    else:
                        first = _shift(conv, axis, 0, size + step)
                        moved = _moved(conv, axis, 0, size + step)
                    if _cached_layout(first, self.limits) is None:
                        continue
                    program = self.then(moved, first, depth)
                    if program is not None:
                        return program
                    break
        return None


@lru_cache(maxsize=4096)
def _cached_layout(conv: ConvMap, limits: ConvLimits) -> Optional[Layout]:
    return direct_layout(conv, limits)


def _is_identity(conv: ConvMap) -> bool:
    return (
        len(conv.taps) == 1
        and conv.taps[0] == ((0,) * conv.rank, 1.0)
        and all(s == 1 for s in conv.strides)
        and conv.counts == conv.sizes
    )


def _without_dead_taps(conv: ConvMap) -> ConvMap:
    """``conv`` without the taps that read only zero padding, at every output. With none
    left it computes zeros: one zero tap over the first element does that."""
    def live(offset: Offset) -> bool:
        return all(
            any(0 <= o * s + t < n for o in range(c)) for t, s, c, n in zip(offset, conv.strides, conv.counts, conv.sizes)
        )
    taps = tuple(t for t in conv.taps if live(t[0]))
    if taps == conv.taps:
        return conv
    return replace(conv, taps=taps or (((0,) * conv.rank, 0.0),))


def _free_single_outputs(conv: ConvMap) -> ConvMap:
    """``conv`` with the stride of every axis that has one output set to the others'
    largest (1 if none): one output reads the same taps at any stride, and equal strides
    on every axis are what some targets require."""
    if all(c > 1 for c in conv.counts):
        return conv
    many = [s for s, c in zip(conv.strides, conv.counts) if c > 1]
    free = max(many) if many else 1
    strides = tuple(s if c > 1 else free for s, c in zip(conv.strides, conv.counts))
    return conv if strides == conv.strides else replace(conv, strides=strides)


def _width_fits(offsets: list[int], limits: ConvLimits) -> bool:
    """Whether one kernel (at some legal dilation) can hold all these offsets."""
    longest = max(_kernel_choices(limits))
    return any((offsets[-1] - offsets[0]) // d + 1 <= longest for d in _dilation_choices(offsets, limits))


def _substitute(program: Program, source: Program) -> Program:
    if isinstance(program, Conv):
        return Conv(program.layout, _substitute(program.source, source))
    if isinstance(program, Sum):
        return Sum(_substitute(program.left, source), _substitute(program.right, source))
    return source


def _shift(conv: ConvMap, axis: int, offset: int, count: int) -> ConvMap:
    """A one-tap map along ``axis`` of ``conv``'s input: ``y[i] = x[i + offset]``, ``count`` long."""
    zero = [0] * conv.rank
    zero[axis] = offset
    counts = list(conv.sizes)
    counts[axis] = count
    return ConvMap(((tuple(zero), 1.0),), (1,) * conv.rank, tuple(counts), conv.sizes)


def _factors(stride: int, limits: ConvLimits) -> list[int]:
    """Strides ``f > 1`` dividing ``stride`` that a conv may have, largest first."""
    return [f for f in range(stride, 1, -1) if stride % f == 0 and _stride_allowed(f, limits)]


def _shift_steps(need: int) -> list[int]:
    """Shifts toward ``need``, longest first (each tried as one conv)."""
    sign = 1 if need > 0 else -1
    return [sign * s for s in range(abs(need), 0, -1)]


def _moved(conv: ConvMap, axis: int, delta: int, size: int) -> ConvMap:
    """``conv`` read from an input shifted by ``delta`` along ``axis``, ``size`` long."""
    taps = []
    for offset, w in conv.taps:
        moved = list(offset)
        moved[axis] += delta
        taps.append((tuple(moved), w))
    sizes = list(conv.sizes)
    sizes[axis] = size
    return replace(conv, taps=tuple(taps), sizes=tuple(sizes))
