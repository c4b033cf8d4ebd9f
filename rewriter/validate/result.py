"""What a validation found: every output comparison and node check, with the
summary line, the per-output table and the JSON report's section."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..columns import format_columns
from .comparator import OutputComparison
from .localize import NodeCheck
from .runners import ORT_OPTIMIZATION


@dataclass
class ValidationResult:
    """The verdict, with every output comparison and node check behind it."""

    passed: bool
    comparisons: list[OutputComparison] = field(default_factory=list)
    nodes: list[NodeCheck] = field(default_factory=list)
    tolerance: dict[str, Any] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The onnxruntime graph-optimization levels the candidate ran at (a quantized model: both).
    levels: list[str] = field(default_factory=lambda: [ORT_OPTIMIZATION])
    exact_outputs: list[str] = field(default_factory=list)  # quantized: graph outputs compared exactly
    exact_reference: Optional[str] = None  # what they were compared with
    # One line each, said to the user whatever the verdict (the original disagreeing with itself, ...).
    warnings: list[str] = field(default_factory=list)

    @property
    def worst(self) -> Optional[OutputComparison]:
        """The comparison closest to (or furthest past) what it is allowed."""
        if not self.comparisons:
            return None
        return max(self.comparisons, key=lambda c: (not c.passed, _margin(c), c.rel_error))

    @property
    def failed_nodes(self) -> list[NodeCheck]:
        return [n for n in self.nodes if n.passed is False]

    @property
    def unchecked_nodes(self) -> list[NodeCheck]:
        """Nodes that could not be cut out and compared alone (see :class:`NodeCheck`)."""
        return [n for n in self.nodes if n.passed is None]

    def per_output(self) -> list[dict[str, Any]]:
        """For each graph output, its worst suite: the candidate's error, the noise
        floor there, their ratio, what was allowed, and the verdict."""
        worst: dict[str, OutputComparison] = {}
        for c in self.comparisons:
            if c.output.startswith("<"):
                continue
            if c.output not in worst or (not c.passed, _margin(c)) > (not worst[c.output].passed, _margin(worst[c.output])):
                worst[c.output] = c
        return [
            {
                "output": c.output, "suite": c.suite, "error": c.max_abs_error, "rel_error": c.rel_error,
                "noise_floor": c.noise_floor, "pool_noise_floor": c.pool_noise, "ratio": c.noise_ratio, "allowed": c.allowed,
                "passed": c.passed, "level": c.level, "exact": c.exact,
                "tie_effect": c.tie_effect, "level_disagreement": c.level_disagreement,
            }
            for c in worst.values()
        ]

    def output_table(self, limit: int = 12) -> str:
        """One row per graph output (its worst suite): error, noise floor, ratio, verdict."""
        rows = [
            [
                r["output"], r["suite"], f"{r['error']:.3g}",
                "-" if r["noise_floor"] is None else f"{r['noise_floor']:.3g}",
                "-" if r["ratio"] is None else f"{r['ratio']:.2g}x" if np.isfinite(r["ratio"]) else "inf", _allowed(r), "ok" if r["passed"] else "FAIL",
            ]
            for r in self.per_output()
        ]
        headers = ["output", "worst suite", "max abs error", "noise floor", "ratio", "allowed", "verdict"]
        shown = sorted(rows, key=lambda r: r[-1] != "FAIL")[:limit]
        lines = format_columns(headers, shown, right=(2, 3, 4, 5))
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more output(s) (see --report)")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the verdict, the worst output, and the failing (or unchecked) nodes."""
        w = self.worst
        if w is None:
            return "validation: nothing compared"
        verdict = "passed" if self.passed else "FAILED"
        failed = self.failed_nodes
        if not self.passed and not w.passed and not failed and not w.note:
            return f"validation FAILED: {_drift(w, self.nodes)}{_unchecked(self.unchecked_nodes)}"
        detail = w.note or f"max abs error {w.max_abs_error:.3g}, {w.rel_error:.3g} of max |reference|, {w.ulp_error:.3g} ulp"
        if not w.note and w.noise_floor:
            detail += f", {w.noise_ratio:.2g}x the network's own rounding noise ({w.noise_floor:.3g})"
        if w.exact and w.max_abs_error:
            detail += f", by up to {w.max_abs_error:.3g}"
        level = f" at {w.level}" if len(self.levels) > 1 else ""
        text = f"validation {verdict}: worst output '{w.output}' on {w.suite} inputs{level}: {detail}"
        if failed:
            shown = ", ".join(f"'{n.name or n.output}' ({n.op_type}, {n.note or f'{n.rel_error:.3g} of max |reference|'})" for n in failed[:3])
            more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
            text += f"; failing node(s): {shown}{more}"
        elif not self.passed:
            text += _unchecked(self.unchecked_nodes)
        if self.exact_reference:
            exact = ", ".join(f"'{n}'" for n in self.exact_outputs[:3]) + (f" and {len(self.exact_outputs) - 3} more" if len(self.exact_outputs) > 3 else "")
            text += f"; quantized: ran at {' and '.join(self.levels)}, " + (f"{exact} compared exactly" if exact else "no output compared exactly")
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON report's ``validation`` section."""
        w = self.worst
        return {
            "passed": self.passed,
            "ort_graph_optimization": ORT_OPTIMIZATION,
            "levels": self.levels,
            "exact_outputs": self.exact_outputs,
            "exact_reference": self.exact_reference,
            "tolerance": self.tolerance,
            "suites": self.suites,
            "worst": asdict(w) if w else None,
            "outputs": self.per_output(),
            "comparisons": [asdict(c) for c in self.comparisons],
            "nodes": [{k: v for k, v in asdict(n).items() if k != "errors_by_run"} for n in self.nodes],
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


def _allowed(row: dict[str, Any]) -> str:
    """The table's ``allowed``: ``exact``, or for an exact output that differs only by
    quantized averages at ties, what those may move it by (rewriter.validate.ties)."""
    if row["exact"] and row["passed"] and row["error"] and row["tie_effect"]:
        return f"ties {row['allowed']:.3g}"
    return "exact" if row["exact"] else f"{row['allowed']:.3g}"


def _margin(c: OutputComparison) -> float:
    """Error over what is allowed: above 1 fails."""
    if c.max_abs_error == 0:
        return 0.0
    return c.max_abs_error / c.allowed if c.allowed > 0 else float("inf")


def _drift(w: OutputComparison, nodes: Sequence["NodeCheck"]) -> str:
    """Why outputs failed when no node did: how far past the network's own noise."""
    checked = [n for n in nodes if n.passed is not None]
    lead = "every node matches; " if checked and len(checked) == len(nodes) else f"{len(checked)} node(s) checked alone match; " if checked else ""
    where = f"output '{w.output}' on {w.suite} inputs: max abs error {w.max_abs_error:.3g} ({w.rel_error:.3g} of max |reference|)"
    if w.noise_floor:
        return (
            f"{lead}the outputs drift {w.noise_ratio:.3g}x beyond the network's own rounding noise: {where}, "
            f"noise floor {w.noise_floor:.3g}, allowed {w.allowed:.3g}"
        )
    if w.noise_floor == 0:
        return f"{lead}{where} exceeds the tolerance {w.allowed:.3g}; the original shows no rounding noise there"
    return f"{lead}{where} exceeds the tolerance {w.allowed:.3g}"


def _unchecked(nodes: list[NodeCheck]) -> str:
    if not nodes:
        return ""
    shown = ", ".join(f"'{n.name or n.output}' ({n.note})" for n in nodes[:3])
    more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
    return f"; node(s) that could not be checked alone: {shown}{more}"

