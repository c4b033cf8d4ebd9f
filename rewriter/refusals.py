"""Exact or refused: what a failed validation refuses, and a rewrite that keeps those nodes.

The pass proves most rewrites exact. A QDQ mean at the model's scales whose window
sums can come within float32 rounding of a QuantizeLinear tie is not proven: its row
carries a ``note``, and onnxruntime's own levels may round such a sum either way
(:mod:`rewriter.lower.qdq_average`). Validation allows one step at those outputs and
what it causes downstream (:mod:`rewriter.validate.ties`; not with
``keep_tie_averages``). When a validation still fails only on such rewrites,
they are refused: kept, with the failure as their reason, and the rest is rewritten
again. Any other failure is a bug, and refuses nothing.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import onnx

from .report import Report

REFUSED_NOTE = "validation refused the rewrite of {names}: kept, the rest validated again"


def validation_refusals(validation: Any, report: Report) -> dict[str, str]:
    """The rewritten nodes ``validation`` (a failed :class:`~rewriter.validate.ValidationResult`)
    refuses, by output name, with their reasons: only rewrites the pass did not prove
    exact, and only when every failure is theirs (a node check, or with none failing an
    output compared exactly)."""
    rewritten = {n.output: n for n in report.rewritten}
    failed = [n for n in validation.failed_nodes if n.output in rewritten]
    if any(not rewritten[n.output].note for n in failed) or len(failed) != len(validation.failed_nodes):
        return {}
    refused = {}
    for node in failed:
        where = f" at {node.level}" if len(node.levels) > 1 else ""
        detail = node.note or f"max abs error {node.max_abs_error:.3g}"
        refused[node.output] = (f"validation: its rewrite differs from the original{where} on {node.worst_suite} "
                                f"({detail}); {rewritten[node.output].note}")
    if not failed:
        refused = {n.output: f"validation: an output compared exactly differs, and {n.note}" for n in rewritten.values() if n.note}
    return refused


def mark_refused(report: Report, refused: Mapping[str, str]) -> None:
    """Give the refused nodes of a rewrite that excluded them their reasons, and say so in the notes."""
    for node in report.nodes:
        if node.output in refused:
            node.reason = refused[node.output]
    names = ", ".join(n.name or n.output for n in report.nodes if n.output in refused)
    report.notes.append(REFUSED_NOTE.format(names=names))


def rewrite_validated(model: onnx.ModelProto, *, validation: Optional[Mapping[str, Any]] = None, **options: Any) -> tuple[onnx.ModelProto, Report, Any]:
    """:func:`~rewriter.rewrite_model`, then :func:`~rewriter.validate.validate_models`; a
    rewrite that validation refuses (:func:`validation_refusals`) is kept and the rest
    rewritten and validated again, once. ``validation``: keyword arguments of
    ``validate_models``; ``options``: those of :class:`~rewriter.PoolRewritePass`.
    Returns the model, its report (``validation`` filled in) and the last validation."""
    from .passes import rewrite_model
    from .validate import validate_models

    # Averages kept at ties: the rest is validated bit for bit, ties included.
    validation = {"allow_ties": not options.get("keep_tie_averages", False), **dict(validation or {})}
    written, report = rewrite_model(model, **options)
    result = validate_models(model, written, **validation)
    refused = {} if result.passed else validation_refusals(result, report)
    if refused:
        written, again = rewrite_model(model, **{**options, "exclude": list(options.get("exclude") or []) + list(refused)})
        again.notes = list(report.notes)
        mark_refused(again, refused)
        report = again
        result = validate_models(model, written, **validation)
    report.validation = result.to_dict()
    return written, report, result
