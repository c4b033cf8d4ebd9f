"""Validation's localization: each original pool node alone against what the
candidate computes between the same two tensor names, on the activations the
original really produces there and on the adversarial suites fed straight in.
A failure names the node.

Where a node's check starts is a fact about the lowering, which this package
does not know: a :class:`NodeCheckStart` per node says it (the pass records one
per rewritten node), and :func:`default_check_starts` gives them for a model
when no caller does (the ``rewriter`` package installs its own analysis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from ..graphs import producers
from ..model_io import first_line
from ..ops import ONNX_DOMAINS, POOL_OPS
from ..reductions import ReduceChain, pooling_reductions
from .arrays import all_finite
from .comparator import OutputComparison, ToleranceComparator, compare_exact
from .exact import ExactReference, compare_with_exact
from .inputs import InputDescription, InputSuite, make_feeds
from .quantized import AS_WRITTEN, INTEGER_KERNELS, INTEGER_SUITES, QdqIndex, integer_values, through_qdq
from .runners import OrtRunner
from .ties import TieCheck, tie_site


@dataclass(frozen=True)
class NodeCheckStart:
    """Where a node's check starts (its own input, or an earlier tensor its lowering
    reads through, such as an SPPF chain's start) and whether that tensor is
    provably >= 0 (then the suites fed straight in are made non-negative too)."""

    start: str
    nonnegative: bool = False
    # Inside a QDQ region (see :func:`in_integers`): the tensor the check ends at (the
    # QuantizeLinear after the node; "" for the node's own output), and the zero point
    # of the integers it starts from (None: the start is not quantized).
    end: str = ""
    zero_point: Optional[int] = None
    # (scale, zero point) initializers of the region's QuantizeLinear further on: the check
    # compares the node's output quantized so (() compares it as it is).
    quantize_as: tuple[str, ...] = ()


# Where the checks of a model's nodes start, by node output; a node left out starts at its own input.
CheckStarts = Callable[[onnx.ModelProto], Mapping[str, NodeCheckStart]]
# Which nodes to check: their output names, or a mapping to where each check starts.
Localize = Union[Sequence[str], Mapping[str, NodeCheckStart]]


def own_inputs(model: onnx.ModelProto) -> dict[str, NodeCheckStart]:
    """Every node checked from its own input, taken as signed."""
    return {}


_default_check_starts: list[CheckStarts] = [own_inputs]


def set_default_check_starts(check_starts: CheckStarts) -> None:
    """Install where checks start when a caller says nothing (``rewriter`` installs the pass's analysis)."""
    _default_check_starts[0] = check_starts


def default_check_starts() -> CheckStarts:
    """What :func:`set_default_check_starts` installed (:func:`own_inputs` until then)."""
    return _default_check_starts[0]


def check_starts_for(
    original: onnx.ModelProto, localize: Optional[Localize], check_starts: Optional[CheckStarts] = None
) -> dict[str, NodeCheckStart]:
    """Where the check of each node of ``localize`` starts (None: every node of
    ``original``), by node output: as ``localize`` maps it, else as ``check_starts``
    (default: :func:`default_check_starts`) says, else at the node's own input."""
    if isinstance(localize, Mapping):
        return dict(localize)
    given = (check_starts or default_check_starts())(original)
    made_by = producers([original.graph])
    names = made_by if localize is None else [name for name in localize if name in made_by]
    return {name: given.get(name) or NodeCheckStart(made_by[name].input[0] if made_by[name].input else "") for name in names}


@dataclass
class NodeCheck:
    """One original pool node against the candidate's computation between the same tensors."""

    name: str
    op_type: str
    output: str
    passed: Optional[bool]  # None: could not be localized
    max_abs_error: float = 0.0
    rel_error: float = 0.0
    ulp_error: float = 0.0
    worst_suite: str = ""
    note: str = ""
    compared: str = ""  # the tensor compared: the node's output, or the QuantizeLinear's after it
    exact: bool = False  # compared exactly, in integers (a node between DequantizeLinear and QuantizeLinear)
    # The onnxruntime levels it ran at (in integers: both), and the level of its worst comparison.
    levels: list[str] = field(default_factory=lambda: [AS_WRITTEN])
    level: str = AS_WRITTEN
    # An average judged against its exact value (rewriter.validate.exact), at the worst
    # comparison: the rewrite's and onnxruntime's largest errors there, as fractions of
    # the largest window mean |x|.
    exact_error: Optional[float] = None
    runtime_error: Optional[float] = None
    # A quantized average (rewriter.validate.ties): its outputs whose exact mean lies within
    # float32 rounding of a QuantizeLinear tie, over the check's inputs, and how many of them
    # the rewrite rounds the other way (one step, allowed; summed over the levels).
    tie_outputs: int = 0
    tie_outputs_rounded_otherwise: int = 0
    # Per run of the real activations: (max abs error against onnxruntime, max |reference|) at the node.
    errors_by_run: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)


