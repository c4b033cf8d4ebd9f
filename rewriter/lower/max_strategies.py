"""MaxPool along one axis: an ordered table of named strategies.

Each strategy has ``plan(a, context)``, which returns a plan, or a string: the
reason it does not apply to that axis; and ``build(b, x, axis, a, plan)``. The
first strategy of the table that plans builds the axis (:func:`choose`).
The order is what the measurements with scripts/bench.py chose: the cheapest
exact lowering first (docs/lowering.md has the math and the numbers).

A pass selects or excludes strategies by name (:func:`select_strategies`); a
strategy object with the same three members may be given in place of a name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterable, Optional, Protocol, Sequence, Union

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..selection import SelectionError
from ..spec import AxisSpec
from ..target import Target
from .max_ladders import (
    anchored_ladder,
    borders_fixed,
    fixable,
    grow,
    ladder,
    ladder_steps,
    plan_anchored,
    replicate_pad,
)
from .max_nested import nested_max, plan_nested


@dataclass(frozen=True)
class AxisContext:
    """What a strategy may ask about the axis it plans, beyond the axis itself."""

    target: Target
    nonnegative: bool  # the pool's input is provably >= 0: zero padding is exact
    reach: tuple[int, int] = (0, 0)  # the input is already a max over [q - left, q + right]
    values: int = 0  # channels times the spatial extents: what border fixes are weighed against

    def zero_padding_exact(self, a: AxisSpec) -> bool:
        """Whether a conv's own zero padding gives this axis's -inf padding exactly."""
        return self.nonnegative or not (a.pad_begin or a.used_end_pad)


Plan = Any  # a strategy's own plan; a str is a refusal instead


class MaxStrategy(Protocol):
    """One way to build the max along one axis."""

    name: str

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]: ...

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor: ...


@dataclass(frozen=True)
class SingleTap:
    """Windows of one element: the input, or every stride-th element of it."""

    name: ClassVar[str] = "single-tap"

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        return True if a.kernel == 1 else "the window has more than one tap"

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        # pads < kernel means no padding; the windows are single elements.
        return x if a.stride == 1 else b.conv_along(x, axis, [1.0], stride=a.stride, hint="pick")


@dataclass(frozen=True)
class GrowFromReach:
    """A centred pool of an input that already holds the max over some reach (SPPF's
    second and third 5-tap pools): anchored steps that may shift by one more than that
    reach at once, 2 steps where 4 would be needed."""

    name: ClassVar[str] = "grow-from-reach"

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        if context.reach == (0, 0):
            return "the input is no max over a reach"
        if not a.centred:
            return "the pool is not centred (stride 1, as many outputs as inputs)"
        if context.target.can("Max"):
            return "Max is allowed: its ladder is bit-exact"
        have = context.reach
        return have, (have[0] + a.reach[0], have[1] + a.reach[1])

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        have, target = plan
        return grow(b, x, axis, a.size, have, target)


@dataclass(frozen=True)
class NestedChain:
    """The nested relu chain (max_nested.py), every conv at the output positions only,
    while it takes at most ``max_extra_convs`` convs more than the zero-padded doubling
    ladder (None: wherever it is exact). 1 was measured with scripts/bench.py."""

    name: ClassVar[str] = "nested-chain"
    max_extra_convs: Optional[int] = 1

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        if context.target.can("Max"):
            return "Max is allowed: its ladder is bit-exact"
        nested = plan_nested(a, zero_padding_exact=context.zero_padding_exact(a))
        if nested is None:
            return "no chain: the window is too long or padded on both sides"
        ladder_convs = 2 * ladder_steps(a.kernel)
        if self.max_extra_convs is not None and nested.convs() > ladder_convs + self.max_extra_convs:
            return f"{nested.convs()} convs against the ladder's {ladder_convs}"
        return nested

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        return nested_max(b, x, axis, a, plan)


@dataclass(frozen=True)
class Ladder:
    """The doubling ladder of pairwise maxes, where the convs' zero padding is exact:
    no padding touched, or an input >= 0."""

    name: ClassVar[str] = "ladder"

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        if not (a.pad_begin or a.used_end_pad):
            return (0, 0)
        if context.nonnegative:
            return (a.pad_begin, a.conv_end_pad)
        return "signed input with padding: zero padding is not -inf padding"

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        return ladder(b, x, axis, a, conv_pads=plan)


@dataclass(frozen=True)
class ProfilePaddedCopy:
    """A target with Max (or, undilated, Pad): the ladder on an edge-padded copy."""

    name: ClassVar[str] = "profile-padded-copy"

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        if context.target.can("Max") or (a.dilation == 1 and context.target.can("Pad")):
            return True
        return "neither Max nor (undilated) Pad is allowed"

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        return ladder(b, replicate_pad(b, x, axis, a), axis, a, conv_pads=(0, 0))


@dataclass(frozen=True)
class _BorderFix:
    """Convs at the output positions, exact except at the borders, then those border
    outputs recomputed on thin slices and fixed in place, from ``min_values`` values."""

    min_values: int = 1 << 18

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        # Measured on large strided pools: convs at the output positions with a thin fix
        # of the border outputs beat the anchored ladder, whose steps run at full
        # resolution (an odd-sized ResNet stem: 4.5 -> 2.6 of native); on small ones the
        # fix's dozen thin nodes cost more than they save, and with stride 1 the anchored
        # ladder wins.
        if context.values < self.min_values:
            return f"{context.values} values: border fixes pay off from {self.min_values}"
        if a.stride == 1:
            return "stride 1: the anchored ladder is faster"
        return self.plan_fix(a)

    def plan_fix(self, a: AxisSpec) -> Union[str, Plan]:
        raise NotImplementedError


@dataclass(frozen=True)
class NestedBorderFix(_BorderFix):
    """Padding on both sides: the nested chain, exact on one side and zero-padded on
    the other, then that side's border outputs fixed."""

    name: ClassVar[str] = "nested-border-fix"

    def plan_fix(self, a: AxisSpec) -> Union[str, Plan]:
        plans = []
        for side in ("end", "begin"):
            nested = plan_nested(a, zero_padding_exact=False, zero_side=side)
            if nested is not None and fixable(a, (side,)):
                plans.append((nested.convs(), side, nested))
        if not plans:
            return "no chain exact on one side, or a window touches both ends"
        _, side, nested = min(plans, key=lambda p: p[0])
        return side, nested

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        side, nested = plan
        return borders_fixed(b, x, nested_max(b, x, axis, a, nested), axis, a, (side,))


