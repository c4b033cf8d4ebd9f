"""The pool-to-conv pass: finds pool nodes, asks each rule, splices replacements.

Two entry points share everything but the graph plumbing:

* :meth:`PoolRewritePass.run` takes an ``onnx.ModelProto`` and edits a copy at
  the protobuf level, so every node, initializer, value_info and metadata entry
  it does not replace stays byte-for-byte as it was;
* :meth:`PoolRewritePass.run_graph` edits an onnx-graphsurgeon ``Graph`` in place.

Both build their sites with :func:`rewriter.site.build_site` through a small
adapter (:class:`_ProtoIndex`, :class:`_GsIndex`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import onnx
import onnx.inliner
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from .builder import QuantizedRangeError, SubgraphBuilder
from .fit import check_added, graph_shapes, needs, subgraph_violations
from .graphs import all_graphs, functions_containing
from .lower import RULES, Rule, rule_for
from .lower.checks import STATIC_SHAPE_HINT, Lowering, PoolPlan, Refusal
from .lower.max_strategies import MaxStrategy, select_strategies
from .lower.qdq_average import ModelScalePlan
from .lower.qdq_max import qdq_strategy
from .lower.reduce_pool import ReductionPlan
from .native_pools import native_reason
from .ops import ONNX_DOMAINS, POOL_OPS, SITE_OPS, onnx_opset
from .profile import Profile
from .profiles import load_profile
from .report import KEPT, REWRITTEN, NodeResult, Report
from .selection import EXCLUDED, NOT_SELECTED, check_allow, check_selection
from .site import NodeFacts, NonNegativity, PoolSite, ProtoFacts, build_site
from .target import Target
from .tensor_types import shape_and_dtype, types_from_runtime, unresolved_pool_inputs, value_types


@dataclass
class RewriteResult:
    """A rewritten model and the report of what was done to it."""

    model: onnx.ModelProto
    report: Report


class PoolRewritePass:
    """Replace MaxPool, AveragePool, GlobalMaxPool and GlobalAveragePool nodes
    by exact subgraphs of Conv, Relu, Add and Concat.

    Args:
        only: node names or op types to rewrite; every other pool node is kept.
        exclude: node names or op types never to rewrite.
        allow: ops the target has beyond the strict Conv/Relu/Add/Concat set.
            The lowering uses Max (bit-exact pairwise max), Pad (edge
            padding), Div or Mul (average divisors) when allowed.
        strategies: the MaxPool strategies to try on each axis, in order: names
            of :data:`~rewriter.lower.max_strategies.STRATEGY_NAMES`, or strategy
            objects (``name``, ``plan``, ``build``). Default: the whole table.
        exclude_strategies: names of MaxPool strategies never to use.
        target: the accelerator's profile (:class:`~rewriter.profile.Profile`, or a
            built-in name or JSON file for :func:`~rewriter.profiles.load_profile`).
            Its ``ops`` replace the strict op set (``allow`` adds to them), and the
            pools it runs natively are kept, reason ``runs natively on <name>``.
            Every subgraph is checked against it before it is accepted; a MaxPool
            whose subgraph breaks it is rebuilt without the strategies that made the
            breaking nodes, and a pool that nothing fits is kept, its reason naming
            the limit. Nodes the pass added that still break it raise
            :class:`~rewriter.fit.FitError` (a bug) instead of being returned.
            None: today's strict rewrite of every pool.
        keep_tie_averages: keep the averages in QDQ regions whose window means can
            reach a QuantizeLinear rounding tie (onnxruntime's own two levels round
            those outputs differently), for bit-exactness against onnxruntime at
            both levels. Default: they are rewritten, and validation allows one
            step at those outputs (:mod:`rewriter.validate.ties`).

    Raises :class:`~rewriter.selection.SelectionError` (a ``ValueError``) for an
    ``allow`` name that is no ONNX op type (``"max"`` for ``"Max"``) or an unknown
    strategy name (:class:`~rewriter.profiles.ProfileError` for a ``target`` that
    cannot be loaded), and from :meth:`run` / :meth:`run_graph`, before anything is
    changed, for an ``only`` or ``exclude`` name that matches no pool node.

    A pass is a callable: ``result = PoolRewritePass()(model)``.
    """

    def __init__(
        self,
        *,
        only: Optional[Iterable[str]] = None,
        exclude: Optional[Iterable[str]] = None,
        allow: Iterable[str] = (),
        rewrite_double: bool = False,
        share_ladders: bool = True,
        strategies: Optional[Sequence[Union[str, MaxStrategy]]] = None,
        exclude_strategies: Iterable[str] = (),
        target: Union[Profile, str, None] = None,
        keep_tie_averages: bool = False,
    ) -> None:
        self.only = set(only) if only is not None else None
        self.exclude = set(exclude or ())
        self.allow = check_allow(allow)
        self.rewrite_double = rewrite_double
        self.share_ladders = share_ladders
        self.max_strategies = select_strategies(strategies, exclude_strategies)
        self.target_profile = load_profile(target) if isinstance(target, str) else target
        self.keep_tie_averages = keep_tie_averages

    def __call__(self, model: onnx.ModelProto) -> RewriteResult:
        return self.run(model)

    def lowering(self, opset: int) -> Lowering:
        """What the rules may use for a model at ``opset``."""
        target = Target.of(self.allow, opset, profile=self.target_profile, allow_double=self.rewrite_double)
        return Lowering(target, self.max_strategies, self.keep_tie_averages)

    # -- selection -------------------------------------------------------------
    def _selection_reason(self, site: PoolSite) -> Optional[str]:
        keys = {site.name, site.op_type, site.output_name} - {""}
        if self.only is not None and not keys & self.only:
            return NOT_SELECTED
        if keys & self.exclude:
            return EXCLUDED
        return native_reason(site, self.target_profile)

    def _plan(
        self, site: PoolSite, outcome: Union[PoolPlan, Refusal], lowering: Lowering, taken_prefixes: set[str]
    ) -> tuple[NodeResult, Optional[SubgraphBuilder]]:
        """Decide one node from its check's outcome (checked also when deselected: it
        resolves the attributes the table shows); return its report row and, if
        rewritten, the built subgraph."""
        result = NodeResult(name=site.name, op_type=site.op_type, output=site.output_name, status=KEPT)
        rule = rule_for(site.op_type)
        selection_reason = self._selection_reason(site)
        if site.reduction is not None:
            result.attributes = site.reduction.describe()
        else:
            result.attributes = outcome.spec.describe() if outcome.spec is not None else site.raw.describe()
        if selection_reason is not None or isinstance(outcome, Refusal):
            result.reason = selection_reason or outcome.reason  # type: ignore[union-attr]
            result.invalid = isinstance(outcome, Refusal) and outcome.invalid and selection_reason is None
            return result, None
        prefix = _fresh_prefix(site.name or site.output_name, taken_prefixes)
        try:
            fitted = self._fit(site, rule, outcome, lowering, prefix)
        except QuantizedRangeError as err:  # e.g. a legalized conv chain with a signed intermediate
            result.reason = str(err)
            return result, None
        if isinstance(fitted, str):
            result.reason = fitted
            return result, None
        outcome, builder, lowering = fitted
        too_old = lowering.target.refusal(builder.op_counts())
        if too_old:
            result.reason = too_old
            return result, None
        if site.spatial_is_dynamic():
            # Built for other stand-in extents, the subgraph must come out the same.
            for variant in (1, 2):
                again = rule.check(site, lowering, variant)
                rebuilt = None if isinstance(again, Refusal) else self._build(site, rule, again, lowering, prefix)
                if rebuilt is None or _fingerprint(rebuilt) != _fingerprint(builder):
                    result.reason = f"dynamic spatial dims: the lowering would depend on the extent; {STATIC_SHAPE_HINT}"
                    return result, None
        strategy = qdq_strategy(outcome.strategy) if builder.is_quantized else outcome.strategy
        result.status, result.became, result.strategy = REWRITTEN, builder.summary(), strategy
        result.note = outcome.caveat
        result.fitted_to = sorted(builder.fitted_to)
        _record_check_start(result, site)
        result.nodes_added = len(builder.nodes)
        result.op_counts = dict(builder.op_counts())
        return result, builder

    def _fit(
        self, site: PoolSite, rule: Rule, plan: PoolPlan, lowering: Lowering, prefix: str
    ) -> Union[str, tuple[PoolPlan, SubgraphBuilder, Lowering]]:
        """Build ``plan``; on a profile, until the subgraph fits it, rebuild without the
        MaxPool strategies whose nodes break it. A subgraph that fits only because its
        convs were laid out again (:mod:`rewriter.legalize`) may cost more than another
        strategy's, so the others are built too and the cheapest is kept (conv MACs,
        then nodes). Returns the plan, builder and lowering chosen, or the kept pool's
        reason, naming the limit the last construction tried broke."""
        best: Optional[tuple[tuple[int, int], PoolPlan, SubgraphBuilder, Lowering]] = None
        why = ""
        while True:
            spans: list[tuple[int, int, str]] = []
            traced = replace(plan, axes=tuple(_TracedChoice(c.strategy, c.plan, spans) for c in plan.axes))
            builder = self._build(site, rule, traced, lowering, prefix)
            profile = lowering.target.profile
            found = [] if profile is None else subgraph_violations(builder, lowering.target)
            index = {n.name: i for i, n in enumerate(builder.nodes)}
            if not found:
                cost = (builder.conv_macs, len(builder.nodes))
                if best is None or cost < best[0]:
                    best = (cost, plan, builder, lowering)
                # Strategies whose convs were laid out again: the others may be cheaper.
                marked = [index[name] for name in builder.fitted_nodes if name in index]
            else:
                marked = [index.get(v.node, -1) for v in found]
                why = needs(found[0], profile.name)  # type: ignore[union-attr]
            culprits = {name for start, end, name in spans if any(start <= i < end for i in marked)}
            if not culprits:
                break
            lowering = Lowering(lowering.target, tuple(s for s in lowering.max_strategies if s.name not in culprits), lowering.keep_tie_averages)
            again = rule.check(site, lowering)
            if isinstance(again, Refusal):
                break
            plan = again
        return why if best is None else best[1:]

    def _shared_groups(
        self, sites: dict[int, PoolSite], outcomes: dict[int, Union[PoolPlan, Refusal]], lowering: Lowering
    ) -> dict[int, tuple[list[int], Rule, object]]:
        """By position, the group each pool is built with (positions, rule, the rule's
        group plan): what the rules' group hooks say of their selected, checked sites."""
        if not self.share_ladders:
            return {}
        groups: dict[int, tuple[list[int], Rule, object]] = {}
        for rule in (r for r in RULES if hasattr(r, "shared_groups")):
            positions = [
                p for p, site in sites.items()
                if site.op_type in rule.op_types and not self._selection_reason(site) and isinstance(outcomes[p], PoolPlan)
            ]
            for group in rule.shared_groups([(sites[p], outcomes[p]) for p in positions], lowering):  # type: ignore[attr-defined]
                members = [positions[i] for i in group.members]
                groups.update({p: (members, rule, group) for p in members})
        return groups

    def _plan_shared(
        self, group: list[PoolSite], rule: Rule, plan: object, lowering: Lowering, taken_prefixes: set[str]
    ) -> tuple[list[NodeResult], SubgraphBuilder]:
        first = group[0]
        builder = self._new_builder(first, lowering, _fresh_prefix(first.name or first.output_name, taken_prefixes))
        x = gs.Variable(first.input_name)
        outputs = rule.rewrite_group(group, plan, builder, x)  # type: ignore[attr-defined]
        for site, (produced, _) in zip(group, outputs):
            builder.bind_output(produced, gs.Variable(site.output_name), x)
        names = ", ".join(site.display_name for site in group)
        results = []
        for i, (site, member_plan, (_, strategy)) in enumerate(zip(group, plan.plans, outputs)):  # type: ignore[attr-defined]
            strategy = qdq_strategy(strategy) if builder.is_quantized else strategy
            result = NodeResult(name=site.name, op_type=site.op_type, output=site.output_name, status=REWRITTEN, strategy=strategy)
            result.attributes = member_plan.spec.describe()
            _record_check_start(result, site)
            result.became = f"one ladder shared by {names}: {builder.summary()}" if i == 0 else f"shares the ladder of {group[0].display_name}"
            result.nodes_added = len(builder.nodes) if i == 0 else 0
            result.fitted_to = sorted(builder.fitted_to) if i == 0 else []
            result.op_counts = dict(builder.op_counts()) if i == 0 else {}
            results.append(result)
        return results, builder

    def _new_builder(self, site: PoolSite, lowering: Lowering, prefix: str, plan: Optional[PoolPlan] = None) -> SubgraphBuilder:
        # A reduction's convs may read its input reshaped (a channels-last one without a batch axis).
        shape = plan.view if isinstance(plan, ReductionPlan) else site.input_shape
        builder = SubgraphBuilder(
            prefix,
            channels=int(shape[1]),  # type: ignore[index,arg-type]
            dtype=site.dtype,  # type: ignore[arg-type]
            rank=len(shape) - 2,  # type: ignore[arg-type]
            target=lowering.target,
            conv_layout_inputs=(site.input_name,) if site.input_from_conv else (),
        )
        if not (isinstance(plan, ReductionPlan) and plan.reshape_in is not None):
            builder.know_extents(gs.Variable(site.input_name), shape[2:])  # type: ignore[index]
        if isinstance(plan, ModelScalePlan):
            builder.at_model_scale(gs.Variable(site.input_name), site.qdq)  # type: ignore[arg-type]
        elif site.qdq is not None and site.qdq.usable:  # the rules refuse the QDQ regions they cannot build so
            builder.quantized(gs.Variable(site.input_name), site.qdq.int_input, site.qdq.input, rescaled=not site.qdq.same_scales)  # type: ignore[arg-type]
        return builder

    def _build(self, site: PoolSite, rule: Rule, plan: PoolPlan, lowering: Lowering, prefix: str) -> SubgraphBuilder:
        builder = self._new_builder(site, lowering, prefix, plan)
        x = gs.Variable(site.input_name)
        builder.bind_output(rule.rewrite(site, plan, builder, x), gs.Variable(site.output_name), x)
        return builder

    # -- ModelProto ------------------------------------------------------------
    def run(
        self, model: onnx.ModelProto, progress: Optional[Callable[[str], None]] = None, *, in_place: bool = False
    ) -> RewriteResult:
        """Rewrite a copy of ``model``; the argument is not modified unless
        ``in_place`` (which saves a copy of the weights: for callers that no
        longer need the original).

        ``progress``, if given, receives a short status line every 100 pool nodes.
        Pools inside If/Loop/Scan bodies are rewritten in place; model-local
        functions that contain pools are inlined first (their bodies have no
        static shapes) and the report notes it.
        """
        original = model
        report = Report()
        inlined = functions_containing(model, POOL_OPS)
        if inlined:
            # A function body has no static shapes; each call site has. Inline those calls.
            model = onnx.inliner.inline_selected_functions(model, inlined, exclude=False)
            names = ", ".join(f"{d}.{n}" if d else n for d, n in inlined)
            report.notes.append(f"inlined model-local functions that contain pools: {names}")
        if in_place or inlined:  # an inlined model is already ours to change
            out = model
        else:
            out = onnx.ModelProto()
            out.CopyFrom(model)
        opset = onnx_opset(out.opset_import)
        lowering = self.lowering(opset)
        types = value_types(model)
        unresolved = unresolved_pool_inputs(model, types)
        if unresolved and types_from_runtime(model, unresolved, types):
            report.notes.append(
                f"shapes of {len(unresolved)} pool input(s) taken from an onnxruntime run: shape inference could not resolve them"
            )
        graphs = list(all_graphs(out.graph))
        index = _ProtoIndex(graphs, types)
        taken = _prefixes_of([n.name for g in graphs for n in g.node] + list(index.producers) + list(index.initializers))
        nonnegative = NonNegativity(index.producer, index.constant)
        graph_sites: list[tuple[onnx.GraphProto, dict[int, PoolSite]]] = []
        added: list[onnx.NodeProto] = []  # every node the pass adds, checked once more at the end
        initializers: list[onnx.TensorProto] = []  # the added nodes' weights: their shapes
        declared: dict[str, tuple] = {}  # shapes the builders declared (a native pool's input)
        for graph in graphs:  # the main graph, then every If/Loop/Scan body, nested ones included
            sites: dict[int, PoolSite] = {}
            for position, node in enumerate(graph.node):
                if node.op_type in SITE_OPS and node.domain in ONNX_DOMAINS:
                    site = build_site(_proto_node(node), opset, index, nonnegative, _is_pool)
                    if site is not None:
                        sites[position] = site
            absorbed = _absorbed(sites.values())
            sites = {p: site for p, site in sites.items() if site.output_name not in absorbed}
            graph_sites.append((graph, sites))
        check_selection(self.only, self.exclude, [site for _, sites in graph_sites for site in sites.values()])
        for graph, sites in graph_sites:
            new_nodes: list[onnx.NodeProto] = []
            new_initializers: list[onnx.TensorProto] = []
            changed = False
            outcomes = {p: rule_for(site.op_type).check(site, lowering) for p, site in sites.items()}
            shared = self._shared_groups(sites, outcomes, lowering)
            for position, node in enumerate(graph.node):
                if position not in sites:
                    new_nodes.append(node)
                    continue
                if progress and report.nodes and len(report.nodes) % 100 == 0:
                    progress(f"rewriting: {len(report.nodes)} pool nodes done")
                if position in shared:  # handled with the first pool of its group
                    members, rule, plan = shared[position]
                    if members[0] != position:
                        continue
                    results, builder = self._plan_shared([sites[p] for p in members], rule, plan, lowering, taken)
                    if not subgraph_violations(builder, lowering.target):
                        report.nodes.extend(results)
                        changed = True
                        _splice_built(builder, added, new_nodes, new_initializers, declared)
                        continue
                    for p in members:  # the shared ladder breaks the target: each pool fitted alone
                        del shared[p]
                result, built = self._plan(sites[position], outcomes[position], lowering, taken)
                report.nodes.append(result)
                if built is None:
                    new_nodes.append(node)
                    continue
                changed = True
                _splice_built(built, added, new_nodes, new_initializers, declared)
                if sites[position].reduction is not None and sites[position].reduction.absorbed:  # a chain's earlier reductions
                    gone = set(sites[position].reduction.absorbed)  # type: ignore[union-attr]
                    new_nodes[:] = [n for n in new_nodes if not (n.output and n.output[0] in gone)]
            if changed:
                del graph.node[:]
                graph.node.extend(new_nodes)
                graph.initializer.extend(new_initializers)
                initializers.extend(new_initializers)
        check_added(added, lowering.target, {**graph_shapes(initializers, types), **declared})
        if not report.rewritten and inlined:
            # Nothing was rewritten: hand back the model exactly as it came.
            out = onnx.ModelProto()
            out.CopyFrom(original)
        return RewriteResult(out, report)

    # -- onnx-graphsurgeon -------------------------------------------------------
    def run_graph(self, graph: gs.Graph, opset: Optional[int] = None) -> Report:
        """Rewrite ``graph`` and its If/Loop/Scan bodies in place. Tensor shapes must
        be known on the pool inputs (run onnx shape inference before importing)."""
        report = Report()
        opset = opset if opset is not None else int(graph.opset)
        lowering = self.lowering(opset)
        graphs = [graph, *graph.subgraphs(recursive=True)]
        index = _GsIndex.of(graphs)
        taken = _prefixes_of([n.name for g in graphs for n in g.nodes] + list(index.tensors))
        nonnegative = NonNegativity(index.producer, index.constant)
        found: list[tuple[gs.Graph, gs.Node, PoolSite]] = []
        for g, node in [(g, n) for g in graphs for n in list(g.nodes)]:
            if node.op in SITE_OPS and (node.domain or "") in ONNX_DOMAINS:
                site = build_site(_gs_node(node), opset, index, nonnegative, _is_pool)
                if site is not None:
                    found.append((g, node, site))
        absorbed = _absorbed([site for _, _, site in found])
        found = [(g, node, site) for g, node, site in found if site.output_name not in absorbed]
        check_selection(self.only, self.exclude, [site for _, _, site in found])
        for g, node, site in found:
            result, builder = self._plan(site, rule_for(site.op_type).check(site, lowering), lowering, taken)
            report.nodes.append(result)
            if builder is None:
                continue
            x = index.tensors[site.input_name]  # a reduction chain's start
            for name in site.reduction.absorbed if site.reduction is not None else ():
                earlier = index.tensors[name].inputs[0]  # a chain's earlier reduction goes with it
                earlier.inputs.clear()
                earlier.outputs.clear()
                g.nodes.remove(earlier)
            _splice_into_graph(g, node, builder, x, node.outputs[0])
        return report


