"""The one place that reads ONNX pool attributes.

:class:`RawPool` decodes a node's attributes without a shape (auto_pad, the
attributes its opset version defines, a short description, a "same" pool's
reach); :func:`pool_spec_from_attributes` resolves them against a static shape
into per-axis numbers. Every lowering reads a :class:`PoolSpec`; none of them
looks at raw attributes. The semantics are onnxruntime's (the validator's
ground truth), which agree with the ONNX spec except where noted in
:func:`pool_spec_from_attributes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence


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

    @property
    def centred(self) -> bool:
        """Stride 1, no dilation, as many outputs as inputs: output q's window is
        ``[q - pad_begin, q + kernel - 1 - pad_begin]`` (a "same" pool)."""
        return self.stride == 1 and self.dilation == 1 and self.out_size == self.size and self.pad_begin + self.pad_end == self.kernel - 1

    @property
    def reach(self) -> tuple[int, int]:
        """How far left and right of output q a centred pool's window reaches."""
        return self.pad_begin, self.kernel - 1 - self.pad_begin

    def at_stride_one(self) -> "AxisSpec":
        """The same windows at every input step: output ``o * stride`` of the result is
        output ``o`` of this axis (for a stride applied later). Its outputs run to the
        last strided one, or past it to the end of the input where floor mode dropped a
        tail, so that its output count is the conv formula's."""
        count = (self.out_size - 1) * self.stride + 1
        pad_end = count - 1 + self.effective_kernel - self.pad_begin - self.size
        if pad_end < 0:  # floor mode dropped a tail: keep its windows (all real), so the pads are whole
            count, pad_end = count - pad_end, 0
        return AxisSpec(self.size, self.kernel, 1, self.dilation, self.pad_begin, pad_end, count)


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
    auto_pad = decode_auto_pad(attrs)

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


def decode_auto_pad(attrs: Mapping[str, object]) -> str:
    """The auto_pad attribute as a str (protobuf gives bytes); "NOTSET" when absent."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    return auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad or "NOTSET")


def attribute_support(op_type: str, opset: int) -> dict[str, bool]:
    """Which optional attributes the op's version defines (others keep defaults)."""
    if op_type == "MaxPool":
        return dict(count_include_pad_supported=False, ceil_mode_supported=opset >= 10, dilations_supported=opset >= 10)
    return dict(count_include_pad_supported=opset >= 7, ceil_mode_supported=opset >= 10, dilations_supported=opset >= 19)


def surrogate_extent(effective_kernel: int, variant: int = 0) -> int:
    """A stand-in for a dynamic extent; lowerings built for two of them must agree."""
    return 4 * effective_kernel + 17 + variant


