"""AveragePool lowered to Conv and Add.

Zero padding contributes nothing to a sum, so the conv's own pads are exact.
onnxruntime's divisor is a product of per-axis counts (see
:meth:`PoolSpec.divisors`), which makes the pool separable:

* axes where every window has the same count fold into one N-D depthwise
  conv with weights ``1/K``;
* an axis with position-dependent counts (count_include_pad=0 with pads, or
  ceil_mode windows running past the end): one conv with the commonest count,
  plus, for each run of windows with another count, the difference from a conv
  over those windows, padded back to full length and added (no Concat).
"""

from __future__ import annotations

from itertools import groupby
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from ..spec import AxisSpec, PoolSpec
from .checks import refuse_site, resolve_spec
from .windows import conv_window_run


# Above this many taps, one N-D kernel costs more weights than one 1-D conv per
# axis (a 55x55 global pool: 3025 weights per channel instead of 110).
MAX_FOLDED_TAPS = 64


def lower_average_pool(b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec) -> gs.Tensor:
    """Build the average pool of ``x`` described by ``spec``; returns the result tensor."""
    divisors = [spec.divisors(i) for i in range(spec.rank)]
    uniform = [len(set(d)) == 1 for d in divisors]
    scale_op = "Div" if b.can("Div") else "Mul" if b.can("Mul") and not all(uniform) else None
    if scale_op:
        return sum_then_scale(b, x, spec, divisors, scale_op)
    y = x
    for group in folded_groups(spec, uniform):
        y = uniform_axes_conv(b, y, spec, group, divisors)
    for axis, a in enumerate(spec.axes):
        if not uniform[axis]:
            y = average_along_axis(b, y, axis, a, divisors[axis])
    return y


def folded_groups(spec: PoolSpec, axes: list[bool]) -> list[list[bool]]:
    """The selected axes as one conv, or one conv per axis past MAX_FOLDED_TAPS taps."""
    taps = 1
    for a, selected in zip(spec.axes, axes):
        taps *= a.kernel if selected else 1
    if taps <= MAX_FOLDED_TAPS:
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


def uniform_axes_conv(
    b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec, uniform: list[bool], divisors: list[list[int]]
) -> gs.Tensor:
    """One conv over all axes whose divisor is the same for every window."""
    kernel_shape, strides, dilations = [], [], []
    pads_begin, pads_end = [], []
    total = 1
    for a, is_uniform, div in zip(spec.axes, uniform, divisors):
        if is_uniform:
            kernel_shape.append(a.kernel)
            strides.append(a.stride)
            dilations.append(a.dilation)
            pads_begin.append(a.pad_begin)
            pads_end.append(a.conv_end_pad)
            total *= div[0]
        else:
            kernel_shape.append(1)
            strides.append(1)
            dilations.append(1)
            pads_begin.append(0)
            pads_end.append(0)
    kernel = np.full(kernel_shape, 1.0 / total)
    return b.depthwise_conv(x, kernel, strides=strides, dilations=dilations, pads=pads_begin + pads_end, hint="avg")


def average_along_axis(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, divisors: list[int]) -> gs.Tensor:
    """Windows along one axis, each divided by its own count.

    One conv divides every window by the commonest count; each run of windows with
    another count gets the difference, ``sum * (1/count - 1/common)``, from a conv
    over just those windows, padded back to full length with zeros and added.
    onnxruntime fuses each such Add into a conv and keeps its blocked layout, which
    a Concat of the runs would break.
    """
    runs, first = [], 0
    for count, run in groupby(divisors):
        length = len(list(run))
        runs.append((count, first, length))
        first += length
    common = max(runs, key=lambda r: r[2])[0]

    def windows(first: int, length: int, weight: float, hint: str) -> gs.Variable:
        return conv_window_run(
            b, x, axis, a.size, start=a.window_start(first), count=length, stride=a.stride,
            taps=[weight] * a.kernel, dilation=a.dilation, hint=hint,
        )

    y: Optional[gs.Tensor] = None
    for count, first, length in runs:
        if count == common:
            continue
        difference = windows(first, length, 1.0 / count - 1.0 / common, "avg_fix")
        placed = b.conv_along(difference, axis, [1.0], pad_begin=first, pad_end=a.out_size - first - length, hint="avg_place")
        y = placed if y is None else b.add(placed, y)
    main = windows(0, a.out_size, 1.0 / common, "avg")
    return main if y is None else b.add(main, y)


class AveragePoolRule:
    """AveragePool from opset 7 on (onnxruntime has no kernel for version 1)."""

    op_types = ("AveragePool",)

    def check(self, site: PoolSite) -> Optional[str]:
        if site.opset < 7:
            return "AveragePool-1: onnxruntime has no kernel for it, so the rewrite could not be validated"
        if site.between_qdq:
            # A window mean can land exactly on a rounding tie of QuantizeLinear; the conv's
            # different rounding order could then move the quantized result by one step.
            return "AveragePool between DequantizeLinear and QuantizeLinear: the quantized output could differ at rounding ties"
        return refuse_site(site) or resolve_spec(site, "average")

    def rewrite(self, site: PoolSite, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        assert site.spec is not None
        return lower_average_pool(b, x, site.spec)
