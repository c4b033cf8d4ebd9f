"""The one place that turns ONNX pool attributes into per-axis numbers.

Every lowering reads a :class:`PoolSpec`; none of them looks at raw attributes.
The semantics are onnxruntime's (the validator's ground truth), which agree
with the ONNX spec except where noted in :func:`pool_spec_from_attributes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence


class SpecError(ValueError):
    """The attributes describe a pool we refuse to lower; the message is the reason."""


class InvalidPoolError(SpecError):
    """The attributes are invalid by the ONNX spec itself (not merely unsupported)."""


@dataclass(frozen=True)
class AxisSpec:
    """One spatial axis of a pool, with auto_pad and ceil_mode already resolved.

    ``pad_end`` is the explicit (or auto_pad) end padding. Windows of a
    ceil_mode pool may run further than that; :attr:`used_end_pad` is how far
    past the input the last window actually reaches.
    """

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int
    out_size: int

    @property
    def effective_kernel(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    @property
    def used_extent(self) -> int:
        """Length of the padded input that the windows touch."""
        return (self.out_size - 1) * self.stride + self.effective_kernel

    @property
    def used_end_pad(self) -> int:
        """End padding the windows really use (ceil overhang included), never negative."""
        return max(0, self.used_extent - self.pad_begin - self.size)

    def window_start(self, o: int) -> int:
        """Input index of the first tap of output ``o`` (negative inside the begin pad)."""
        return o * self.stride - self.pad_begin

    def taps(self, o: int) -> list[int]:
        start = self.window_start(o)
        return [start + j * self.dilation for j in range(self.kernel)]

    def valid_count(self, o: int) -> int:
        """Taps of window ``o`` that fall on real input elements."""
        return sum(1 for t in self.taps(o) if 0 <= t < self.size)

    def include_pad_count(self, o: int) -> int:
        """onnxruntime's count_include_pad divisor: taps before the end of the
        explicit padding. Taps in the ceil_mode overhang are not counted."""
        return sum(1 for t in self.taps(o) if t < self.size + self.pad_end)

    @property
    def conv_end_pad(self) -> int:
        """End padding for a conv that reads x as zero outside it and must give out_size
        outputs: the explicit end pad when that works (floor mode, which also makes the
        conv independent of the extent), else just what the windows use."""
        if (self.size + self.pad_begin + self.pad_end - self.effective_kernel) // self.stride + 1 == self.out_size:
            return self.pad_end
        return self.used_end_pad


@dataclass(frozen=True)
class PoolSpec:
    """A normalized pool: what the node computes, axis by axis."""

    kind: str  # "max" or "average"
    axes: tuple[AxisSpec, ...]
    count_include_pad: bool = False
    # Already folded into the axes; kept only to describe the node.
    ceil_mode: bool = False
    auto_pad: str = "NOTSET"

    @property
    def rank(self) -> int:
        return len(self.axes)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(a.out_size for a in self.axes)

    def divisors(self, axis: int) -> list[int]:
        """Per-output divisor along one axis; onnxruntime's divisor is their product."""
        a = self.axes[axis]
        count = a.include_pad_count if self.count_include_pad else a.valid_count
        return [count(o) for o in range(a.out_size)]

    def describe(self) -> str:
        """Compact attribute summary for reports, e.g. ``k3x3 s2x2 p1,1/1,1 d1x1``."""
        def join(vals: Sequence[int]) -> str:
            return "x".join(str(v) for v in vals)

        text = (
            f"k{join([a.kernel for a in self.axes])} s{join([a.stride for a in self.axes])} "
            f"p{','.join(str(a.pad_begin) for a in self.axes)}/{','.join(str(a.pad_end) for a in self.axes)}"
        )
        if any(a.dilation != 1 for a in self.axes):
            text += f" d{join([a.dilation for a in self.axes])}"
        if self.kind == "average":
            text += " cip=1" if self.count_include_pad else " cip=0"
        if self.ceil_mode:
            text += " ceil"
        if self.auto_pad not in ("NOTSET", ""):
            text += f" {self.auto_pad}"
        return text


def _ints(attrs: Mapping[str, object], name: str, default: Sequence[int]) -> list[int]:
    value = attrs.get(name)
    if value is None:
        return list(default)
    return [int(v) for v in value]  # type: ignore[union-attr]


def _output_size(length: int, axis_pad: int, eff: int, stride: int, ceil_mode: bool, pad_begin: int) -> int:
    span = length + axis_pad - eff
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # A last ceil_mode window that starts inside the end padding is dropped.
    if ceil_mode and (out - 1) * stride >= length + pad_begin:
        out -= 1
    return out


