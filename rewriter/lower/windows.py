"""Conv arrangements that pick out an exact run of windows along one axis.

Conv has no negative pads and no offset, so to start at input index ``start``
and produce exactly ``count`` outputs we shift the kernel with leading zero
taps (at the kernel's own dilation, the rest made up by padding), pad the input,
or grow the kernel with trailing zero taps. Zero taps are exact for finite
inputs (``0 * inf`` is NaN; see README, non-finite inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..spec import AxisSpec


@dataclass(frozen=True)
class ConvLayout:
    """A 1-D depthwise conv along one axis, before it is built."""

    taps: tuple[float, ...]
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, hint: str) -> gs.Variable:
        return b.conv_along(
            x, axis, self.taps, stride=self.stride, dilation=self.dilation, pad_begin=self.pad_begin, pad_end=self.pad_end, hint=hint
        )


def window_run_layout(
    size: int, *, start: int, count: int, stride: int, taps: Sequence[float], dilation: int = 1
) -> ConvLayout:
    """Outputs ``o`` in ``[0, count)`` with ``out[o] = sum_j taps[j] * x[start + o*stride + j*dilation]``,
    ``x`` of length ``size`` read as zero outside ``[0, size)``."""
    taps, dilation, pad_begin = _reach(start, list(taps), dilation)

    def span() -> int:
        return (len(taps) - 1) * dilation + 1

    if count == 1:
        # One output: any stride longer than the padded input works.
        pad_end = max(0, span() - size - pad_begin)
        stride = max(1, size + pad_begin + pad_end - span() + 1)
    else:
        room = size + pad_begin - span()  # padded length minus kernel span, before end padding
        too_long = room - ((count - 1) * stride + stride - 1)
        if too_long > 0:
            extra = -(-too_long // dilation)
            taps = taps + [0.0] * extra
            room -= extra * dilation
        pad_end = max(0, (count - 1) * stride - room)
    return ConvLayout(tuple(taps), stride, dilation, pad_begin, pad_end)


def conv_window_run(
    b: SubgraphBuilder,
    x: gs.Tensor,
    axis: int,
    size: int,
    *,
    start: int,
    count: int,
    stride: int,
    taps: Sequence[float],
    dilation: int = 1,
    hint: str = "run",
) -> gs.Variable:
    """Build :func:`window_run_layout`: ``out[o] = sum_j taps[j] * x[start + o*stride + j*dilation]``."""
    layout = window_run_layout(size, start=start, count=count, stride=stride, taps=taps, dilation=dilation)
    return layout.build(b, x, axis, hint)


def _reach(start: int, taps: list[float], dilation: int) -> tuple[list[float], int, int]:
    """Taps, dilation and begin padding that put the first listed tap at input index
    ``start`` for output 0: leading zero taps at the kernel's own dilation, the rest
    made up by padding. One tap far along the axis becomes a zero tap plus the
    dilation: 2 MACs."""
    if len(taps) == 1 and start > 0:
        return [0.0] + taps, start, 0
    lead = -(-max(0, start) // dilation)
    return [0.0] * lead + taps, dilation, lead * dilation - start


def pool_windows_layout(
    a: AxisSpec, weights: Mapping[int, float], *, first: int = 0, last: Optional[int] = None
) -> ConvLayout:
    """``out[o] = sum_t weights[t] * x[a.window_start(o) + t * a.dilation]`` for the pool's
    outputs ``o`` in ``[first, last]`` (all of them by default), x read as zero outside.

    Two taps become one dilated pair, so the conv costs two MACs however far apart
    they are. Over all outputs the end padding follows the pool's own (floor mode),
    so the conv does not depend on the extent and dynamic spatial dims keep working.
    """
    last = a.out_size - 1 if last is None else last
    order = sorted(weights)
    low = order[0]
    if len(order) == 2:
        taps, dilation = [weights[order[0]], weights[order[1]]], (order[1] - low) * a.dilation
    else:
        taps = [weights.get(t, 0.0) for t in range(low, order[-1] + 1)]
        dilation = a.dilation
    start = a.window_start(first) + low * a.dilation
    if (first, last) != (0, a.out_size - 1):
        return window_run_layout(a.size, start=start, count=last - first + 1, stride=a.stride, taps=taps, dilation=dilation)
    taps, dilation, pad_begin = _reach(start, taps, dilation)
    # The numerator of the pool's output-size formula: the same count for every extent.
    pad_end = (len(taps) - 1) * dilation + 1 - a.effective_kernel + a.pad_begin + a.conv_end_pad - pad_begin
    if pad_end < 0:
        extra = (dilation - 1 - pad_end) // dilation  # trailing zero taps to cover -pad_end
        taps, pad_end = taps + [0.0] * extra, pad_end + extra * dilation
    return ConvLayout(tuple(taps), a.stride, dilation, pad_begin, pad_end)


def conv_pool_windows(
    b: SubgraphBuilder,
    x: gs.Tensor,
    axis: int,
    a: AxisSpec,
    weights: Mapping[int, float],
    *,
    first: int = 0,
    last: Optional[int] = None,
    hint: str = "taps",
) -> gs.Variable:
    """Build :func:`pool_windows_layout`: a weighted sum of window taps at the pool's outputs."""
    return pool_windows_layout(a, weights, first=first, last=last).build(b, x, axis, hint)
