"""Refusals shared by every rule: dtype, shapes, and the spec itself."""

from __future__ import annotations

from typing import Optional

from ..site import PoolSite
from ..spec import InvalidPoolError, SpecError, global_pool_spec, pool_spec_from_attributes

SUPPORTED_DTYPES = ("float32", "float16")
# What lets a pool kept for unknown or dynamic dims be rewritten.
STATIC_SHAPE_HINT = "--overwrite-input-shape NAME:D0,D1,... (static input dims) would let it be rewritten"

DTYPE_REASONS = {
    "int8": "int8 pool: the strict op set has no exact integer max/average path",
    "uint8": "uint8 pool: the strict op set has no exact integer max/average path",
    "float64": "double pool: onnxruntime has no double Conv, so the rewrite could not be validated "
    "(--rewrite-double with --no-validate rewrites it anyway)",
    "bfloat16": "bfloat16 pool: onnxruntime has no bfloat16 Conv on CPU, so the rewrite could not be validated",
}


def refuse_site(site: PoolSite) -> Optional[str]:
    """Reason this node cannot be lowered whatever its op, or None."""
    if site.dtype_name not in SUPPORTED_DTYPES and not (site.dtype_name == "float64" and site.allow_double):
        return DTYPE_REASONS.get(site.dtype_name, f"{site.dtype_name or 'unknown'} dtype: only float32 and float16 are rewritten")
    if site.input_shape is None:
        return f"input shape unknown: {STATIC_SHAPE_HINT}"
    if len(site.input_shape) < 3:
        site.invalid = True
        return f"invalid input rank {len(site.input_shape)}: a pool needs N, C and at least one spatial axis"
    if not isinstance(site.input_shape[1], int):
        return f"channel count is dynamic: depthwise weights need a static C; {STATIC_SHAPE_HINT}"
    if site.spatial_is_dynamic():
        return extent_free_refusal(site)
    return None


def extent_free_refusal(site: PoolSite) -> Optional[str]:
    """With dynamic spatial dims, only lowerings that never look at the extent are possible:
    floor-mode pools whose padding is the conv's own zero padding."""
    auto_pad = site.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    why = None
    if site.op_type not in ("MaxPool", "AveragePool") or auto_pad not in ("NOTSET", "VALID", ""):
        why = ""
    elif site.attrs.get("ceil_mode") and attribute_support(site.op_type, site.opset)["ceil_mode_supported"]:
        why = " (ceil_mode)"
    else:
        padded = any(site.attrs.get("pads", [])) and auto_pad != "VALID"
        if padded and site.op_type == "MaxPool" and not site.input_nonnegative:
            why = " (-inf padding of a signed input)"
        elif padded and site.op_type == "AveragePool" and not site.attrs.get("count_include_pad"):
            why = " (count_include_pad=0 divisors at the borders)"
    if why is None:
        return None
    return f"dynamic spatial dims: this pool's exact lowering needs static extents{why}; {STATIC_SHAPE_HINT}"


def surrogate_spatial(site: PoolSite, variant: int = 0) -> list[int]:
    """Stand-in extents for dynamic dims; lowerings built for two of them must agree."""
    kernel = site.attrs.get("kernel_shape") or []
    dilations = site.attrs.get("dilations") or [1] * len(kernel)
    sizes = []
    for i, d in enumerate(site.input_shape[2:]):  # type: ignore[index]
        if isinstance(d, int) and d >= 0:
            sizes.append(d)
        else:
            eff = (kernel[i] - 1) * dilations[i] + 1 if i < len(kernel) else 1
            sizes.append(4 * eff + 17 + variant)
    return sizes


def attribute_support(op_type: str, opset: int) -> dict[str, bool]:
    """Which optional attributes the op's version defines (others keep defaults)."""
    if op_type == "MaxPool":
        return dict(count_include_pad_supported=False, ceil_mode_supported=opset >= 10, dilations_supported=opset >= 10)
    return dict(count_include_pad_supported=opset >= 7, ceil_mode_supported=opset >= 10, dilations_supported=opset >= 19)


def resolve_spec(site: PoolSite, kind: str) -> Optional[str]:
    """Compute ``site.spec``; return the reason when the attributes can't be lowered."""
    assert site.input_shape is not None
    spatial = surrogate_spatial(site, site.surrogate_variant)
    try:
        if site.op_type.startswith(("Global", "Reduce")):
            site.spec = global_pool_spec(kind, spatial)
        else:
            site.spec = pool_spec_from_attributes(kind, site.attrs, spatial, **attribute_support(site.op_type, site.opset))
    except InvalidPoolError as err:
        site.invalid = True
        return f"invalid attributes: {err}"
    except SpecError as err:
        return str(err)
    return None