@dataclass(frozen=True)
class RawPool:
    """A pool node's attributes as written, read without a shape."""

    op_type: str
    attrs: Mapping[str, object]
    opset: int = 22

    @property
    def auto_pad(self) -> str:
        return decode_auto_pad(self.attrs)

    def effective_kernel(self, axis: int) -> int:
        """The window's span along spatial ``axis`` (1 past the kernel's rank)."""
        kernel = list(self.attrs.get("kernel_shape") or [])  # type: ignore[call-overload]
        dilations = list(self.attrs.get("dilations") or [1] * len(kernel))  # type: ignore[call-overload]
        return (kernel[axis] - 1) * dilations[axis] + 1 if axis < len(kernel) else 1

    def extent_dependence(self, input_nonnegative: bool) -> Optional[str]:
        """None when the exact lowering never looks at the spatial extents (floor-mode
        pools whose padding is the conv's own zero padding); else what makes it look,
        in parentheses ("" when it is the op itself)."""
        attrs, auto_pad = self.attrs, self.auto_pad
        if self.op_type not in ("MaxPool", "AveragePool") or auto_pad not in ("NOTSET", "VALID"):
            return ""
        if attrs.get("ceil_mode") and attribute_support(self.op_type, self.opset)["ceil_mode_supported"]:
            return " (ceil_mode)"
        padded = any(attrs.get("pads", [])) and auto_pad != "VALID"  # type: ignore[arg-type]
        if padded and self.op_type == "MaxPool" and not input_nonnegative:
            return " (-inf padding of a signed input)"
        if padded and self.op_type == "AveragePool" and not attrs.get("count_include_pad"):
            return " (count_include_pad=0 divisors at the borders)"
        return None

    def centred_reach(self) -> Optional[tuple[tuple[int, int], ...]]:
        """Per axis, the (left, right) reach of a "same" MaxPool (:attr:`AxisSpec.centred`),
        whose output q is the max over ``[q - left, q + right]`` of its input, clipped to
        it; None for any other node. Stride 1 makes the answer the same for every extent."""
        kernel = self.attrs.get("kernel_shape")
        if self.op_type != "MaxPool" or not kernel:
            return None
        spatial = [surrogate_extent(self.effective_kernel(i)) for i in range(len(kernel))]  # type: ignore[arg-type]
        try:
            spec = pool_spec_from_attributes("max", self.attrs, spatial, **attribute_support(self.op_type, self.opset))
        except SpecError:
            return None
        return tuple(a.reach for a in spec.axes) if all(a.centred for a in spec.axes) else None

    def describe(self) -> str:
        """The report's short attribute form for nodes refused before their spec was resolved."""
        attrs = self.attrs
        if self.op_type.startswith("Global"):
            return "global"
        if self.op_type.startswith("Reduce"):
            return "global (axes " + ",".join(str(a) for a in attrs.get("axes", [])) + ")"  # type: ignore[union-attr]

        def join(key: str, sep: str = "x") -> str:
            return sep.join(str(v) for v in attrs[key])  # type: ignore[union-attr]

        parts = []
        if "kernel_shape" in attrs:
            parts.append("k" + join("kernel_shape"))
        if "strides" in attrs:
            parts.append("s" + join("strides"))
        if "pads" in attrs:
            pads = list(attrs["pads"])  # type: ignore[call-overload]
            half = len(pads) // 2
            parts.append("p" + ",".join(map(str, pads[:half])) + "/" + ",".join(map(str, pads[half:])))
        if "dilations" in attrs:
            parts.append("d" + join("dilations"))
        if "count_include_pad" in attrs:
            parts.append(f"cip={attrs['count_include_pad']}")
        if attrs.get("ceil_mode"):
            parts.append("ceil")
        if self.auto_pad != "NOTSET":
            parts.append(self.auto_pad)
        if "p" in attrs:
            parts.append(f"L{attrs['p']}")  # LpPool's norm
        return " ".join(parts)


@dataclass(frozen=True)
class RawReduce:
    """A ReduceMean / ReduceMax node's attributes as written: the one reader of them.

    ``attrs`` holds the node's attributes; ``axes_input`` the value of its second input
    when that is a constant (opset 18+ writes the axes there). ``axes`` is then the
    attribute, else that input; None when neither gives them (every axis is reduced,
    or none with ``noop_with_empty_axes``).
    """

    op_type: str
    attrs: Mapping[str, object]
    axes_input: Optional[Sequence[int]] = None

    @property
    def axes(self) -> Optional[tuple[int, ...]]:
        written = self.attrs.get("axes")
        if written is None:
            written = self.axes_input
        return tuple(int(a) for a in written) if written is not None else None  # type: ignore[union-attr]

    @property
    def keepdims(self) -> bool:
        return bool(self.attrs.get("keepdims", 1))

    def reduced_axes(self, rank: int) -> Optional[tuple[int, ...]]:
        """The reduced axes of a rank-``rank`` input, normalised and sorted; None when
        they are not a proper subset of named axes (missing or empty axes reduce all, or
        nothing with ``noop_with_empty_axes``; an axis out of range or named twice is
        invalid, not ours to judge)."""
        axes = self.axes
        if not axes or any(not -rank <= a < rank for a in axes):
            return None
        normal = sorted(a % rank for a in axes)
        return tuple(normal) if len(set(normal)) == len(normal) and len(normal) < rank else None

    def out_rank(self, rank: int) -> int:
        reduced = self.reduced_axes(rank) or ()
        return rank if self.keepdims else rank - len(reduced)


def surrogate_spatial(raw: RawPool, dims: Sequence[object], variant: int = 0) -> list[int]:
    """The spatial extents, with a stand-in (:func:`surrogate_extent`) for each dynamic one."""
    return [d if isinstance(d, int) and d >= 0 else surrogate_extent(raw.effective_kernel(i), variant) for i, d in enumerate(dims)]
