"""Target profiles: what an accelerator runs, as data (``--target NAME|FILE.json``).

A :class:`Profile` says which ops the target runs, the limits on the Convs and
Concats it accepts, and which pools it runs natively. Every field left out of a
profile means "no limit". The format is documented in ``docs/targets.md``;
:func:`load_profile` (in :mod:`rewriter.profiles`) reads and validates it.

The limits are checked in one place, :func:`conv_violations` and friends, by the
planner (to choose a construction that fits), by the final check of every added
node, and by ``--audit`` for the model's own nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from .spec import PoolSpec


@dataclass(frozen=True)
class Range:
    """An inclusive ``[lo, hi]`` range of integers."""

    lo: int
    hi: int

    def __contains__(self, value: int) -> bool:
        return self.lo <= value <= self.hi

    def __str__(self) -> str:
        return f"[{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class ConvLimits:
    """What a Conv may look like, per spatial axis (pads per side)."""

    kernel: Optional[Range] = None
    stride: Optional[Range] = None
    dilation: Optional[Range] = None
    pad: Optional[Range] = None
    pad_below_kernel: bool = False  # each pad smaller than the kernel on its axis
    equal_strides: bool = False  # the same stride on every spatial axis
    dilation_only_at_stride_1: bool = False  # a dilated conv must have stride 1 on every axis
    # Allowed (kh, kw, stride) of group = C (depthwise) convs; None: any within the ranges.
    depthwise_kernels: Optional[tuple[tuple[int, int, int], ...]] = None
    max_kernel_area: Optional[int] = None
    spatial_ranks: Optional[tuple[int, ...]] = None  # e.g. (2,): 2-D convs only


@dataclass(frozen=True)
class CostRule:
    """A measured rule that the rewrite is cheaper on the target than its native pool:
    where the measurement comes from, and what it measured (``docs/targets.md``)."""

    source: str
    measured: str


@dataclass(frozen=True)
class PoolLimits:
    """What the target runs natively for one pool op; a pool outside them is rewritten."""

    kernel: Optional[Range] = None
    stride: Optional[Range] = None
    pad: Optional[Range] = None
    ceil_mode: bool = True  # allowed?
    dilation: bool = True  # dilations > 1 allowed?
    auto_pad: Optional[tuple[str, ...]] = None  # allowed values; None: any
    count_include_pad: Optional[tuple[int, ...]] = None  # allowed values; None: any
    square: bool = False  # kernel equal on every spatial axis
    # Allowed (kernel, stride) pairs of square windows; None: any within the ranges.
    windows: Optional[tuple[tuple[int, int], ...]] = None
    global_max_extent: Optional[int] = None  # global pools: the largest extent per axis
    global_max_area: Optional[int] = None  # global pools: the largest product of extents
    spatial_ranks: Optional[tuple[int, ...]] = None
    # Limits of a pool with any pad > 0 (Vela: AVERAGE_POOL_2D with SAME padding only up
    # to 8x8, and stride > 3 only with VALID padding); None: the plain limits apply.
    padded_kernel: Optional[Range] = None
    padded_stride: Optional[Range] = None
    # Rewrite the pool even within its native limits: the rewrite is measured cheaper.
    rewrite_even_if_native: Optional[CostRule] = None


@dataclass(frozen=True)
class Profile:
    """One accelerator's limits. ``ops`` None: the strict Conv/Relu/Add/Concat."""

    name: str
    source: str = ""
    ops: Optional[frozenset[str]] = None
    conv: ConvLimits = field(default_factory=ConvLimits)
    concat_axes: Optional[tuple[int, ...]] = None  # NCHW numbering; None: any axis
    pools: Mapping[str, PoolLimits] = field(default_factory=dict)  # op type -> natively run


@dataclass(frozen=True)
class Violation:
    """One node outside the target: which rule, the value found, the limit."""

    node: str
    op_type: str
    rule: str  # e.g. "conv.kernel", "concat_axes", "ops"
    value: str
    limit: str

    def __str__(self) -> str:
        return f"{self.node or '<unnamed>'} ({self.op_type}): {self.rule} {self.value} outside {self.limit}"


