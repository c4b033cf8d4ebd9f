"""Checking nodes against a target profile: what ``--target`` promises.

:func:`node_violations` reads one ONNX node's attributes (a Conv's kernel from
its weight, auto_pad resolved) and asks :mod:`rewriter.profile`'s rules. The
pass checks every subgraph a rule built before accepting it
(:func:`subgraph_violations`), checks all the nodes it added once more before
handing the model back (:func:`check_added`), and ``--audit`` lists every node
of a model outside the target (:func:`audit_violations`).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Optional, Sequence

import onnx
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from .builder import SubgraphBuilder
from .graphs import all_graphs
from .native_pools import node_native_refusal
from .ops import ONNX_DOMAINS
from .profile import Violation, concat_violations, conv_violations
from .target import QDQ_OPS, Target
from .tensor_types import value_types

Shapes = Mapping[str, Sequence[Optional[int]]]


class FitError(RuntimeError):
    """Nodes the rewrite added break the target: a bug of the fitting, never written."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = list(violations)
        shown = "; ".join(str(v) for v in self.violations[:3])
        more = f" (and {len(self.violations) - 3} more)" if len(self.violations) > 3 else ""
        super().__init__(f"added nodes outside the target: {shown}{more}")


def node_violations(node: onnx.NodeProto, target: Target, shapes: Shapes) -> list[Violation]:
    """Every rule of ``target`` that ``node`` breaks; ``shapes`` gives the known tensor
    shapes (a Conv's weight at least; a missing one skips the rules that need it)."""
    op = node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}.{node.op_type}"
    found = []
    profile = target.profile
    native = profile.pools.get(op) if profile is not None and node.domain in ONNX_DOMAINS else None
    if native is not None:  # a pool op the target runs within its native limits
        spatial = list(shapes.get(node.input[0], ()))[2:]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # A measured cost rule is no violation: the target runs the pool (rewriting it is
        # the pass's choice; the lowering never emits it, Target.native_pool_refusal).
        why = node_native_refusal(op, attrs, spatial, native, cost_rules=False)
        if why is not None:
            found.append(Violation(node.name, op, f"pools.{op}", why, "what it runs natively"))
    elif op not in target.ops and not (op in QDQ_OPS and node.domain in ONNX_DOMAINS):  # Q/DQ: only quantized builders emit them
        found.append(Violation(node.name, op, "ops", op, str(sorted(target.ops))))
    if profile is None or node.domain not in ONNX_DOMAINS:
        return found
    if op == "Conv":
        conv = conv_attributes(node, shapes)
        if conv is not None:
            found.extend(conv_violations(*conv, limits=profile.conv, node=node.name))
    elif op == "Concat":
        rank = next((len(shapes[i]) for i in node.input if i in shapes), 0)
        axis = onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "axis"))
        found.extend(concat_violations(axis, rank, profile.concat_axes, node.name))
    return found


def conv_attributes(node: onnx.NodeProto, shapes: Shapes) -> Optional[tuple[list[int], list[int], list[int], list[int], bool]]:
    """A Conv's (kernel, strides, dilations, pads, depthwise), pads begins then ends and
    auto_pad resolved; None when its weight's shape is unknown. Depthwise: group = C,
    that is one input channel per group (``C = group * W.shape[1]``)."""
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None or any(not isinstance(d, int) for d in weight):
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kernel = [int(k) for k in weight[2:]]
    rank = len(kernel)
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    pads = list(attrs.get("pads", [0] * (2 * rank)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        pads = [0] * (2 * rank)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        spatial = list(shapes.get(node.input[0], ()))[2:]
        if len(spatial) == rank and all(isinstance(d, int) for d in spatial):
            pads = _same_pads(spatial, kernel, strides, dilations, upper=auto_pad == "SAME_UPPER")
    return kernel, strides, dilations, pads, int(weight[1]) == 1


def _same_pads(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], upper: bool) -> list[int]:
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def subgraph_violations(builder: SubgraphBuilder, target: Target) -> list[Violation]:
    """What the nodes a rule built break, before the subgraph is accepted."""
    nodes = [OnnxExporter.export_node(n) for n in builder.nodes]
    activation = (None, builder.channels) + (None,) * builder.rank
    shapes: dict[str, Sequence[Optional[int]]] = {c.name: tuple(c.shape) for c in builder.constants}
    shapes.update(builder.shapes)
    for node in nodes:
        for name in list(node.input) + list(node.output):
            shapes.setdefault(name, activation)
    return [v for node in nodes for v in node_violations(node, target, shapes)]


def graph_shapes(initializers: Iterable[onnx.TensorProto], types: Mapping[str, onnx.TypeProto]) -> dict[str, tuple]:
    """Tensor shapes from initializers' dims (no weights read) and inferred types."""
    shapes: dict[str, tuple] = {}
    for name, t in types.items():
        if t.HasField("tensor_type") and t.tensor_type.HasField("shape"):
            shapes[name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)
    shapes.update({t.name: tuple(t.dims) for t in initializers})
    return shapes


def check_added(nodes: Iterable[onnx.NodeProto], target: Target, shapes: Shapes) -> None:
    """The last check of every node the rewrite added; raises :class:`FitError`."""
    if target.profile is None:
        return
    found = [v for node in nodes for v in node_violations(node, target, shapes)]
    if found:
        raise FitError(found)


def audit_violations(model: onnx.ModelProto, target: Target) -> list[dict[str, str]]:
    """``--audit`` with a target: every node of ``model`` (main graph and subgraphs)
    outside it, one row per broken rule: node, op_type, rule, value, limit."""
    graphs = list(all_graphs(model.graph))
    shapes = graph_shapes([t for g in graphs for t in g.initializer], value_types(model))
    return [
        {"node": v.node, "op_type": v.op_type, "rule": v.rule, "value": v.value, "limit": v.limit}
        for g in graphs
        for node in g.node
        for v in node_violations(node, target, shapes)
    ]


def audit_violations_table(rows: Sequence[dict[str, str]], target_name: str) -> str:
    """The printed form of :func:`audit_violations`."""
    if not rows:
        return f"target audit: every node fits {target_name}"
    lines = [f"target audit: {len(rows)} rule(s) broken on {target_name}:"]
    lines += [f"  {r['node'] or '<unnamed>'} ({r['op_type']}): {r['rule']} {r['value']}, limit {r['limit']}" for r in rows]
    return "\n".join(lines)


def needs(violation: Violation, target_name: str) -> str:
    """A kept pool's reason, naming the limit: ``needs a kernel of 160 > 31 on rknn (conv.kernel)``."""
    limit = re.fullmatch(r"\[(-?\d+), (-?\d+)\]", violation.limit)
    if limit and re.fullmatch(r"-?\d+", violation.value):
        what = violation.rule.split(".")[-1].replace("_", " ")
        value, lo, hi = int(violation.value), int(limit[1]), int(limit[2])
        bound = f"> {hi}" if value > hi else f"< {lo}"
        return f"needs a {what} of {value} {bound} on {target_name} ({violation.rule})"
    if violation.rule == "ops":
        return f"needs {violation.value}, an op not run on {target_name} (ops)"
    return f"needs {violation.value}, where {target_name} allows {violation.limit} ({violation.rule})"
