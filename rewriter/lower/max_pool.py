"""MaxPool lowered to Conv, Relu, Add and Concat.

Per axis (max over a box is the max along each axis in turn):

1. Padding. ONNX pads MaxPool with -inf. A padded tap is replaced by a real
   element that already lies in every window containing that tap: the edge
   element for dilation 1, the first (last) element of the same residue class
   mod the dilation otherwise. The padded tensor is a Concat of one-element
   selection convs and the input. When the input is provably >= 0, the convs'
   own zero padding is already exact and nothing is added.
2. A doubling ladder of pairwise maxes, ``max(a, b) = relu(a - b) + b``:
   widths 1, 2, 4, ... then one last step with overlapping windows that also
   applies the stride. That is ceil(log2 k) pairwise maxes per axis.
"""

from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from ..spec import AxisSpec, PoolSpec
from .checks import refuse_site, resolve_spec
from .windows import conv_window_run


def lower_max_pool(b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec, *, input_nonnegative: bool) -> gs.Tensor:
    """Build the max pool of ``x`` described by ``spec``; returns the result tensor."""
    y = x
    for axis, axis_spec in enumerate(spec.axes):
        y = max_along_axis(b, y, axis, axis_spec, input_nonnegative=input_nonnegative)
    return y


def max_along_axis(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, *, input_nonnegative: bool) -> gs.Tensor:
    """1-D max pool with -inf padding semantics along one spatial axis."""
    if a.kernel == 1:
        # pads < kernel means no padding; the windows are single elements.
        return x if a.stride == 1 else b.conv_along(x, axis, [1.0], stride=a.stride, hint="pick")

    padded_length = a.pad_begin + a.size + a.used_end_pad
    zero_padded = False  # True while the convs read x itself, as zero outside its extent
    if a.pad_begin or a.used_end_pad:
        if input_nonnegative:
            zero_padded = True  # exact for x >= 0: a window's max is never below 0
        else:
            x = replicate_pad(b, x, axis, a)

    # Ladder: m[i] holds the max over `width` taps from i. Intermediate steps keep
    # m's length (the diff conv pads its end), so m itself is the base and needs
    # no selection conv; the tail they spoil is never read by the last step.
    m, width, length = x, 1, (a.size if zero_padded else padded_length)
    while 2 * width < a.kernel:
        shift = width * a.dilation
        if zero_padded:
            pads = dict(pad_begin=a.pad_begin, pad_end=a.used_end_pad)
            diff = b.conv_along(x, axis, [-1.0, 1.0], dilation=shift, hint="max_diff", pad_begin=a.pad_begin, pad_end=a.used_end_pad + shift)
            base = b.conv_along(x, axis, [1.0], hint="max_base", **pads)
            m, zero_padded, length = b.add(b.relu(diff), base), False, padded_length
        else:
            diff = b.conv_along(m, axis, [-1.0, 1.0], dilation=shift, pad_end=shift, hint="max_diff")
            m = b.add(b.relu(diff), m)
        width *= 2

    # Last step: overlapping windows, the stride, and exactly out_size outputs.
    start = -a.pad_begin if zero_padded else 0
    run = dict(start=start, count=a.out_size, stride=a.stride, dilation=(a.kernel - width) * a.dilation)
    diff = conv_window_run(b, m, axis, length, taps=[-1.0, 1.0], hint="max_diff", **run)
    base = conv_window_run(b, m, axis, length, taps=[1.0, 0.0], hint="max_base", **run)
    return b.add(b.relu(diff), base)  # relu(right - left) + left: exact when the left operand wins


def replicate_pad(b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec) -> gs.Variable:
    """Pad with copies of real elements so that no window's max changes."""
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
        return lower_max_pool(b, x, site.spec, input_nonnegative=site.input_nonnegative)
