"""Conv arrangements that pick out an exact run of windows along one axis.

Conv has no negative pads and no offset, so to start at input index ``start``
and produce exactly ``count`` outputs we shift the kernel with leading zero
taps, pad the input, or grow the kernel with trailing zero taps. Zero taps are
exact for finite inputs (``0 * inf`` is NaN; see README, non-finite inputs).
"""

from __future__ import annotations

from typing import Sequence

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder


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
    """Outputs ``o`` in ``[0, count)`` with ``out[o] = sum_j taps[j] * x[start + o*stride + j*dilation]``.

    ``x`` is read as zero outside ``[0, size)`` along ``axis``.
    """
    taps = list(taps)
    pad_begin = max(0, -start)
    offset = max(0, start)
    if len(taps) == 1 and offset > 0:
        # One tap far along the axis: a zero tap plus the dilation reach it in 2 MACs.
        taps, dilation, offset = [0.0] + taps, offset, 0
    if offset % dilation == 0:
        taps = [0.0] * (offset // dilation) + taps
    else:
        dense = [0.0] * (offset + (len(taps) - 1) * dilation + 1)
        for j, w in enumerate(taps):
            dense[offset + j * dilation] = w
        taps, dilation = dense, 1

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
    return b.conv_along(x, axis, taps, stride=stride, dilation=dilation, pad_begin=pad_begin, pad_end=pad_end, hint=hint)
