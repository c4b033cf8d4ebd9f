"""What every rule shares: the outcome types of a check, and the refusals common to
every op (dtype, shapes, the spec itself).

A rule's ``check(site, lowering)`` is pure: it returns a :class:`Refusal` or a
:class:`PoolPlan`, and ``rewrite(site, plan, builder, x)`` builds that plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from ..site import PoolSite
from ..spec import InvalidPoolError, PoolSpec, SpecError, attribute_support, global_pool_spec, pool_spec_from_attributes, surrogate_spatial
from ..target import Target

# What lets a pool kept for unknown or dynamic dims be rewritten.
STATIC_SHAPE_HINT = "--overwrite-input-shape NAME:D0,D1,... (static input dims) would let it be rewritten"


@dataclass(frozen=True)
class Lowering:
    """What a check may consult besides the site: the target, and the MaxPool strategies to try."""

    target: Target
    max_strategies: Sequence[Any]  # rewriter.lower.max_strategies.MaxStrategy
    # Keep QDQ averages whose window means can reach a QuantizeLinear rounding tie
    # (rewritten by default: :mod:`rewriter.lower.qdq_average`).
    keep_tie_averages: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why a node is kept. ``invalid``: the node is invalid ONNX, not merely
    unsupported. ``spec``: the attributes, when they were resolved before the refusal."""

    reason: str
    invalid: bool = False
    spec: Optional[PoolSpec] = None


@dataclass(frozen=True)
class PoolPlan:
    """What a rule will build: the resolved spec and, for max pools, each axis's strategy."""

    spec: PoolSpec
    axes: tuple[Any, ...] = ()  # rewriter.lower.max_strategies.AxisChoice per spatial axis

    @property
    def strategy(self) -> str:
        """E.g. ``nested-chain x anchored-ladder``; empty for pools with no strategy choice."""
        return " x ".join(choice.strategy.name for choice in self.axes)

    @property
    def caveat(self) -> str:
        """What the report's ``note`` says of a rewrite the plan cannot prove exact ("": none)."""
        return ""



def refuse_site(site: PoolSite, target: Target, extents_matter: bool = True) -> Optional[Refusal]:
    """Why this node cannot be lowered whatever its op, or None. ``extents_matter`` False:
    for a lowering that never looks at the spatial extents, dynamic ones are no refusal."""
    why = target.dtype_refusal(site.dtype_name)
    if why:
        return Refusal(why)
    if site.input_shape is None:
        return Refusal(f"input shape unknown: {STATIC_SHAPE_HINT}")
    if len(site.input_shape) < 3:
        return Refusal(f"invalid input rank {len(site.input_shape)}: a pool needs N, C and at least one spatial axis", invalid=True)
    if not isinstance(site.input_shape[1], int):
        return Refusal(f"channel count is dynamic: depthwise weights need a static C; {STATIC_SHAPE_HINT}")
    if site.spatial_is_dynamic() and extents_matter:
        why = extent_free_refusal(site)
        return Refusal(why) if why else None
    return None


def extent_free_refusal(site: PoolSite) -> Optional[str]:
    """With dynamic spatial dims, only lowerings that never look at the extent are possible:
    floor-mode pools whose padding is the conv's own zero padding."""
    why = site.raw.extent_dependence(site.input_nonnegative)
    if why is None:
        return None
    return f"dynamic spatial dims: this pool's exact lowering needs static extents{why}; {STATIC_SHAPE_HINT}"


def resolve_spec(site: PoolSite, kind: str, variant: int = 0) -> Union[PoolSpec, Refusal]:
    """The node's spec (``variant`` picks the stand-in extents of dynamic dims), or the
    refusal when its attributes can't be lowered."""
    assert site.input_shape is not None
    spatial = surrogate_spatial(site.raw, site.input_shape[2:], variant)
    try:
        if site.op_type.startswith(("Global", "Reduce")):
            return global_pool_spec(kind, spatial)
        return pool_spec_from_attributes(kind, site.attrs, spatial, **attribute_support(site.op_type, site.opset))
    except InvalidPoolError as err:
        return Refusal(f"invalid attributes: {err}", invalid=True)
    except SpecError as err:
        return Refusal(str(err))


def checked_spec(site: PoolSite, kind: str, lowering: Lowering, variant: int = 0, extents_matter: bool = True) -> Union[PoolSpec, Refusal]:
    """:func:`refuse_site`, then :func:`resolve_spec`."""
    return refuse_site(site, lowering.target, extents_matter) or resolve_spec(site, kind, variant)