def localizable_nodes(
    original: onnx.ModelProto,
    candidate: Optional[onnx.ModelProto],
    only: Optional[Sequence[str]],
    ranks: Optional[Mapping[str, Optional[int]]] = None,
    reductions: Optional[Mapping[str, ReduceChain]] = None,
) -> list[onnx.NodeProto]:
    """Original pool nodes whose input (or, in a QDQ region, the integers its
    DequantizeLinear reads) and output tensors the candidate also has (with no
    candidate yet: every pool node of the original, or those in ``only``).
    Reductions count as pools when they act as global pools (:mod:`rewriter.reductions`;
    tensor ranks from ``ranks`` where known) and the candidate computes them otherwise;
    a chain of them is checked from its start."""
    source = candidate if candidate is not None else original
    producer_op = {o: n.op_type for o, n in producers([source.graph]).items()}
    reductions = pooling_reductions(original, ranks) if reductions is None else reductions
    produced = set(producer_op)
    available = produced | {i.name for i in source.graph.input}
    wanted = set(only) if only is not None else None
    index = QdqIndex.of(original)
    nodes = []
    for node in original.graph.node:
        if node.domain not in ONNX_DOMAINS or not node.output:
            continue
        if wanted is not None and node.output[0] not in wanted:
            continue
        if wanted is None and node.op_type not in POOL_OPS:
            if node.output[0] not in reductions:
                continue
            if candidate is not None and producer_op.get(node.output[0]) == node.op_type:
                continue  # the candidate still reduces there: nothing rewritten to check
        start = check_input(node, reductions)
        # A rewrite inside a QDQ region may read the DQ's integers and drop the DQ itself.
        reachable = start in available or through_qdq(original, start, node.output[0], index)[0] in available
        if node.output[0] in produced and reachable:
            nodes.append(node)
    return nodes


def check_input(node: onnx.NodeProto, reductions: Mapping[str, ReduceChain]) -> str:
    """The tensor a node's check reads by default: its input, or the start of the chain of
    reductions it ends (:func:`~rewriter.reductions.pooling_reductions`)."""
    chain = reductions.get(node.output[0]) if node.output else None
    return chain.start if chain is not None else (node.input[0] if node.input else "")


def recorded_starts(
    original: onnx.ModelProto, localize: Optional[Localize], ranks: Optional[Mapping[str, Optional[int]]] = None
) -> list[str]:
    """The tensors of ``original`` to record for the node checks of ``localize``: the
    starts a mapping gives; else the input of every pool node and of every node named
    (a chain's start is a pool's input, so any check can start where it must)."""
    if isinstance(localize, Mapping):
        available = set(producers([original.graph])) | {i.name for i in original.graph.input}
        index = QdqIndex.of(original)
        starts = {s.start for s in localize.values()} | {in_integers(original, o, s, index).start for o, s in localize.items()}
        return sorted(s for s in starts if s in available)
    reductions = pooling_reductions(original, ranks)
    nodes = localizable_nodes(original, None, None, ranks, reductions)
    nodes += localizable_nodes(original, None, localize, ranks, reductions) if localize else []
    # A node in a QDQ region is checked from the integers its DequantizeLinear reads: record both.
    index = QdqIndex.of(original)
    inputs = {n.output[0]: check_input(n, reductions) for n in nodes}
    return sorted(set(inputs.values()) | {through_qdq(original, x, y, index)[0] for y, x in inputs.items()})


def in_integers(model: onnx.ModelProto, output: str, start: NodeCheckStart, index: Optional[QdqIndex] = None) -> NodeCheckStart:
    """``start`` of the check of the node making ``output``, moved into integers when the
    node sits in a QDQ region (:func:`~rewriter.validate.quantized.through_qdq`): from the
    integers its DequantizeLinear reads to the integers of the QuantizeLinear after it."""
    if start.zero_point is not None:
        return start
    begin, end, zero_point, quantize_as = through_qdq(model, start.start, output, index)
    if zero_point is None:
        return start if end == output else NodeCheckStart(start.start, start.nonnegative, end)
    return NodeCheckStart(begin, start.nonnegative, "" if end == output else end, zero_point, quantize_as)


