"""Refusals shared by every rule: dtype, shapes, and the spec itself."""

from __future__ import annotations

from typing import Optional

from ..site import PoolSite
from ..spec import InvalidPoolError, SpecError, global_pool_spec, pool_spec_from_attributes

SUPPORTED_DTYPES = ("float32", "float16")

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
        return "input shape unknown: give the model static shapes or run shape inference"
    if len(site.input_shape) < 3:
        site.invalid = True
        return f"invalid input rank {len(site.input_shape)}: a pool needs N, C and at least one spatial axis"
    if not isinstance(site.input_shape[1], int):
        return "channel count is dynamic: depthwise weights need a static C"
    if site.static_dims() is None:
        return "dynamic spatial dims: the exact lowering needs static extents"
    return None


def attribute_support(op_type: str, opset: int) -> dict[str, bool]:
    """Which optional attributes the op's version defines (others keep defaults)."""
    if op_type == "MaxPool":
        return dict(count_include_pad_supported=False, ceil_mode_supported=opset >= 10, dilations_supported=opset >= 10)
    return dict(count_include_pad_supported=opset >= 7, ceil_mode_supported=opset >= 10, dilations_supported=opset >= 19)


def resolve_spec(site: PoolSite, kind: str) -> Optional[str]:
    """Compute ``site.spec``; return the reason when the attributes can't be lowered."""
    dims = site.static_dims()
    assert dims is not None
    spatial = dims[1:]
    try:
        if site.op_type.startswith("Global"):
            site.spec = global_pool_spec(kind, spatial)
        else:
            site.spec = pool_spec_from_attributes(kind, site.attrs, spatial, **attribute_support(site.op_type, site.opset))
    except InvalidPoolError as err:
        site.invalid = True
        return f"invalid attributes: {err}"
    except SpecError as err:
        return str(err)
    return None
