"""Pools the target runs itself: with ``--target``, those are left as they are.

:func:`native_refusal` says why a target does *not* run a pool natively (None:
it does), from the pool's resolved :class:`~rewriter.spec.PoolSpec` and the
profile's :class:`~rewriter.profile.PoolLimits` for its op. :func:`native_reason`
is the pass's one question: the report's reason for keeping a site, or None.
"""

from __future__ import annotations

from typing import Optional

from .lower.checks import Refusal, resolve_spec
from .profile import PoolLimits, Profile, Range
from .selection import NATIVE
from .site import PoolSite
from .spec import PoolSpec, SpecError, attribute_support, global_pool_spec, pool_spec_from_attributes


def native_refusal(op_type: str, spec: PoolSpec, limits: PoolLimits) -> Optional[str]:
    """Why the target does not run this pool itself (the first limit it breaks), or None."""
    axes = spec.axes
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


def native_reason(site: PoolSite, profile: Optional[Profile]) -> Optional[str]:
    """``runs natively on <profile>`` when ``profile`` runs this pool itself, else None
    (no profile, no native limits for its op, or a spec that cannot be resolved)."""
    limits = profile.pools.get(site.op_type) if profile is not None else None
    if limits is None or site.input_shape is None or len(site.input_shape) < 3:
        return None
    if site.spatial_is_dynamic() and (site.op_type.startswith("Global") or site.raw.auto_pad.startswith("SAME")):
        return None  # the extents decide the window or the pads: unknown here
    spec = resolve_spec(site, "max" if "Max" in site.op_type else "average")
    if isinstance(spec, Refusal) or native_refusal(site.op_type, spec, limits) is not None:
        return None
    return f"{NATIVE}{profile.name}"  # type: ignore[union-attr]


def node_native_refusal(op_type: str, attrs: dict, spatial: list, limits: PoolLimits, opset: int = 22) -> Optional[str]:
    """:func:`native_refusal` for a pool node of a model (``--audit``): its attributes resolved
    against its input's spatial extents; a dynamic extent or a spec error is the refusal."""
    if not all(isinstance(d, int) and d >= 0 for d in spatial):
        return "dynamic spatial dims"
    kind = "max" if "Max" in op_type else "average"
    try:
        if op_type.startswith("Global"):
            spec = global_pool_spec(kind, spatial)
        else:
            spec = pool_spec_from_attributes(kind, attrs, spatial, **attribute_support(op_type, opset))
    except SpecError as err:
        return str(err)
    return native_refusal(op_type, spec, limits)


def _outside(name: str, values: list[int], allowed: Optional[Range]) -> Optional[str]:
    outside = [v for v in values if allowed is not None and v not in allowed]
    return f"{name} {max(outside)} outside {allowed}" if outside else None