def pool_spec_from_attributes(
    kind: str,
    attrs: Mapping[str, object],
    spatial_shape: Sequence[int],
    *,
    count_include_pad_supported: bool = True,
    ceil_mode_supported: bool = True,
    dilations_supported: bool = True,
) -> PoolSpec:
    """Resolve ONNX pool attributes against a static spatial shape.

    The ``*_supported`` flags say whether the node's opset version defines the
    attribute; an attribute the version does not define keeps its default.

    Raises :class:`SpecError` with the reason for pools we must not lower:
    invalid attributes, or cases where onnxruntime departs from the spec.
    """
    rank = len(spatial_shape)
    kernel = _ints(attrs, "kernel_shape", [])
    if len(kernel) != rank:
        raise InvalidPoolError(f"kernel_shape {kernel} does not match the input's {rank} spatial dims")
    if any(k < 1 for k in kernel):
        raise InvalidPoolError(f"kernel_shape {kernel} has a non-positive entry")
    strides = _ints(attrs, "strides", [1] * rank)
    dilations = _ints(attrs, "dilations", [1] * rank) if dilations_supported else [1] * rank
    pads = _ints(attrs, "pads", [0] * (2 * rank))
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise InvalidPoolError(f"strides {strides}, dilations {dilations} or pads {pads} do not match the kernel rank {rank}")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations) or any(p < 0 for p in pads):
        raise InvalidPoolError(f"strides {strides} and dilations {dilations} must be positive and pads {pads} non-negative")
    ceil_mode = bool(attrs.get("ceil_mode", 0)) if ceil_mode_supported else False
    cip = bool(attrs.get("count_include_pad", 0)) if count_include_pad_supported else False
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()

    axes = []
    for i, length in enumerate(spatial_shape):
        k, s, d = kernel[i], strides[i], dilations[i]
        eff = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if d != 1:
                # onnxruntime pads as if the kernel were undilated and returns fewer
                # outputs than the spec's ceil(L/s); we follow neither silently.
                raise SpecError("auto_pad SAME with dilations > 1: onnxruntime departs from the ONNX spec")
            out = -(-length // s)
            total = (out - 1) * s + eff - length
            if total < 0:
                # onnxruntime computes a negative pad here and fails or misbehaves.
                raise SpecError("auto_pad SAME with stride > kernel: onnxruntime computes negative padding")
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            end = total - begin
        elif auto_pad == "VALID":
            begin = end = 0
            out = _output_size(length, 0, eff, s, ceil_mode, 0)
        elif auto_pad in ("NOTSET", "", None):
            begin, end = pads[i], pads[i + rank]
            if begin >= eff or end >= eff:
                raise InvalidPoolError(f"pads {pads} not smaller than the effective kernel {eff} on spatial axis {i}")
            if begin >= k or end >= k:
                # onnxruntime refuses pads >= kernel_shape at session creation.
                raise SpecError(f"pads {pads} not smaller than kernel_shape {kernel}")
            out = _output_size(length, begin + end, eff, s, ceil_mode, begin)
        else:
            raise InvalidPoolError(f"unknown auto_pad {auto_pad!r}")
        if out < 1:
            span = length + begin + end - eff
            runtime_size = math.ceil(span / s + 1) if ceil_mode else span / s + 1
            if int(runtime_size) < 0:  # onnxruntime truncates toward zero, as C++ does
                # onnxruntime rejects a negative output size; zero is an empty (valid) output.
                raise InvalidPoolError(f"the window (effective kernel {eff}) is larger than the padded input ({length}) on spatial axis {i}")
            raise SpecError(f"empty output on spatial axis {i} (size {length}, effective kernel {eff})")
        axis = AxisSpec(length, k, s, d, begin, end, out)
        for o in range(out):
            if axis.valid_count(o) == 0:
                raise SpecError(
                    f"output {o} on spatial axis {i} has a window with no input element "
                    "(its value would be the runtime's fill value, not a pooled one)"
                )
        axes.append(axis)
    return PoolSpec(kind=kind, axes=tuple(axes), count_include_pad=cip, ceil_mode=ceil_mode, auto_pad=str(auto_pad or "NOTSET"))


def global_pool_spec(kind: str, spatial_shape: Sequence[int]) -> PoolSpec:
    """A global pool is a pool whose window is the whole (static) extent."""
    axes = tuple(AxisSpec(n, n, 1, 1, 0, 0, 1) for n in spatial_shape)
    return PoolSpec(kind=kind, axes=axes, count_include_pad=False)
