"""What the caller asked for, checked: ``only``/``exclude`` names and ``allow`` ops.

A typo in a pipeline's options must be an error, not a silent no-op: a name
that matches no pool node, or an allowed op that is no op at all, raises
:class:`SelectionError` (the CLI turns it into exit 2) with one line saying
what exists.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import AbstractSet, Iterable, Optional, Sequence

import onnx

from .builder import PROFILE_OPS, STRICT_OPS
from .site import PoolSite

NOT_SELECTED = "not selected by --only"
NATIVE = "runs natively on "  # + the profile's name: the target runs the pool itself
EXCLUDED = "excluded by --exclude"
_LISTED_NAMES = 12  # an error line names this many pool nodes at most


class SelectionError(ValueError):
    """An ``only``/``exclude`` name that matches no pool node, or an unknown ``allow`` op."""


def kept_by_request(reason: Optional[str]) -> bool:
    """Whether a node was kept because ``only``/``exclude`` asked for it or the ``--target``
    runs it natively (not because it can't be rewritten)."""
    return reason in (NOT_SELECTED, EXCLUDED) or (reason or "").startswith(NATIVE)


@lru_cache(maxsize=1)
def onnx_op_types() -> frozenset[str]:
    """Every op type onnx defines, in any domain and version."""
    return frozenset(schema.name for schema in onnx.defs.get_all_schemas_with_history())


def check_allow(allow: Iterable[str]) -> frozenset[str]:
    """The allowed ops as a set; raises :class:`SelectionError` for a name that is no ONNX op.

    The lowering uses only :data:`~rewriter.builder.PROFILE_OPS`; any other ONNX op
    type may be listed for the audit (ops the target has anyway). Op types are
    case-sensitive, so ``max`` is refused with a suggestion of ``Max``.
    """
    allowed = frozenset(allow)
    known = onnx_op_types() | PROFILE_OPS | STRICT_OPS
    unknown = sorted(allowed - known)
    if unknown:
        hints = [suggestion(op, known) for op in unknown]
        listed = ", ".join(f"'{op}'" + (f" (did you mean '{hint}'?)" if hint else "") for op, hint in zip(unknown, hints))
        raise SelectionError(
            f"--allow: unknown op {listed}: op types are case-sensitive ONNX names; the lowering can use "
            f"{', '.join(sorted(PROFILE_OPS))} (other ONNX op types only inform the audit)"
        )
    return allowed


def check_selection(only: Optional[AbstractSet[str]], exclude: AbstractSet[str], sites: Sequence[PoolSite]) -> None:
    """Raise :class:`SelectionError` when a name in ``only`` or ``exclude`` matches no pool
    node of ``sites`` by node name, output tensor name or op type."""
    keys = {key for site in sites for key in (site.name, site.output_name, site.op_type) if key}
    problems = []
    for option, names in (("--only", only or set()), ("--exclude", exclude)):
        missing = sorted(set(names) - keys)
        if missing:
            hints = [suggestion(name, keys) for name in missing]
            problems.append(
                f"{option} " + ", ".join(f"'{n}'" + (f" (did you mean '{h}'?)" if h else "") for n, h in zip(missing, hints))
            )
    if problems:
        raise SelectionError(f"{'; '.join(problems)}: no pool node has that name, output or op type; {_what_exists(sites)}")


def _what_exists(sites: Sequence[PoolSite]) -> str:
    if not sites:
        return "the model has no pool nodes"
    op_types = sorted({site.op_type for site in sites})
    names = [site.name or site.output_name for site in sites]
    shown = ", ".join(names[:_LISTED_NAMES]) + (f", ... ({len(names) - _LISTED_NAMES} more)" if len(names) > _LISTED_NAMES else "")
    return f"pool op types: {', '.join(op_types)}; pool nodes: {shown}"


def suggestion(name: str, known: Iterable[str]) -> Optional[str]:
    """A known name equal up to case, else the closest one, else None."""
    known = sorted(known)
    for candidate in known:
        if candidate.lower() == name.lower():
            return candidate
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return close[0] if close else None