def rewrite_model(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, Report]:
    """Rewrite every pool node of ``model`` that can be rewritten exactly.

    Options are those of :class:`PoolRewritePass`. Returns the new model and a
    :class:`~rewriter.report.Report`; ``model`` itself is left unchanged.

    >>> new_model, report = rewrite_model(onnx.load("in.onnx"))
    >>> print(report.table())
    """
    result = PoolRewritePass(**options).run(model)
    return result.model, result.report


# -- helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class _TracedChoice:
    """An axis's strategy choice that records which nodes its build emits, by index
    into the builder's nodes: where a violating node came from."""

    strategy: MaxStrategy
    plan: object
    spans: list  # (first node, end, strategy name), shared by the plan's axes

    def build(self, b: SubgraphBuilder, x: gs.Tensor, axis: int, a) -> gs.Tensor:
        start = len(b.nodes)
        y = self.strategy.build(b, x, axis, a, self.plan)
        self.spans.append((start, len(b.nodes), self.strategy.name))
        return y


def _fresh_prefix(base: str, taken_prefixes: set[str]) -> str:
    """A name prefix no existing name uses; generated names are ``prefix/hint_N``."""
    prefix, n = f"{base}/poolrewrite", 1
    while prefix in taken_prefixes:
        n += 1
        prefix = f"{base}/poolrewrite{n}"
    taken_prefixes.add(prefix)
    return prefix


