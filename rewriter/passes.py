"""The pool-to-conv pass: finds pool nodes, asks each rule, splices replacements.

Two entry points share everything but the graph plumbing:

* :meth:`PoolRewritePass.run` takes an ``onnx.ModelProto`` and edits a copy at
  the protobuf level, so every node, initializer, value_info and metadata entry
  it does not replace stays byte-for-byte as it was;
* :meth:`PoolRewritePass.run_graph` edits an onnx-graphsurgeon ``Graph`` in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import onnx
import onnx.inliner
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from .builder import SubgraphBuilder
from .graphs import all_graphs, functions_containing
from .wire import tensor_value
from .lower import max_pool, rule_for
from .lower.checks import STATIC_SHAPE_HINT
from .ops import ONNX_DOMAINS, POOL_OPS, SITE_OPS, onnx_opset
from .report import KEPT, REWRITTEN, NodeResult, Report
from .selection import EXCLUDED, NOT_SELECTED, check_allow, check_selection
from .site import NonNegativity, PoolSite, comes_out_of_conv, max_window_reach, max_window_source
from .tensor_types import shape_and_dtype, types_from_runtime, unresolved_pool_inputs, value_types

# The first opset version at which onnxruntime implements each op we may emit.
ORT_FIRST_VERSION = {"Conv": 1, "Pad": 2, "Concat": 4, "Relu": 6, "Max": 6, "Add": 7, "Mul": 7, "Div": 7}


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

    Raises :class:`~rewriter.selection.SelectionError` (a ``ValueError``) for an
    ``allow`` name that is no ONNX op type (``"max"`` for ``"Max"``), and from
    :meth:`run` / :meth:`run_graph`, before anything is changed, for an ``only``
    or ``exclude`` name that matches no pool node.

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
    ) -> None:
        self.only = set(only) if only is not None else None
        self.exclude = set(exclude or ())
        self.allow = check_allow(allow)
        self.rewrite_double = rewrite_double
        self.share_ladders = share_ladders

    def __call__(self, model: onnx.ModelProto) -> RewriteResult:
        return self.run(model)

    # -- selection -------------------------------------------------------------
    def _selection_reason(self, site: PoolSite) -> Optional[str]:
        keys = {site.name, site.op_type, site.output_name} - {""}
        if self.only is not None and not keys & self.only:
            return NOT_SELECTED
        if keys & self.exclude:
            return EXCLUDED
        return None

    def _plan(self, site: PoolSite, taken_prefixes: set[str]) -> tuple[NodeResult, Optional[SubgraphBuilder]]:
        """Decide one node; return its report row and, if rewritten, the built subgraph."""
        result = NodeResult(name=site.name, op_type=site.op_type, output=site.output_name, status=KEPT)
        rule = rule_for(site.op_type)
        selection_reason = self._selection_reason(site)
        check_reason = rule.check(site)  # also for a deselected node: it resolves the attributes the table shows
        reason = selection_reason or check_reason
        result.attributes = site.spec.describe() if site.spec is not None else _raw_attributes(site.op_type, site.attrs)
        if reason is not None:
            result.reason, result.invalid = reason, site.invalid and selection_reason is None
            return result, None
        assert site.dtype is not None and site.input_shape is not None
        prefix = _fresh_prefix(site.name or site.output_name, taken_prefixes)
        builder = self._build(site, rule, prefix)
        too_old = sorted(op for op in builder.op_counts() if site.opset < ORT_FIRST_VERSION.get(op, 1))
        if too_old:
            result.reason = (
                f"opset {site.opset}: onnxruntime has no kernel for {', '.join(too_old)} at this version, "
                "so the rewrite could not be validated (convert the model to opset 7 or later)"
            )
            return result, None
        if site.spatial_is_dynamic():
            # Built for other stand-in extents, the subgraph must come out the same.
            for variant in (1, 2):
                site.surrogate_variant = variant
                again = None if rule.check(site) else self._build(site, rule, prefix)
                if again is None or _fingerprint(again) != _fingerprint(builder):
                    result.reason = f"dynamic spatial dims: the lowering would depend on the extent; {STATIC_SHAPE_HINT}"
                    return result, None
        result.status, result.became = REWRITTEN, builder.summary()
        _record_check_start(result, site)
        result.nodes_added = len(builder.nodes)
        result.op_counts = dict(builder.op_counts())
        return result, builder

    def _shared_groups(self, sites: dict[int, PoolSite]) -> dict[int, list[int]]:
        """Positions of MaxPools that will share one ladder, by position: pools on the
        same input whose checks pass and whose shape allows it (SPP's 5/9/13)."""
        if not self.share_ladders:
            return {}
        by_input: dict[tuple, list[int]] = {}
        for position, site in sites.items():
            if site.op_type == "MaxPool" and not site.spatial_is_dynamic() and site.opset >= 7:
                by_input.setdefault((site.input_name, site.dtype_name), []).append(position)
        groups = {}
        for candidates in by_input.values():
            if len(candidates) < 2:
                continue  # a lone pool is checked once, by _plan
            group = [
                p for p in candidates
                if not self._selection_reason(sites[p]) and rule_for("MaxPool").check(sites[p]) is None
                and max_pool.shareable(sites[p].spec)  # type: ignore[arg-type]
            ]
            if len(group) > 1:
                groups.update({p: group for p in group})
        return groups

    def _plan_shared(self, group: list[PoolSite], taken_prefixes: set[str]) -> tuple[list[NodeResult], SubgraphBuilder]:
        first = group[0]
        builder = self._new_builder(first, _fresh_prefix(first.name or first.output_name, taken_prefixes))
        x = gs.Variable(first.input_name)
        specs = [site.spec for site in group]
        outputs = max_pool.lower_shared_max_pools(builder, x, specs, input_nonnegative=first.input_nonnegative)  # type: ignore[arg-type]
        for site, produced in zip(group, outputs):
            builder.bind_output(produced, gs.Variable(site.output_name), x)
        names = ", ".join(site.display_name for site in group)
        results = []
        for i, site in enumerate(group):
            result = NodeResult(name=site.name, op_type=site.op_type, output=site.output_name, status=REWRITTEN)
            result.attributes = site.spec.describe()  # type: ignore[union-attr]
            _record_check_start(result, site)
            result.became = f"one ladder shared by {names}: {builder.summary()}" if i == 0 else f"shares the ladder of {group[0].display_name}"
            result.nodes_added = len(builder.nodes) if i == 0 else 0
            result.op_counts = dict(builder.op_counts()) if i == 0 else {}
            results.append(result)
        return results, builder

    def _new_builder(self, site: PoolSite, prefix: str) -> SubgraphBuilder:
        return SubgraphBuilder(
            prefix,
            channels=int(site.input_shape[1]),  # type: ignore[index,arg-type]
            dtype=site.dtype,  # type: ignore[arg-type]
            rank=len(site.input_shape) - 2,  # type: ignore[arg-type]
            allowed=self.allow,
            opset=site.opset,
            conv_layout_inputs=(site.input_name,) if site.input_from_conv else (),
        )

    def _build(self, site: PoolSite, rule, prefix: str) -> SubgraphBuilder:
        builder = self._new_builder(site, prefix)
        x = gs.Variable(site.input_name)
        builder.bind_output(rule.rewrite(site, builder, x), gs.Variable(site.output_name), x)
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
        types = value_types(model)
        unresolved = unresolved_pool_inputs(model, types)
        if unresolved and types_from_runtime(model, unresolved, types):
            report.notes.append(
                f"shapes of {len(unresolved)} pool input(s) taken from an onnxruntime run: shape inference could not resolve them"
            )
        graphs = list(all_graphs(out.graph))
        index = _ProtoIndex.of(graphs)
        taken = _prefixes_of([n.name for g in graphs for n in g.node] + list(index.producers) + list(index.initializers))
        nonnegative = NonNegativity.of_graphs(graphs)
        graph_sites: list[tuple[onnx.GraphProto, dict[int, PoolSite]]] = []
        for graph in graphs:  # the main graph, then every If/Loop/Scan body, nested ones included
            sites: dict[int, PoolSite] = {}
            for position, node in enumerate(graph.node):
                if node.op_type in SITE_OPS and node.domain in ONNX_DOMAINS:
                    site = _site_from_proto(node, opset, types, index)
                    if _is_pool(site):
                        site.input_nonnegative = nonnegative(site.input_name)
                        site.input_from_conv = comes_out_of_conv(site.input_name, nonnegative.producer)
                        site.input_reach = max_window_reach(site.input_name, nonnegative.producer)
                        site.input_chain_start = max_window_source(site.input_name, nonnegative.producer)
                        site.allow_double = self.rewrite_double
                        site.between_qdq = index.between_qdq(site)
                        sites[position] = site
            graph_sites.append((graph, sites))
        check_selection(self.only, self.exclude, [site for _, sites in graph_sites for site in sites.values()])
        for graph, sites in graph_sites:
            new_nodes: list[onnx.NodeProto] = []
            new_initializers: list[onnx.TensorProto] = []
            changed = False
            shared = self._shared_groups(sites)
            for position, node in enumerate(graph.node):
                if position not in sites:
                    new_nodes.append(node)
                    continue
                if progress and report.nodes and len(report.nodes) % 100 == 0:
                    progress(f"rewriting: {len(report.nodes)} pool nodes done")
                group = shared.get(position)
                if group is not None:  # handled with the first pool of its group
                    if group[0] == position:
                        results, builder = self._plan_shared([sites[p] for p in group], taken)
                        report.nodes.extend(results)
                        changed = True
                        new_nodes.extend(OnnxExporter.export_node(n) for n in builder.nodes)
                        new_initializers.extend(OnnxExporter.export_tensor_proto(c) for c in builder.constants)
                    continue
                result, builder = self._plan(sites[position], taken)
                report.nodes.append(result)
                if builder is None:
                    new_nodes.append(node)
                    continue
                changed = True
                new_nodes.extend(OnnxExporter.export_node(n) for n in builder.nodes)
                new_initializers.extend(OnnxExporter.export_tensor_proto(c) for c in builder.constants)
            if changed:
                del graph.node[:]
                graph.node.extend(new_nodes)
                graph.initializer.extend(new_initializers)
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
        graphs = [graph, *graph.subgraphs(recursive=True)]
        tensors: dict[str, gs.Tensor] = {}
        for g in graphs:
            tensors.update(g.tensors())
        taken = _prefixes_of([n.name for g in graphs for n in g.nodes] + list(tensors))
        output_names = {t.name for g in graphs for t in g.outputs}

        def producer(name: str):
            tensor = tensors.get(name)
            if tensor is None or not tensor.inputs:
                return None
            node = tensor.inputs[0]
            return node.op, [t.name for t in node.inputs], dict(node.attrs)

        def constant(name: str) -> Optional[np.ndarray]:
            tensor = tensors.get(name)
            return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else None

        nonnegative = NonNegativity(producer, constant)
        found: list[tuple[gs.Graph, gs.Node, PoolSite]] = []
        for g, node in [(g, n) for g in graphs for n in list(g.nodes)]:
            if node.op not in SITE_OPS or (node.domain or "") not in ONNX_DOMAINS:
                continue
            x, y = node.inputs[0], node.outputs[0]
            indices = node.outputs[1] if len(node.outputs) > 1 else None
            dtype = np.dtype(x.dtype) if x.dtype is not None and not isinstance(x.dtype, int) else None
            site = PoolSite(
                name=node.name or "",
                op_type=node.op,
                attrs=dict(node.attrs),
                opset=opset,
                input_name=x.name,
                output_name=y.name,
                input_shape=tuple(x.shape) if x.shape is not None else None,
                dtype=dtype,
                dtype_name=dtype.name if dtype is not None else "",
                indices_used=bool(indices is not None and indices.name and (indices.outputs or indices.name in output_names)),
            )
            axes = _gs_constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
            if axes is not None and "axes" not in site.attrs:  # Reduce*-18 axes
                site.attrs["axes"] = [int(v) for v in axes.reshape(-1)]
            if _is_pool(site):
                found.append((g, node, site))
        check_selection(self.only, self.exclude, [site for _, _, site in found])
        for g, node, site in found:
            x, y = node.inputs[0], node.outputs[0]
            site.input_nonnegative = nonnegative(x.name)
            site.input_from_conv = comes_out_of_conv(x.name, producer)
            site.input_reach = max_window_reach(x.name, producer)
            site.input_chain_start = max_window_source(x.name, producer)
            site.allow_double = self.rewrite_double
            site.between_qdq = (
                bool(x.inputs) and x.inputs[0].op == "DequantizeLinear" and bool(y.outputs)
                and all(reader.op == "QuantizeLinear" for reader in y.outputs) and y.name not in output_names
            )
            result, builder = self._plan(site, taken)
            report.nodes.append(result)
            if builder is None:
                continue
            _splice_into_graph(g, node, builder, x, y)
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


def _fresh_prefix(base: str, taken_prefixes: set[str]) -> str:
    """A name prefix no existing name uses; generated names are ``prefix/hint_N``."""
    prefix, n = f"{base}/poolrewrite", 1
    while prefix in taken_prefixes:
        n += 1
        prefix = f"{base}/poolrewrite{n}"
    taken_prefixes.add(prefix)
    return prefix


def _gs_constant_value(tensor: gs.Tensor) -> Optional[np.ndarray]:
    """A graphsurgeon tensor's value when it is a constant or a Constant node's output."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant" and isinstance(tensor.inputs[0].attrs.get("value"), gs.Constant):
        return np.asarray(tensor.inputs[0].attrs["value"].values)
    return None


def _is_pool(site: PoolSite) -> bool:
    is_pool = getattr(rule_for(site.op_type), "is_pool", None)
    return is_pool is None or is_pool(site)


def _record_check_start(result: NodeResult, site: PoolSite) -> None:
    """Where the validator must check a rewritten node (see :mod:`rewriter.check_starts`)."""
    result.checked_from = site.input_chain_start or site.input_name
    result.checked_nonnegative = site.input_nonnegative


def _fingerprint(builder: SubgraphBuilder) -> bytes:
    nodes = b"".join(OnnxExporter.export_node(n).SerializeToString() for n in builder.nodes)
    return nodes + b"".join(OnnxExporter.export_tensor_proto(c).SerializeToString() for c in builder.constants)


def _raw_attributes(op_type: str, attrs: dict) -> str:
    """The report's short attribute form for nodes refused before their spec was resolved."""
    if op_type.startswith("Global"):
        return "global"
    if op_type.startswith("Reduce"):
        return "global (axes " + ",".join(str(a) for a in attrs.get("axes", [])) + ")"
    def join(key: str, sep: str = "x") -> str:
        return sep.join(str(v) for v in attrs[key])

    parts = []
    if "kernel_shape" in attrs:
        parts.append("k" + join("kernel_shape"))
    if "strides" in attrs:
        parts.append("s" + join("strides"))
    if "pads" in attrs:
        half = len(attrs["pads"]) // 2
        parts.append("p" + ",".join(map(str, attrs["pads"][:half])) + "/" + ",".join(map(str, attrs["pads"][half:])))
    if "dilations" in attrs:
        parts.append("d" + join("dilations"))
    if "count_include_pad" in attrs:
        parts.append(f"cip={attrs['count_include_pad']}")
    if attrs.get("ceil_mode"):
        parts.append("ceil")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", ""):
        parts.append(str(auto_pad))
    if "p" in attrs:
        parts.append(f"L{attrs['p']}")  # LpPool's norm
    return " ".join(parts)


def _prefixes_of(names: Iterable[str]) -> set[str]:
    return {name.rsplit("/", 1)[0] for name in names if "/" in name}


@dataclass
class _ProtoIndex:
    """Who produces and who reads each tensor, over a graph and its subgraphs."""

    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    initializers: dict[str, onnx.TensorProto]
    graph_outputs: set[str]

    @classmethod
    def of(cls, graphs: Sequence[onnx.GraphProto]) -> "_ProtoIndex":
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for g in graphs:
            for n in g.node:
                for i in n.input:
                    consumers.setdefault(i, []).append(n)
        return cls(
            producers={o: n for g in graphs for n in g.node for o in n.output if o},
            consumers=consumers,
            initializers={t.name: t for g in graphs for t in g.initializer},
            graph_outputs={o.name for g in graphs for o in g.output},
        )

    def constant(self, name: str) -> Optional[np.ndarray]:
        """The value of an initializer or of a Constant node's ``value``; None otherwise."""
        if name in self.initializers:
            return tensor_value(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return onnx.numpy_helper.to_array(node.attribute[0].t)
        return None

    def is_used(self, name: str) -> bool:
        return name in self.consumers or name in self.graph_outputs

    def between_qdq(self, site: PoolSite) -> bool:
        """Input from DequantizeLinear, output read only by QuantizeLinear."""
        feeder = self.producers.get(site.input_name)
        readers = self.consumers.get(site.output_name, [])
        return (
            feeder is not None and feeder.op_type == "DequantizeLinear" and bool(readers)
            and all(r.op_type == "QuantizeLinear" for r in readers) and site.output_name not in self.graph_outputs
        )


def _site_from_proto(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto], index: _ProtoIndex) -> PoolSite:
    shape, dtype, dtype_name = shape_and_dtype(types.get(node.input[0]))
    indices = node.output[1] if len(node.output) > 1 else ""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if len(node.input) > 1 and node.input[1] and "axes" not in attrs:  # Reduce*-18 axes
        axes = index.constant(node.input[1])
        if axes is not None:
            attrs["axes"] = [int(v) for v in axes.reshape(-1)]
    return PoolSite(
        name=node.name,
        op_type=node.op_type,
        attrs=attrs,
        opset=opset,
        input_name=node.input[0],
        output_name=node.output[0],
        input_shape=shape,
        dtype=dtype,
        dtype_name=dtype_name,
        indices_used=bool(indices) and index.is_used(indices),
    )


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

