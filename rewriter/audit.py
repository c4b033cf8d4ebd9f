"""Op audit: which op types of a model fall outside the target's op set.

A deployment engineer sees in one place what else the accelerator lacks,
whether or not anything was rewritten.
"""

from __future__ import annotations

from typing import Iterable

import onnx

from .builder import STRICT_OPS
from .ops import ONNX_DOMAINS


def audit_ops(model: onnx.ModelProto, allowed: Iterable[str] = ()) -> dict[str, dict]:
    """``{op_type: {"count": n, "nodes": [names]}}`` for every op outside
    ``STRICT_OPS | allowed``, over the main graph, subgraphs and local functions.
    Ops of other domains are keyed ``domain.op_type``."""
    target = STRICT_OPS | set(allowed)
    found: dict[str, dict] = {}

    def visit(nodes: Iterable[onnx.NodeProto], where: str) -> None:
        for node in nodes:
            key = node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}.{node.op_type}"
            if key not in target:
                entry = found.setdefault(key, {"count": 0, "nodes": []})
                entry["count"] += 1
                entry["nodes"].append(where + (node.name or node.output[0] if node.output else node.name))
            for attr in node.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                    visit(sub.node, f"{where}{node.name or node.op_type}/{attr.name}/")

    visit(model.graph.node, "")
    for function in model.functions:
        visit(function.node, f"function {function.domain}.{function.name}/")
    return dict(sorted(found.items()))


def audit_table(audit: dict[str, dict], allowed: Iterable[str] = ()) -> str:
    target = ", ".join(sorted(STRICT_OPS | set(allowed)))
    if not audit:
        return f"op audit: every op is in the target set ({target})"
    lines = [f"op audit: ops outside the target set ({target}):"]
    for op, entry in audit.items():
        names = ", ".join(entry["nodes"][:5]) + (f", ... ({entry['count'] - 5} more)" if entry["count"] > 5 else "")
        lines.append(f"  {op:<20} {entry['count']:>4}  {names}")
    return "\n".join(lines)
