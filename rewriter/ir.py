"""The pool rewrite as an onnx_ir pass, for an ``onnx_ir.passes.PassManager``.

Needs the optional extra: ``pip install 'onnx-poolrewrite[ir]'`` (onnx-ir).

:class:`PoolRewriteIRPass` is an ``onnx_ir.passes.InPlacePass``. The analysis (sites,
shapes, checks, builds, the target fit) is :class:`~rewriter.passes.PoolRewritePass`'s,
run on one serialized view of the IR model; the edit is made on the IR graph itself:
each rewritten pool node is replaced by the pass's nodes, wired to the IR values it
read and the IR values its consumers read, so every other node, value and tensor of
the IR model stays the same object. Only a model whose local functions hold pools
(the pass inlines them first) has its graph and functions replaced whole.

The serialized view costs one copy of the weights while the pass runs
(``docs/pipeline.md`` has the numbers for a ResNet-50-sized model).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import onnx
import onnx_ir as ir
import onnx_ir.passes.common

from .graphs import all_graphs, functions_containing
from .ops import POOL_OPS
from .passes import PoolRewritePass
from .report import Report


class IRValidationError(ir.passes.PassError):
    """Validation of the rewrite against the original failed; the IR model is unchanged."""

    def __init__(self, message: str, validation: Any, report: Report) -> None:
        super().__init__(message)
        self.validation = validation
        self.report = report


@dataclasses.dataclass
class PoolRewritePassResult(ir.passes.PassResult):
    """A ``PassResult`` that also carries the pass's :class:`~rewriter.report.Report`
    (and, when the pass validated, the ``ValidationResult``)."""

    report: Report = dataclasses.field(default_factory=Report)
    validation: Any = None


class PoolRewriteIRPass(ir.passes.InPlacePass):
    """:class:`~rewriter.passes.PoolRewritePass` on an ``onnx_ir.Model``, in place.

    Args:
        validate: False (default) rewrites as :meth:`PoolRewritePass.run` does. True, or
            a mapping of :func:`~rewriter.validate.validate_models` keyword arguments,
            rewrites as :func:`~rewriter.rewrite_validated` does (the CLI's way): the
            rewrite is compared with the original on onnxruntime, rewrites validation
            refuses are kept, and a failed validation raises :class:`IRValidationError`
            with the model left unchanged by this pass (in a ``PassManager``, onnx_ir
            raises its ``PassError`` from it; :attr:`validation` says what failed).
        **options: those of :class:`~rewriter.passes.PoolRewritePass` (``target``,
            ``only``, ``exclude``, ``allow``, ``strategies``, ...), checked at once.

    After a call, :attr:`report` is the :class:`~rewriter.report.Report` of the last
    model rewritten (also on the returned :class:`PoolRewritePassResult`; a
    ``PassManager`` returns a plain ``PassResult``, so read it from the pass), and
    :attr:`validation` the last ``ValidationResult`` (None without ``validate``).
    """

    def __init__(self, *, validate: Union[bool, Mapping[str, Any]] = False, **options: Any) -> None:
        super().__init__()
        self.options = dict(options)
        PoolRewritePass(**self.options)  # a misspelt option, strategy or target fails here
        self.validate = validate
        self.report: Optional[Report] = None
        self.validation: Any = None

    def call(self, model: ir.Model) -> PoolRewritePassResult:
        """Rewrite ``model``'s pools in place; ``modified`` says whether any was rewritten."""
        _name_unnamed_values(model)
        proto = ir.serde.serialize_model(model)
        before = _names_of(proto)
        inlined = bool(functions_containing(proto, POOL_OPS))
        validation = None
        if self.validate:
            from .refusals import rewrite_validated

            settings = self.validate if isinstance(self.validate, Mapping) else {}
            rewritten, report, validation = rewrite_validated(proto, validation=settings, **self.options)
            if not validation.passed:
                self.report, self.validation = report, validation
                raise IRValidationError(f"validation failed: {validation.summary()}", validation, report)
        else:
            result = PoolRewritePass(**self.options).run(proto, in_place=True)
            rewritten, report = result.model, result.report
        self.report, self.validation = report, validation
        modified = bool(report.rewritten)
        if modified:
            if inlined:
                _replace_contents(model, rewritten)
            else:
                _splice(model, rewritten, before, {n.output for n in report.rewritten})
        return PoolRewritePassResult(model, modified, report=report, validation=validation)


# -- helpers ------------------------------------------------------------------


def _name_unnamed_values(model: ir.Model) -> None:
    """The serialized view needs every value named; name only those that are not."""
    if any(v.name is None or v.name == "" for g in model.graphs() for n in g for v in n.outputs):
        ir.passes.common.NameFixPass()(model)


def _names_of(proto: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """Node and initializer names of every graph: what the pass's nodes are not called."""
    graphs = list(all_graphs(proto.graph))
    return {n.name for g in graphs for n in g.node} | {""}, {t.name for g in graphs for t in g.initializer}


def _runs(graph: onnx.GraphProto, node_names: set[str]) -> list[list[onnx.NodeProto]]:
    """The pass's nodes in ``graph``, as the contiguous runs that each replace one or more pools."""
    runs: list[list[onnx.NodeProto]] = []
    current: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name not in node_names:  # fresh names: the pass's node (original names are kept)
            current.append(node)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _splice(model: ir.Model, rewritten: onnx.ModelProto, before: tuple[set[str], set[str]], outputs: set[str]) -> None:
    """Replace each rewritten pool of the IR ``model`` by the nodes the pass put in its place."""
    node_names, initializer_names = before
    values: dict[str, ir.Value] = {}
    producers: dict[str, ir.Node] = {}
    for graph in model.graphs():
        for v in [*graph.inputs, *graph.initializers.values()]:
            values[v.name] = v
        for node in graph:
            for v in node.outputs:
                values[v.name] = v
                producers[v.name] = node
    new_tensors = {
        t.name: t for g in all_graphs(rewritten.graph) for t in g.initializer if t.name not in initializer_names
    }
    for proto_graph in all_graphs(rewritten.graph):
        for run in _runs(proto_graph, node_names):
            replaced_outputs = [o for n in run for o in n.output if o in outputs]
            pools = list({id(n): n for n in (producers[o] for o in replaced_outputs)}.values())
            graph = pools[0].graph
            order = {id(n): i for i, n in enumerate(graph)}
            pools.sort(key=lambda n: order[id(n)])  # the run goes where the first of them was
            local: dict[str, ir.Value] = {}
            new_nodes: list[ir.Node] = []
            for proto_node in run:
                inputs = []
                for name in proto_node.input:
                    if not name:
                        inputs.append(None)
                    elif name in local:
                        inputs.append(local[name])
                    elif name in new_tensors:
                        tensor = ir.serde.deserialize_tensor(new_tensors[name])
                        value = ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype), const_value=tensor)
                        graph.register_initializer(value)
                        local[name] = value
                        inputs.append(value)
                    else:
                        inputs.append(values[name])
                out_values = [ir.Value(name=None if o in outputs else o) for o in proto_node.output]
                for o, v in zip(proto_node.output, out_values):
                    local[o] = v
                new_nodes.append(
                    ir.Node(
                        proto_node.domain,
                        proto_node.op_type,
                        inputs,
                        [ir.serde.deserialize_attribute(a) for a in proto_node.attribute],
                        outputs=out_values,
                        name=proto_node.name,
                    )
                )
            graph.insert_before(pools[0], new_nodes)
            old = [values[o] for o in replaced_outputs]
            new = [local[o] for o in replaced_outputs]
            for o, n in zip(old, new):
                n.type, n.shape = o.type, o.shape
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
            graph.remove(pools, safe=True)
            for name, n in zip(replaced_outputs, new):
                n.name = name
                values[name] = n


def _replace_contents(model: ir.Model, rewritten: onnx.ModelProto) -> None:
    """Give ``model`` the rewritten graph and functions (local functions were inlined)."""
    fresh = ir.serde.deserialize_model(rewritten)
    model.graph = fresh.graph
    model.functions.clear()
    model.functions.update(fresh.functions)  # the graph brings its own opset imports
