"""Pools the target runs itself: with ``--target``, those are left as they are.

:func:`~rewriter.profile.native_refusal` says why a target does *not* run a pool
natively (None: it does), from the pool's resolved :class:`~rewriter.spec.PoolSpec`
and the profile's :class:`~rewriter.profile.PoolLimits` for its op. :func:`native_reason`
is the pass's one question: the report's reason for keeping a site, or None.
"""

from __future__ import annotations

from typing import Optional

from .profile import PoolLimits, Profile, native_refusal
from .selection import NATIVE
from .site import PoolSite
from .spec import RawPool, SpecError, attribute_support, global_pool_spec, pool_spec_from_attributes, surrogate_spatial


def native_reason(site: PoolSite, profile: Optional[Profile]) -> Optional[str]:
    """``runs natively on <profile>`` when ``profile`` runs this pool itself, else None
    (no profile, no native limits for its op, or a spec that cannot be resolved)."""
    limits = profile.pools.get(site.op_type) if profile is not None else None
    if limits is None or site.input_shape is None or len(site.input_shape) < 3:
        return None
    if node_native_refusal(site.op_type, site.attrs, list(site.input_shape[2:]), limits, site.opset) is not None:
        return None
    return f"{NATIVE}{profile.name}"  # type: ignore[union-attr]


def node_native_refusal(op_type: str, attrs: dict, spatial: list, limits: PoolLimits, opset: int = 22, cost_rules: bool = True) -> Optional[str]:
    """:func:`native_refusal` for a pool node of a model (``--audit``, and the pools the
    rewrite emits): its attributes resolved against its input's spatial extents. A dynamic
    extent is the refusal only where it decides the window or the pads (global pools,
    auto_pad SAME), as for :func:`native_reason`; otherwise it has a stand-in. A spec error
    is the refusal. ``cost_rules``: as for :func:`native_refusal` (the audit passes False)."""
    raw = RawPool(op_type, attrs, opset)
    rank = len(attrs.get("kernel_shape", ())) or len(spatial)
    if len(spatial) != rank or not all(isinstance(d, int) and d >= 0 for d in spatial):
        if op_type.startswith("Global") or raw.auto_pad.startswith("SAME"):
            return "dynamic spatial dims"
        spatial = surrogate_spatial(raw, spatial if len(spatial) == rank else [None] * rank)
    kind = "max" if "Max" in op_type else "average"
    try:
        if op_type.startswith("Global"):
            spec = global_pool_spec(kind, spatial)
        else:
            spec = pool_spec_from_attributes(kind, attrs, spatial, **attribute_support(op_type, opset))
    except SpecError as err:
        return str(err)
    return native_refusal(op_type, spec, limits, cost_rules)


__all__ = ["native_reason", "native_refusal", "node_native_refusal"]