def conv_violations(
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    depthwise: bool,
    limits: ConvLimits,
    node: str = "",
) -> list[Violation]:
    """Every rule of ``limits`` a Conv with these attributes breaks (pads: begins, then ends)."""
    rank = len(kernel)
    found: list[Violation] = []

    def bad(rule: str, value: object, limit: object) -> None:
        found.append(Violation(node, "Conv", rule, str(value), str(limit)))

    if limits.spatial_ranks is not None and rank not in limits.spatial_ranks:
        bad("conv.spatial_ranks", rank, list(limits.spatial_ranks))
    for name, values, allowed in (("kernel", kernel, limits.kernel), ("stride", strides, limits.stride), ("dilation", dilations, limits.dilation), ("pad", pads, limits.pad)):
        if allowed is not None:
            outside = [v for v in values if v not in allowed]
            if outside:
                bad(f"conv.{name}", max(outside, key=lambda v: abs(v)), allowed)
    if limits.pad_below_kernel:
        for axis in range(rank):
            for pad in (pads[axis], pads[axis + rank]):
                if pad >= kernel[axis]:
                    bad("conv.pad_below_kernel", f"pad {pad} on a kernel of {kernel[axis]}", "pad < kernel")
    if limits.equal_strides and len(set(strides)) > 1:
        bad("conv.equal_strides", list(strides), "equal strides")
    if limits.dilation_only_at_stride_1 and any(d > 1 for d in dilations) and any(s > 1 for s in strides):
        bad("conv.dilation_only_at_stride_1", f"dilation {list(dilations)} at stride {list(strides)}", "stride 1")
    if limits.max_kernel_area is not None:
        area = 1
        for k in kernel:
            area *= k
        if area > limits.max_kernel_area:
            bad("conv.max_kernel_area", area, limits.max_kernel_area)
    if depthwise and limits.depthwise_kernels is not None and rank == 2:
        shape = (kernel[0], kernel[1], strides[0])
        if len(set(strides)) > 1 or shape not in limits.depthwise_kernels:
            bad("conv.depthwise_kernels", f"{kernel[0]}x{kernel[1]} stride {list(strides)}", [list(k) for k in limits.depthwise_kernels])
    return found


def concat_violations(axis: int, rank: int, concat_axes: Optional[tuple[int, ...]], node: str = "") -> list[Violation]:
    """A Concat on an axis the target does not concatenate on (negative axes normalised)."""
    if concat_axes is None:
        return []
    normal = axis % rank if rank else axis
    return [] if normal in concat_axes else [Violation(node, "Concat", "concat_axes", str(normal), str(list(concat_axes)))]


def native_refusal(op_type: str, spec: PoolSpec, limits: PoolLimits, cost_rules: bool = True) -> Optional[str]:
    """Why the target does not run this pool itself (the first limit it breaks), or None.

    With ``cost_rules`` (the pass, and what a lowering may emit), a pool whose limits carry
    ``rewrite_even_if_native`` is refused too: the rewrite is measured cheaper. The audit
    passes False: the target does run such a pool, so the model's own one breaks nothing."""
    axes = spec.axes
    if cost_rules and limits.rewrite_even_if_native is not None:
        return f"rewritten even where native: {limits.rewrite_even_if_native.measured}"
    if limits.spatial_ranks is not None and spec.rank not in limits.spatial_ranks:
        return f"{spec.rank}-D, outside spatial_ranks {list(limits.spatial_ranks)}"
    if op_type.startswith("Global"):
        extents = [a.size for a in axes]
        if limits.global_max_extent is not None and max(extents) > limits.global_max_extent:
            return f"extent {max(extents)} > global_max_extent {limits.global_max_extent}"
        area = 1
        for n in extents:
            area *= n
        if limits.global_max_area is not None and area > limits.global_max_area:
            return f"area {area} > global_max_area {limits.global_max_area}"
        return None
    for name, values, allowed in (
        ("kernel", [a.kernel for a in axes], limits.kernel),
        ("stride", [a.stride for a in axes], limits.stride),
        ("pad", [p for a in axes for p in (a.pad_begin, a.pad_end)], limits.pad),
    ):
        why = _outside(name, values, allowed)
        if why:
            return why
    if any(p > 0 for a in axes for p in (a.pad_begin, a.pad_end)):
        for name, values, allowed in (("padded kernel", [a.kernel for a in axes], limits.padded_kernel), ("padded stride", [a.stride for a in axes], limits.padded_stride)):
            why = _outside(name, values, allowed)
            if why:
                return why
    if not limits.ceil_mode and spec.ceil_mode:
        return "ceil_mode"
    if not limits.dilation and any(a.dilation > 1 for a in axes):
        return "dilation"
    if limits.auto_pad is not None and spec.auto_pad not in limits.auto_pad:
        return f"auto_pad {spec.auto_pad} not in {list(limits.auto_pad)}"
    if op_type == "AveragePool" and limits.count_include_pad is not None and int(spec.count_include_pad) not in limits.count_include_pad:
        return f"count_include_pad={int(spec.count_include_pad)} not in {list(limits.count_include_pad)}"
    kernels, strides = {a.kernel for a in axes}, {a.stride for a in axes}
    if limits.square and len(kernels) > 1:
        return "kernel not square"
    if limits.windows is not None and (len(kernels) > 1 or len(strides) > 1 or (axes[0].kernel, axes[0].stride) not in limits.windows):
        shown = f"k{'x'.join(str(a.kernel) for a in axes)} s{'x'.join(str(a.stride) for a in axes)}"
        return f"window {shown} not in {[list(w) for w in limits.windows]}"
    return None


def _outside(name: str, values: list[int], allowed: Optional[Range]) -> Optional[str]:
    outside = [v for v in values if allowed is not None and v not in allowed]
    return f"{name} {max(outside)} outside {allowed}" if outside else None
