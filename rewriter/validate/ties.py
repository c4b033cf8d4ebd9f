"""Quantized averages at QuantizeLinear rounding ties: what a rewrite may round otherwise.

An average between DequantizeLinear and QuantizeLinear computes ``Q(mean)``; its exact
value, from the input integers ``n = q - z_in``, is ``t = sum(n) * s_in / (K * s_out) +
z_out`` output steps. Where ``t`` lies within float32 rounding of a half step, every
implementation decides the tie by its own float error: onnxruntime's two levels
disagree there (its float pool as written, QLinearAveragePool with the integer
kernels), and so does any rewrite or NPU. Bit-exactness against one of them is not a
property a user can have; being as right as the original is.

* **Node checks** (:class:`TieCheck`) run in integers: the rewrite equals the original
  everywhere, except at the outputs whose exact mean (float64, from the input integers,
  scale and zero point) lies within float32 rounding of a tie (:func:`tie_mask`); there
  one step either way is allowed. Each node check counts those outputs.
* **End to end** (:func:`allow_tie_effects`): at each level the candidate is compared
  with the original at that level; a model without such outputs stays bit-exact. An
  exact output that differs passes only if (1) the candidate with the original's own
  ``DQ -> average -> Q`` pieces spliced back in for its tie averages
  (:func:`with_original_averages`) equals the original exactly: the difference is the
  tie outputs' alone; and (2) it is at most :data:`TIE_EFFECT_FACTOR` times what
  rounding the candidate's tie outputs the other way moves that output (each tie
  average's integers fed back with its tie outputs flipped: all, those rounded down,
  those rounded up; the largest move, summed over the nodes). Both that move and the
  original's own disagreement between its levels are reported.

``allow_ties=False`` (the CLI's ``--keep-tie-averages``) turns both off: exact, as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..graphs import producers
from .comparator import OutputComparison, compare_exact
from ..ops import MAX_POOL_OPS
from .exact import exact_mean
from .quantized import AS_WRITTEN, INTEGER_KERNELS, SHAPE_ONLY_OPS

TIE_OPS = ("AveragePool", "GlobalAveragePool", "ReduceMean")
UNIT_ROUNDOFF = 2.0 ** -24  # float32
# How many times the tie outputs' measured downstream move an exact output may differ by:
# the candidate rounds only some of the ties the other way, and their moves need not add up.
TIE_EFFECT_FACTOR = 2.0
_WALK = 8


@dataclass(frozen=True)
class TieSite:
    """An average in a QDQ region, as its node check sees it: the integers it starts
    from (``start``), its own float input (``pool_input``), the integers compared
    (``end``: its QuantizeLinear's output) and the quantization in and out."""

    output: str
    piece: onnx.ModelProto  # the average alone, reading its own float input (its exact mean: rewriter.validate.exact)
    start: str
    pool_input: str
    end: str
    in_scale: float
    out_scale: float
    out_zero: int
    out_range: tuple[int, int]
    # Read in the model (not a tensor the check builds): the end-to-end measurement can feed it.
    end_in_model: bool = True

    def steps(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact mean of every output in output steps (zero point added), and the
        float32 rounding bound of any implementation there, from the average's input
        ``n`` in input steps (``q - z_in``, float64). Raises ValueError for a piece that
        :func:`~rewriter.validate.exact.exact_mean` does not cover."""
        mean = exact_mean(self.piece, n.astype(np.float64))
        if mean is None:
            raise ValueError(f"no exact mean of '{self.output}'")
        ratio = self.in_scale / self.out_scale
        t = mean.value * ratio + self.out_zero
        # DequantizeLinear's products, any summation order of the window's terms, the weight
        # or 1/K and the division by the output scale (of the largest window's magnitude);
        # the zero point added before rounding.
        bound = 1.01 * ((mean.count + 9) * UNIT_ROUNDOFF * mean.magnitude * ratio + 4 * UNIT_ROUNDOFF * (np.abs(t) + abs(self.out_zero) + 1)) + 1e-9
        return t, bound


def tie_mask(site: TieSite, n: np.ndarray) -> Optional[np.ndarray]:
    """Which outputs have their exact mean within float32 rounding of a deciding tie
    (None: no exact mean for this piece and input, so no output is a tie)."""
    try:
        t, bound = site.steps(n)
    except ValueError:
        return None
    half = np.floor(t) + 0.5
    lo, hi = site.out_range
    return (np.abs(t - half) <= bound) & (half > lo) & (half < hi)


def tie_site(model: onnx.ModelProto, node: onnx.NodeProto, start: Any, made_by: Optional[Mapping[str, onnx.NodeProto]] = None) -> Optional[TieSite]:
    """The :class:`TieSite` of ``node`` (an average) whose check starts at ``start`` (a
    :class:`~rewriter.validate.localize.NodeCheckStart` in integers), or None: not an
    average, not in integers, or its quantization is not constant and per tensor."""
    if node.op_type not in TIE_OPS or start.zero_point is None or node.domain not in ("", "ai.onnx"):
        return None
    made_by = made_by if made_by is not None else producers([model.graph])
    constants = {t.name: t for t in model.graph.initializer}

    def scalar(name: str) -> Optional[np.ndarray]:
        t = constants.get(name)
        return None if t is None or int(np.prod(t.dims, dtype=np.int64)) != 1 else numpy_helper.to_array(t).reshape(())

    dq, hops = made_by.get(node.input[0]), 0
    while dq is not None and dq.op_type in SHAPE_ONLY_OPS | MAX_POOL_OPS and dq.input and hops < _WALK:
        dq, hops = made_by.get(dq.input[0]), hops + 1
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] != start.start:
        return None
    in_scale = scalar(dq.input[1])
    if start.quantize_as:
        names, end, in_model = tuple(start.quantize_as), f"{node.output[0]}__quantized", False
    else:
        q = made_by.get(start.end) if start.end else None
        if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3:
            return None
        names, end, in_model = (q.input[1], q.input[2]), start.end, True
    out_scale, out_zero = scalar(names[0]), scalar(names[1])
    if in_scale is None or out_scale is None or out_zero is None or out_zero.dtype not in (np.int8, np.uint8):
        return None
    try:
        piece = _between(model, node.input[0], node.output[0], {})
    except Exception:  # the average needs more than its input (a computed axes input)
        return None
    info = np.iinfo(out_zero.dtype)
    return TieSite(node.output[0], piece, start.start, node.input[0], end, float(in_scale), float(out_scale), int(out_zero),
                   (int(info.min), int(info.max)), in_model)


def tie_sites(model: onnx.ModelProto, checks: Sequence[tuple[onnx.NodeProto, Any]]) -> list[TieSite]:
    """The :class:`TieSite` of every average among ``checks`` (node, check start) that has one."""
    made_by = producers([model.graph])
    sites = [tie_site(model, node, start, made_by) for node, start in checks]
    return [s for s in sites if s is not None]


class TieCheck:
    """A node check's comparison in integers that allows one step at the tie outputs.
    ``pool_input`` runs the original's piece from the check's start to the average's
    own input (its DequantizeLinear, possibly through value-moving ops)."""

    def __init__(self, site: TieSite, pool_input: Callable[[np.ndarray], np.ndarray]) -> None:
        self.site, self._pool_input = site, pool_input
        self.ties = 0  # tie outputs seen over the check's inputs
        self.off = 0  # of those, rounded the other way by the rewrite (summed over the levels)
        self._mask: Optional[tuple[str, Optional[np.ndarray]]] = None

    def mask(self, suite: str, x: np.ndarray) -> Optional[np.ndarray]:
        """The tie outputs for the check's input integers ``x`` on ``suite`` (kept for the last suite)."""
        if self._mask is None or self._mask[0] != suite:
            n = np.rint(self._pool_input(x).astype(np.float64) / self.site.in_scale)
            mask = tie_mask(self.site, n)
            self.ties += 0 if mask is None else int(mask.sum())
            self._mask = (suite, mask)
        return self._mask[1]

    def compare(self, output: str, suite: str, x: np.ndarray, expected: np.ndarray, actual: np.ndarray) -> OutputComparison:
        """``actual`` against ``expected`` exactly, but one step either way at the tie outputs."""
        c = compare_exact(output, suite, expected, actual)
        mask = self.mask(suite, x)
        if c.passed or expected.shape != actual.shape or expected.dtype != actual.dtype:
            return c
        if mask is None or mask.shape != expected.shape:
            return c
        diff = np.abs(expected.astype(np.int64) - actual.astype(np.int64))
        bad = (diff > 1) | ((diff == 1) & ~mask)
        at_ties = int(np.count_nonzero((diff == 1) & mask))
        self.off += at_ties
        if bad.any():
            c.note = f"exact comparison: {int(bad.sum())} of {expected.size} values differ outside QuantizeLinear ties"
            c.note += f" ({at_ties} more one step off at ties, allowed)" if at_ties else ""
            return c
        c.passed = True
        c.allowed = 1.0
        c.note = f"{at_ties} of {int(mask.sum())} outputs at QuantizeLinear ties rounded the other way (allowed)"
        return c


# -- end to end --------------------------------------------------------------------------------


def allow_tie_effects(
    result: Any,
    reference: Any,
    candidate: onnx.ModelProto,
    sites: Sequence[TieSite],
    input_map: Mapping[str, str],
    output_map: Mapping[str, str],
    progress: Optional[Callable[[str], None]] = None,
) -> None:
    """Judge the failing exact comparisons of ``result`` again, allowing what the
    candidate's tie outputs can cause downstream (see the module docstring). Only a
    candidate whose node checks all pass gets here; anything else stays failed."""
    from .runners import OrtRunner

    sites = [s for s in sites if s.end_in_model]
    failing = [c for c in result.comparisons if not c.passed]
    if not sites or not failing or any(not c.exact or not np.isfinite(c.max_abs_error) or c.output.startswith("<") for c in failing):
        return
    original = reference.skeleton
    pieces = {s.output: _between(original, s.start, s.pool_input, reference.types) for s in sites}
    for level in dict.fromkeys(c.level for c in failing):
        runs = {c.suite for c in failing if c.level == level}
        expose = sorted({s.start for s in sites} | {s.end for s in sites})
        try:
            exposed = OrtRunner(candidate, expose=expose, elem_types=reference.types, optimization=level)
            fed = {}
            for s in sites:
                with _fed(candidate, s.end, reference.types.get(s.end) or _zero_type(original, s.end)) as model:
                    fed[s.output] = OrtRunner(model, optimization=level)
            base_pieces = {k: OrtRunner(p) for k, p in pieces.items()}
            hybrid = OrtRunner(with_original_averages(candidate, original, sites, reference.types), optimization=level)
        except Exception:
            return  # cannot measure: the comparisons stay failed
        for index, run_name in enumerate(reference.run_names):
            if run_name not in runs:
                continue
            if progress:
                progress(f"validating: what the tie outputs cause downstream on {run_name} inputs at {level}")
            feeds = {input_map.get(k, k): v for k, v in reference.suite_feeds(index).items()}
            try:
                base = exposed.run(feeds)
                restored = hybrid.run(feeds)
                effect: dict[str, np.ndarray] = {}  # per output, per value: the change, summed over the nodes
                for s in sites:
                    x = base[s.start]
                    n = np.rint(base_pieces[s.output].run({s.start: x})[s.pool_input].astype(np.float64) / s.in_scale)
                    # All ties, then only those rounded down, then only those rounded up: a
                    # sum downstream (a global mean) can cancel mixed moves out.
                    moved_by: dict[str, np.ndarray] = {}
                    for direction in (0, 1, -1):
                        flipped, count = _rounded_the_other_way(s, n, base[s.end], direction)
                        if not count:
                            continue
                        moved = fed[s.output].run({**feeds, s.end: flipped})
                        for name, value in moved.items():
                            if name in base and value.shape == base[name].shape:
                                d = np.abs(value.astype(np.float64) - base[name].astype(np.float64))
                                moved_by[name] = np.maximum(moved_by[name], d) if name in moved_by else d
                    for name, d in moved_by.items():
                        effect[name] = effect[name] + d if name in effect else d
            except Exception:
                continue
            for c in result.comparisons:
                if c.passed or c.level != level or c.suite != run_name:
                    continue
                name = output_map.get(c.output, c.output)
                if name not in effect or name not in base:
                    continue
                expected = reference.recorded_output(index, c.output, level)
                c.tie_effect = float(effect[name].max(initial=0.0))
                c.level_disagreement = _level_disagreement(reference, index, c.output)
                # With the original's own averages back in, the candidate is the original: the
                # difference is the tie outputs' alone, and of the order they can cause.
                same_otherwise = name in restored and np.array_equal(restored[name], expected, equal_nan=expected.dtype.kind == "f")
                if same_otherwise and c.max_abs_error <= TIE_EFFECT_FACTOR * c.tie_effect:
                    c.passed, c.allowed = True, TIE_EFFECT_FACTOR * c.tie_effect
                    c.note = (f"{c.note}, only by the tie outputs (rounding them the other way moves it by up to "
                              f"{c.tie_effect:.3g}; the original's own levels differ by up to {c.level_disagreement:.3g})")
                elif not same_otherwise:
                    c.note += "; not only by the tie outputs: with the original's averages back in it still differs"
    result.tolerance = {**result.tolerance, "tie_effect": (f"exact with the original's averages at ties back in, and within {TIE_EFFECT_FACTOR:g}x the change "
                                                                  "when the tie outputs are rounded the other way")}
    result.passed = all(c.passed for c in result.comparisons) and not result.failed_nodes


def with_original_averages(candidate: onnx.ModelProto, original: onnx.ModelProto, sites: Sequence[TieSite], types: Mapping[str, int]) -> onnx.ModelProto:
    """A copy of ``candidate`` whose tie averages are the original's nodes again (each
    ``DQ -> average -> Q`` piece from its start integers, spliced in with its tensors
    renamed); what computed them in the candidate, now unread, is dropped."""
    hybrid = onnx.ModelProto()
    hybrid.CopyFrom(candidate)
    graph = hybrid.graph
    made_by = producers([graph])
    for i, site in enumerate(sites):
        piece = _between(original, site.start, site.end, types)
        suffix = f"__tie_original{i}"
        rename = {n_out: n_out + suffix for node in piece.graph.node for n_out in node.output if n_out != site.end}
        rename.update({t.name: t.name + suffix for t in piece.graph.initializer})
        node = made_by[site.end]
        node.output[list(node.output).index(site.end)] = site.end + "__tie_rewrite"
        for t in piece.graph.initializer:
            copy = graph.initializer.add()
            copy.CopyFrom(t)
            copy.name = rename[t.name]
        for n in piece.graph.node:
            copy = graph.node.add()
            copy.CopyFrom(n)
            copy.input[:] = [rename.get(x, x) for x in n.input]
            copy.output[:] = [rename.get(x, x) for x in n.output]
            copy.name = (n.name or n.op_type) + suffix
    _drop_unread(graph)
    _topological(graph)
    return hybrid


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is read or a graph output (repeatedly)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {x for n in graph.node for x in n.input} | outputs
        keep = [n for n in graph.node if any(o in read for o in n.output)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def _topological(graph: onnx.GraphProto) -> None:
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(x in known for x in n.input)]
        if not ready:
            return  # leave it to onnxruntime to say what is missing
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        pending = [n for n in pending if n not in ready]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _rounded_the_other_way(site: TieSite, n: np.ndarray, integers: np.ndarray, direction: int = 0) -> tuple[np.ndarray, int]:
    """``integers`` (the node's Q output) with each tie output moved to the other side of its
    tie (``direction`` 1: only those rounded down, moved up; -1: only those rounded up)."""
    mask = tie_mask(site, n)
    if mask is None or mask.shape != integers.shape:
        return integers, 0
    t, _ = site.steps(n)
    low = np.floor(t)  # the tie lies between low and low + 1
    values = integers.astype(np.int64)
    up, down = values == low, values == low + 1
    other = np.where(up & (direction >= 0), low + 1, np.where(down & (direction <= 0), low, values))
    flipped = np.where(mask, other, values).clip(*site.out_range).astype(integers.dtype)
    return flipped, int(np.count_nonzero(flipped != integers))


def _zero_type(model: onnx.ModelProto, end: str) -> int:
    """The element type of a QuantizeLinear's output: its zero point's."""
    q = producers([model.graph]).get(end)
    constants = {t.name: t for t in model.graph.initializer}
    return constants[q.input[2]].data_type if q is not None and len(q.input) > 2 and q.input[2] in constants else onnx.TensorProto.UINT8


def _level_disagreement(reference: Any, index: int, output: str) -> float:
    """Max |original at ORT_DISABLE_ALL - original at ORT_ENABLE_ALL| of ``output`` on run ``index``."""
    try:
        a = reference.recorded_output(index, output, AS_WRITTEN).astype(np.float64)
        b = reference.recorded_output(index, output, INTEGER_KERNELS).astype(np.float64)
    except KeyError:
        return 0.0
    return float(np.max(np.abs(a - b), initial=0.0)) if a.shape == b.shape else float("inf")


@contextmanager
def _fed(model: onnx.ModelProto, name: str, elem_type: int) -> Iterator[onnx.ModelProto]:
    """``model`` (changed in place, restored after) with tensor ``name`` a graph input
    instead of its producer's output (no copy of the weights)."""
    node = producers([model.graph]).get(name)
    if node is None:
        raise KeyError(name)
    index = list(node.output).index(name)
    node.output[index] = f"{name}__tie_computed"
    value = model.graph.input.add()
    value.name = name
    value.type.tensor_type.elem_type = elem_type
    try:
        yield model
    finally:
        node.output[index] = name
        del model.graph.input[len(model.graph.input) - 1]


def _between(model: onnx.ModelProto, start: str, end: str, types: Mapping[str, int]) -> onnx.ModelProto:
    from .localize import Paths

    return Paths(model, types).between(start, end)