@dataclass(frozen=True)
class LadderBorderFix(_BorderFix):
    """The zero-padded ladder, then the border outputs on both sides fixed (it is exact
    except where a border window's real elements are all negative)."""

    name: ClassVar[str] = "ladder-border-fix"

    def plan_fix(self, a: AxisSpec) -> Union[str, Plan]:
        return True if fixable(a, ("begin", "end")) else "a window touches both ends"

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        zero_padded = ladder(b, x, axis, a, conv_pads=(a.pad_begin, a.conv_end_pad))
        return borders_fixed(b, x, zero_padded, axis, a, ("begin", "end"))


@dataclass(frozen=True)
class AnchoredLadder:
    """Exact -inf padding with no padded copy: windows grown outward from a tap that
    is real in every window. More steps than the doubling ladder on long kernels (6
    against 4 on 13x13), and still about 1.5x as fast: a padded copy's Concat has no
    blocked onnxruntime kernel."""

    name: ClassVar[str] = "anchored-ladder"

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        anchored = plan_anchored(a)
        return "no tap is real in every window" if anchored is None else anchored

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        return anchored_ladder(b, x, axis, a, plan)


@dataclass(frozen=True)
class PaddedCopy:
    """The ladder on a copy padded with real elements already in every window that
    holds the padded tap (a Concat of one-element selection convs and the input)."""

    name: ClassVar[str] = "padded-copy"

    def plan(self, a: AxisSpec, context: AxisContext) -> Union[str, Plan]:
        return True

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec, plan: Plan) -> gs.Tensor:
        return ladder(b, replicate_pad(b, x, axis, a), axis, a, conv_pads=(0, 0))


MAX_STRATEGIES: tuple[MaxStrategy, ...] = (
    SingleTap(),
    GrowFromReach(),
    NestedChain(),
    Ladder(),
    ProfilePaddedCopy(),
    NestedBorderFix(),
    LadderBorderFix(),
    AnchoredLadder(),
    PaddedCopy(),
)
STRATEGY_NAMES: tuple[str, ...] = tuple(s.name for s in MAX_STRATEGIES)


class NoStrategyError(ValueError):
    """No selected strategy applies to an axis; the message says why for each."""


@dataclass(frozen=True)
class AxisChoice:
    """The strategy that builds one axis, with its plan."""

    strategy: MaxStrategy
    plan: Plan

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a: AxisSpec) -> gs.Tensor:
        return self.strategy.build(b, x, axis, a, self.plan)


def choose(a: AxisSpec, context: AxisContext, strategies: Sequence[MaxStrategy] = MAX_STRATEGIES) -> AxisChoice:
    """The first strategy of ``strategies`` that plans ``a``; raises :class:`NoStrategyError`."""
    reasons = []
    for strategy in strategies:
        plan = strategy.plan(a, context)
        if not isinstance(plan, str):
            return AxisChoice(strategy, plan)
        reasons.append(f"{strategy.name}: {plan}")
    raise NoStrategyError("no selected MaxPool strategy applies (" + "; ".join(reasons) + ")")


def select_strategies(
    strategies: Optional[Sequence[Union[str, MaxStrategy]]] = None, exclude: Iterable[str] = ()
) -> tuple[MaxStrategy, ...]:
    """The strategies to try, in order: ``strategies`` (names of the table, or strategy
    objects) or the whole table, less the names in ``exclude``. Raises
    :class:`~rewriter.selection.SelectionError` for a name the table does not have."""
    by_name = {s.name: s for s in MAX_STRATEGIES}
    chosen = list(MAX_STRATEGIES) if strategies is None else [by_name.get(s, s) if isinstance(s, str) else s for s in strategies]
    exclude = list(exclude)
    unknown = [s for s in chosen if isinstance(s, str)] + [name for name in exclude if name not in by_name]
    if unknown:
        hints = [difflib.get_close_matches(name, STRATEGY_NAMES, n=1) for name in unknown]
        listed = ", ".join(f"'{n}'" + (f" (did you mean '{h[0]}'?)" if h else "") for n, h in zip(unknown, hints))
        raise SelectionError(f"unknown MaxPool strategy {listed}: the strategies are {', '.join(STRATEGY_NAMES)}")
    return tuple(s for s in chosen if s.name not in exclude)


def tuned(**fields: Any) -> tuple[MaxStrategy, ...]:
    """The table with the given tuning fields changed on every strategy that has them,
    e.g. ``tuned(max_extra_convs=None, min_values=0)``."""
    return tuple(
        replace(s, **{k: v for k, v in fields.items() if k in s.__dataclass_fields__})  # type: ignore[type-var]
        for s in MAX_STRATEGIES
    )