def nodes_to_check(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    localize: Optional[Localize],
    check_starts: Optional[CheckStarts],
    recorded: set[str],
) -> list[tuple[onnx.NodeProto, NodeCheckStart]]:
    """The original's nodes to check against ``candidate`` (``localize``, default every
    rewritten pool node) and where each check starts: at a ``recorded`` tensor, the
    node's own input when its start was not recorded; nodes with neither are left out."""
    starts = check_starts_for(original, localize, check_starts)
    index = QdqIndex.of(original)
    chosen = []
    reductions = pooling_reductions(original)
    for node in localizable_nodes(original, candidate, None if localize is None else list(starts), reductions=reductions):
        own = check_input(node, reductions)
        start = starts.get(node.output[0]) or NodeCheckStart(own)
        if start.start not in recorded:
            start = NodeCheckStart(own, start.nonnegative)
        start = in_integers(original, node.output[0], start, index)
        if start.start in recorded:
            chosen.append((node, start))
    return chosen


def check_node(
    node: onnx.NodeProto,
    original: "Paths",
    candidate: "Paths",
    activations: Sequence[tuple[str, Callable[[str], np.ndarray]]],
    comparator: ToleranceComparator,
    candidate_runner: Callable[..., Any],
    suites: Sequence[InputSuite] = (),
    seed: int = 0,
    start: Optional[NodeCheckStart] = None,
    integer_kernels: bool = False,
    allow_ties: bool = True,
) -> NodeCheck:
    """The node alone against the candidate's computation between the same tensors:
    on the activations the original really produces there (``activations``: per
    run, its name and a loader of a tensor by name), and on the adversarial suites
    fed straight into the node (upstream layers can hide all-negative windows).
    ``start`` (default: the node's input, signed) says where the check starts.
    ``integer_kernels``: a check in integers (a QDQ region) also runs both pieces at
    ORT_ENABLE_ALL, where onnxruntime fuses them into its integer kernels. One input
    of the node is in memory at a time. ``allow_ties``: an average in integers may be one
    step off at its outputs at QuantizeLinear ties (:mod:`rewriter.validate.ties`)."""
    check = NodeCheck(node.name, node.op_type, node.output[0], passed=None)
    start = start or NodeCheckStart(node.input[0])
    x_name, y_name = start.start, start.end or node.output[0]
    check.compared = y_name
    try:
        pieces = original.between(x_name, y_name, start.quantize_as), candidate.between(x_name, y_name, start.quantize_as)
        if start.quantize_as:  # the output quantized as its region's QuantizeLinear does
            y_name = check.compared = pieces[0].graph.output[0].name
        runners = [(AS_WRITTEN, OrtRunner(pieces[0]), candidate_runner(pieces[1]))]
        if start.zero_point is not None and integer_kernels and candidate_runner is OrtRunner:
            # In integers, also as onnxruntime's integer kernels compute it (QLinear* fusions).
            runners.append((INTEGER_KERNELS, OrtRunner(pieces[0], optimization=INTEGER_KERNELS),
                            OrtRunner(pieces[1], optimization=INTEGER_KERNELS)))
        check.levels = [level for level, _, _ in runners]
        ties = _tie_check(node, original, start) if allow_ties else None
        # A float average is judged against its exact value, prepared once for every input.
        reference = ExactReference.of(pieces[0]) if start.zero_point is None else None
    except _NotLocalizable as err:
        check.note = str(err)
        return check
    except Exception as err:
        check.passed, check.note = False, f"does not load: {first_line(err)}"
        return check
    # Fed from a graph input, the activations already are the suites, fed straight in.
    direct_suites = () if x_name in {i.name for i in original.model.graph.input} else suites

    def node_inputs() -> Iterator[tuple[str, np.ndarray]]:
        at_node: Optional[InputDescription] = None
        for suite_name, load in activations:
            x = load(x_name)
            at_node = InputDescription(x_name, x.shape, x.dtype)
            yield suite_name, x
            del x
        if at_node is not None and start.zero_point is not None and np.issubdtype(at_node.dtype, np.integer) and direct_suites:
            # Quantized: adversarial integers over the dtype's range (>= the zero point when provably non-negative).
            rng = np.random.default_rng(seed)
            floor = start.zero_point if start.nonnegative else None
            for kind in INTEGER_SUITES:
                yield f"{kind} integers at the node", integer_values(kind, rng, at_node.shape, at_node.dtype, floor)
            return
        for suite in direct_suites if at_node else ():
            x = make_feeds([at_node], suite, seed)[x_name]
            if start.nonnegative:
                np.abs(x, out=x)
            yield f"{suite.name} at the node", x
            del x

    worst: Optional[OutputComparison] = None
    for suite_name, x in node_inputs():
        if suite_name == "user" or all_finite([x]):  # the rewrite is exact for finite inputs only (see README)
            # A sum is judged against its exact value, not against onnxruntime's rounding of it.
            exact = reference.mean(x) if reference is not None else None
            for level, ref_runner, cand_runner in runners:
                try:
                    expected = ref_runner.run({x_name: x})[y_name]
                    actual = cand_runner.run({x_name: x})[y_name]
                except Exception as err:
                    at = "" if level == AS_WRITTEN else f" at {level}"
                    check.passed, check.note, check.worst_suite = False, f"fails to run{at}: {first_line(err)}", suite_name
                    return check
                if np.issubdtype(expected.dtype, np.integer):  # after a QuantizeLinear: the integers, exactly
                    c = compare_exact(y_name, suite_name, expected, actual) if ties is None else ties.compare(y_name, suite_name, x, expected, actual)
                    check.exact = True
                elif exact is not None and level == AS_WRITTEN:
                    c = compare_with_exact(comparator, y_name, suite_name, exact, expected, actual)
                else:
                    c = comparator.compare(y_name, suite_name, expected, actual)
                c.level = level
                if level == AS_WRITTEN and not suite_name.endswith(" at the node") and np.issubdtype(expected.dtype, np.floating) and expected.size:
                    finite = np.isfinite(expected) & np.isfinite(actual) if expected.shape == actual.shape else None
                    moved = c.max_abs_error if finite is None or c.exact_error is None else float(
                        np.max(np.abs(actual[finite].astype(np.float64) - expected[finite]), initial=0.0))
                    check.errors_by_run[suite_name] = (moved, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)))
                del expected, actual
                if worst is None or (not c.passed, c.rel_error) > (not worst.passed, worst.rel_error):
                    worst = c
        x = None  # released before the next input is made
    if ties is not None:
        check.tie_outputs, check.tie_outputs_rounded_otherwise = ties.ties, ties.off
    if worst is not None:
        check.level = worst.level
        check.passed = worst.passed
        check.max_abs_error, check.rel_error, check.ulp_error = worst.max_abs_error, worst.rel_error, worst.ulp_error
        check.worst_suite, check.note = worst.suite, worst.note
        check.exact_error, check.runtime_error = worst.exact_error, worst.runtime_error
    return check