def _absorbed(sites: Iterable[PoolSite]) -> set[str]:
    """The outputs of the earlier reductions of the sites' chains: never sites themselves."""
    return {name for site in sites if site.reduction is not None for name in site.reduction.absorbed}


def _is_pool(site: PoolSite) -> bool:
    is_pool = getattr(rule_for(site.op_type), "is_pool", None)
    return is_pool is None or is_pool(site)


def _record_check_start(result: NodeResult, site: PoolSite) -> None:
    """Where the validator must check a rewritten node (see :mod:`rewriter.check_starts`)."""
    result.checked_from = site.input_chain_start or site.input_name
    result.checked_nonnegative = site.input_nonnegative


def _splice_built(
    builder: SubgraphBuilder,
    added: list[onnx.NodeProto],
    new_nodes: list[onnx.NodeProto],
    new_initializers: list[onnx.TensorProto],
    declared: dict,
) -> None:
    """Export a built subgraph into the graph being assembled (and the list the final fit check reads)."""
    exported = [OnnxExporter.export_node(n) for n in builder.nodes]
    added.extend(exported)
    new_nodes.extend(exported)
    new_initializers.extend(OnnxExporter.export_tensor_proto(c) for c in builder.constants)
    declared.update(builder.shapes)


def _fingerprint(builder: SubgraphBuilder) -> bytes:
    nodes = b"".join(OnnxExporter.export_node(n).SerializeToString() for n in builder.nodes)
    return nodes + b"".join(OnnxExporter.export_tensor_proto(c).SerializeToString() for c in builder.constants)


