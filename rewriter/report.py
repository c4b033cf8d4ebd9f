"""Per-node results, rendered as a text table or as JSON for pipelines."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .columns import format_columns, numbered_note

REWRITTEN = "rewritten"
KEPT = "kept"
CELL_WIDTH = 40  # longer reasons are printed in full below the table


@dataclass
class NodeResult:
    """What happened to one pool node."""

    name: str
    op_type: str
    output: str
    status: str  # "rewritten" or "kept"
    reason: Optional[str] = None  # why it was kept; None when rewritten
    attributes: str = ""  # e.g. "k3x3 s2x2 p1,1/1,1"
    became: str = ""  # e.g. "8 Conv, 4 Relu, 4 Add, 2 Concat"
    nodes_added: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    invalid: bool = False  # the node itself is invalid ONNX (the CLI exits 2)
    # Rewritten nodes: the tensor the validator checks the node from (its input, or the
    # start of the chain of "same" MaxPools it is lowered through), and whether that is >= 0.
    checked_from: str = ""
    checked_nonnegative: bool = False
    strategy: str = ""  # a rewritten max pool's strategy per axis, e.g. "nested-chain x anchored-ladder"
    # On a target: the conv limits that made the builder lay convs out again (rewriter/legalize.py).
    fitted_to: list[str] = field(default_factory=list)
    note: str = ""  # a rewritten node's caveat, e.g. a QDQ mean's sums near a rounding tie


@dataclass
class Report:
    """The outcome of a rewrite, and (when run) of its validation."""

    nodes: list[NodeResult] = field(default_factory=list)
    validation: Optional[dict[str, Any]] = None
    notes: list[str] = field(default_factory=list)  # whole-model remarks, e.g. functions inlined
    audit: Optional[dict[str, Any]] = None  # ops outside the target set: {op: {"count", "nodes"}}
    flip: Optional[dict[str, Any]] = None  # --flip-kernels: what was reversed and its validation

    @property
    def rewritten(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == REWRITTEN]

    @property
    def kept(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == KEPT]

    @property
    def invalid(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.invalid]

    def totals(self) -> dict[str, int]:
        return {
            "pool_nodes": len(self.nodes),
            "rewritten": len(self.rewritten),
            "kept": len(self.kept),
            "nodes_added": sum(n.nodes_added for n in self.nodes),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(n) for n in self.nodes],
            "totals": self.totals(),
            "notes": self.notes,
            "audit": self.audit,
            "flip": self.flip,
            "validation": self.validation,
        }

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def table(self, strategies: bool = False) -> str:
        """A fixed-width table, one row per pool node, then totals; with ``strategies``,
        a last column names each max pool's strategy per axis, and the target's limits
        that made its convs be laid out again.

        A reason or a "became" too long for its column is never cut: the cell
        says ``see [N]`` and the text follows the totals in full, as note N.
        """
        headers = ["name", "op", "attributes", "status", "became / reason", "added"] + (["strategy"] if strategies else [])
        rows, details = [], []
        for n in self.nodes:
            label = n.name or f"<-> {n.output}"
            text = n.became if n.status == REWRITTEN else (n.reason or "")
            if len(text) > CELL_WIDTH:
                details.append(numbered_note(len(details) + 1, f"{label}: {text}"))
                text = f"see [{len(details)}]"
            if n.note:  # a rewritten node's caveat, in full after the totals
                details.append(numbered_note(len(details) + 1, f"{label}: {n.note}"))
                text += f" [{len(details)}]"
            shown = n.strategy + (f" [fitted to {', '.join(n.fitted_to)}]" if n.fitted_to else "")
            rows.append([label, n.op_type, n.attributes, n.status, text, str(n.nodes_added)] + ([shown.strip()] if strategies else []))
        out = format_columns(headers, rows, right=(5,))
        t = self.totals()
        out.append(
            f"{t['pool_nodes']} pool node(s): {t['rewritten']} rewritten, {t['kept']} kept, "
            f"{t['nodes_added']} node(s) added"
        )
        out.extend(details)
        out.extend(f"note: {note}" for note in self.notes)
        return "\n".join(out)


def dumps(data: Any) -> str:
    """Strict JSON (no NaN or Infinity, which many JSON readers reject): non-finite
    numbers, such as the error of an output that failed on shape, become null."""
    return json.dumps(_finite(data), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