def _tie_check(node: onnx.NodeProto, original: "Paths", start: NodeCheckStart) -> Optional[TieCheck]:
    """The tie-aware comparison of an average checked in integers, or None."""
    site = tie_site(original.model, node, start, original.producers)
    if site is None:
        return None
    try:
        piece = OrtRunner(original.between(site.start, site.pool_input))
    except Exception:
        return None
    return TieCheck(site, lambda x: piece.run({site.start: x})[site.pool_input])


class _NotLocalizable(Exception):
    """The node's output cannot be cut out as a function of its check's start alone."""


class Paths:
    """Cuts single-input pieces out of one model: what computes ``y`` from ``x`` alone
    (``elem_types``: the element types of the tensors, where known)."""

    def __init__(self, model: onnx.ModelProto, elem_types: Mapping[str, int]) -> None:
        self.model = model
        self.producers = producers([model.graph])
        self.order = {id(n): i for i, n in enumerate(model.graph.node)}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.elem_types = elem_types

    def between(self, x_name: str, y_name: str, quantize_as: Sequence[str] = ()) -> onnx.ModelProto:
        """A model of input ``x_name`` and output ``y_name``; raises when ``y`` needs more than ``x``.
        ``quantize_as`` (a QuantizeLinear's scale and zero point initializers): the output
        is ``y`` quantized so."""
        keep: dict[int, onnx.NodeProto] = {}
        seen: set[str] = set()
        stack = [y_name]
        while stack:
            name = stack.pop()
            if name in seen or name == x_name or name in self.initializers or not name:
                continue
            seen.add(name)
            node = self.producers.get(name)
            if node is None:
                raise _NotLocalizable(f"'{y_name}' depends on '{name}', not only on '{x_name}'")
            if node.op_type in ("If", "Loop", "Scan") or len(keep) > 10000:
                raise _NotLocalizable(f"'{y_name}' is computed through control flow or too many nodes")
            keep[id(node)] = node
            stack.extend(node.input)
        nodes = sorted(keep.values(), key=lambda n: self.order[id(n)])
        used = {i for n in nodes for i in n.input}

        def info(name: str) -> onnx.ValueInfoProto:
            return onnx.helper.make_tensor_value_info(name, self.elem_types.get(name, onnx.TensorProto.FLOAT), None)

        output = info(y_name)
        if quantize_as:
            if any(name not in self.initializers for name in quantize_as):
                raise _NotLocalizable(f"the QuantizeLinear after '{y_name}' has no constant scale and zero point here")
            quantized = f"{y_name}__quantized"
            nodes = nodes + [onnx.helper.make_node("QuantizeLinear", [y_name, *quantize_as], [quantized])]
            used |= set(quantize_as)
            output = onnx.helper.make_tensor_value_info(quantized, self.initializers[quantize_as[1]].data_type, None)
        inits = [t for name, t in self.initializers.items() if name in used]
        graph = onnx.helper.make_graph(nodes, "localized", [info(x_name)], [output], inits)
        return onnx.helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)