def _prefixes_of(names: Iterable[str]) -> set[str]:
    return {name.rsplit("/", 1)[0] for name in names if "/" in name}


class _ProtoIndex(ProtoFacts):
    """The :class:`~rewriter.site.GraphFacts` of protobuf graphs: who produces and who
    reads each tensor, over a graph and its subgraphs, and the inferred types."""

    def __init__(self, graphs: Sequence[onnx.GraphProto], types: dict[str, onnx.TypeProto]) -> None:
        super().__init__(graphs)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for g in graphs:
            for n in g.node:
                for i in n.input:
                    self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for g in graphs for o in g.output}
        self.types = types

    def reader_ops(self, name: str) -> list[str]:
        return [n.op_type for n in self.consumers.get(name, [])]

    def readers(self, name: str) -> list[tuple[str, Sequence[str], dict, Sequence[str]]]:
        return [(n.op_type, list(n.input), _proto_attrs(n), list(n.output)) for n in self.consumers.get(name, [])]

    def is_graph_output(self, name: str) -> bool:
        return name in self.graph_outputs

    def tensor_type(self, name: str) -> tuple[Optional[tuple], Optional[np.dtype], str]:
        return shape_and_dtype(self.types.get(name))


@dataclass
class _GsIndex:
    """The :class:`~rewriter.site.GraphFacts` of onnx-graphsurgeon graphs."""

    tensors: dict[str, gs.Tensor]
    graph_outputs: set[str]

    @classmethod
    def of(cls, graphs: Sequence[gs.Graph]) -> "_GsIndex":
        tensors: dict[str, gs.Tensor] = {}
        for g in graphs:
            tensors.update(g.tensors())
        return cls(tensors, {t.name for g in graphs for t in g.outputs})

    def producer(self, name: str) -> Optional[tuple[str, Sequence[str], dict]]:
        tensor = self.tensors.get(name)
        if tensor is None or not tensor.inputs:
            return None
        node = tensor.inputs[0]
        return node.op, [t.name for t in node.inputs], dict(node.attrs)

    def constant(self, name: str) -> Optional[np.ndarray]:
        """A constant tensor's value, or a Constant node's."""
        tensor = self.tensors.get(name)
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        if tensor is not None and len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
            value = tensor.inputs[0].attrs.get("value")
            return np.asarray(value.values) if isinstance(value, gs.Constant) else None
        return None

    def reader_ops(self, name: str) -> list[str]:
        tensor = self.tensors.get(name)
        return [n.op for n in tensor.outputs] if tensor is not None else []

    def readers(self, name: str) -> list[tuple[str, Sequence[str], dict, Sequence[str]]]:
        tensor = self.tensors.get(name)
        if tensor is None:
            return []
        return [(n.op, [t.name for t in n.inputs], dict(n.attrs), [t.name for t in n.outputs]) for n in tensor.outputs]

    def is_graph_output(self, name: str) -> bool:
        return name in self.graph_outputs

    def tensor_type(self, name: str) -> tuple[Optional[tuple], Optional[np.dtype], str]:
        x = self.tensors[name]
        dtype = np.dtype(x.dtype) if x.dtype is not None and not isinstance(x.dtype, int) else None
        return (tuple(x.shape) if x.shape is not None else None), dtype, (dtype.name if dtype is not None else "")


def _proto_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _proto_node(node: onnx.NodeProto) -> NodeFacts:
    return NodeFacts(node.name, node.op_type, _proto_attrs(node), list(node.input), list(node.output))


def _gs_node(node: gs.Node) -> NodeFacts:
    return NodeFacts(node.name or "", node.op, dict(node.attrs), [t.name for t in node.inputs], [t.name for t in node.outputs])


def _splice_into_graph(graph: gs.Graph, node: gs.Node, builder: SubgraphBuilder, x: gs.Tensor, y: gs.Tensor) -> None:
    """Put the builder's nodes where ``node`` was, wired to the real tensors."""
    index = graph.nodes.index(node)
    node.inputs.clear()
    node.outputs.clear()
    name_x, name_y = x.name, y.name
    for new in builder.nodes:
        for i, t in enumerate(new.inputs):
            if isinstance(t, gs.Variable) and t.name == name_x:
                new.inputs[i] = x
        for i, t in enumerate(new.outputs):
            if t.name == name_y:
                new.outputs[i] = y
    graph.nodes[index:index + 1] = builder.nodes

