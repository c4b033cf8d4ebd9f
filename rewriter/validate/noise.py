"""The network's own rounding noise: how far its outputs move under another
legitimate execution of the same model, on the same inputs.

A deep network amplifies rounding (sigmoid heads with tiny outputs, SE blocks,
softmax), so a fixed relative tolerance refuses correct rewrites of real
models. The end-to-end check instead compares the candidate's error with the
original's disagreement with itself: onnxruntime with all graph optimizations
(Conv+BN folding, Conv+Add+Relu fusion, NCHWc layouts, reordered sums) against
none. Both are the same function, computed with different roundings, so their
gap is a measured floor of what rounding alone does to each output.

The strict guarantee stays per node (each rewritten node alone, within a few
ulps of its window's magnitude); this floor only relaxes the whole-network
comparison, and only by :data:`NOISE_FACTOR` times what was measured.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import helper

from .arrays import finite_difference
from ..graphs import producers
from ..ops import MAX_POOL_OPS, ONNX_DOMAINS
from .quantized import SHAPE_ONLY_OPS

# Another legitimate execution of the original: every fusion onnxruntime has.
NOISE_OPTIMIZATION = "ORT_ENABLE_ALL"

# A candidate may drift up to this many times the measured floor. Measured on
# rewrites of deep networks: correct ones stay at 0.1-1.1x the floor, while every
# known bug class is off by orders of magnitude more (and fails its node check).
NOISE_FACTOR = 4.0

METHOD = f"the original on onnxruntime {NOISE_OPTIMIZATION} vs ORT_DISABLE_ALL, on the same inputs"


@dataclass(frozen=True)
class OutputNoise:
    """The floor of one output on one suite."""

    max_abs: float  # the floor: max |optimized - unoptimized| over the finite values; inf: cannot judge
    note: str = ""
    # Set when the optimized original disagreed with itself beyond what rounding can do
    # (see :func:`judge_optimizer_floor`): that disagreement, not used as a floor, and
    # ``max_abs`` is then the measured rounding floor instead.
    fault: Optional[float] = None
    rounding: Optional[float] = None  # the rounding floor, where it was measured


def output_noise(reference: np.ndarray, other: np.ndarray) -> OutputNoise:
    """How far ``other`` (the original under another execution) is from ``reference``."""
    if reference.shape != other.shape or reference.dtype != other.dtype:
        return OutputNoise(float("inf"), "the optimized original has another shape or dtype")
    if not np.issubdtype(reference.dtype, np.floating):
        return OutputNoise(0.0 if np.array_equal(reference, other) else float("inf"))
    note, diff, _, _ = finite_difference(reference, other)
    if note:
        return OutputNoise(float("inf"), f"the optimized original has {note}")
    return OutputNoise(diff)


def noise_of_run(expected: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], outputs: Iterable[str]) -> dict[str, OutputNoise]:
    """:func:`output_noise` of every graph output of one suite."""
    return {name: output_noise(expected[name], other[name]) for name in outputs if name in expected and name in other}


def allowed_by_noise(floor: Optional[OutputNoise], factor: float) -> float:
    """The error the floor allows: 0 when nothing was measured, and when the floor could
    not be measured (the optimized original moved NaN or inf): unknown noise excuses nothing."""
    return 0.0 if floor is None or not np.isfinite(floor.max_abs) else factor * floor.max_abs


# -- the rewritten pools' own rounding, carried to the outputs -------------------------
#
# The optimizer's floor misses rounding the optimizer never changes: a global
# average over a wide-range map sums in another order in its conv than in
# onnxruntime's pool, and an SE gate and a softmax carry that to the outputs
# while no fusion touches it. The second floor measures exactly that: each
# rewritten node's output, in the candidate, is moved by the error its own
# check measured there (at least 1 ulp of its magnitude), with random signs and
# then all in one direction, and the outputs' movement is taken as the floor.
# Measured only when the optimizer's floor alone would refuse a candidate whose
# every checked node matches.

PERTURBATION_METHOD = "each rewritten node's output moved by its own measured error (random signs, then one sign)"


@dataclass(frozen=True)
class PerturbedTarget:
    """One tensor to move: its name and ONNX element type; its inputs are scalars."""

    tensor: str
    elem_type: int

    @property
    def spread(self) -> str:  # scale of the random-sign part
        return f"{self.tensor}/poolrewrite_noise_spread"

    @property
    def shift(self) -> str:  # the one-direction part
        return f"{self.tensor}/poolrewrite_noise_shift"


@contextmanager
def perturbed(model: onnx.ModelProto, targets: Sequence[PerturbedTarget], relative: bool = False) -> Iterator[onnx.ModelProto]:
    """``model`` with ``t = t' + spread * sign(uniform(-1, 1)) + shift`` at every target
    (``spread`` and ``shift`` are new scalar inputs; ``relative``: both times ``max |t'|``),
    restored on exit (no copy of the weights)."""
    graph = model.graph
    made_by = producers([graph])
    targets = [t for t in targets if t.tensor in made_by]
    slots = {t.tensor: (made_by[t.tensor], list(made_by[t.tensor].output).index(t.tensor)) for t in targets}
    added_nodes: list[onnx.NodeProto] = []
    for index, t in enumerate(targets):
        node, slot = slots[t.tensor]
        before = f"{t.tensor}/poolrewrite_unperturbed"
        node.output[slot] = before
        names = [f"{t.tensor}/poolrewrite_{part}" for part in ("uniform", "sign", "scaled", "spread_added", "abs", "max", "moved", "shifted")]
        spread, shift = t.spread, t.shift
        if relative:  # in units of the tensor's own largest magnitude
            spread, shift = names[6], names[7]
            added_nodes += [
                helper.make_node("Abs", [before], [names[4]]),
                helper.make_node("ReduceMax", [names[4]], [names[5]], keepdims=1),
                helper.make_node("Mul", [names[5], t.spread], [spread]),
                helper.make_node("Mul", [names[5], t.shift], [shift]),
            ]
        added_nodes += [
            helper.make_node("RandomUniformLike", [before], [names[0]], low=-1.0, high=1.0, seed=float(index + 1)),
            helper.make_node("Sign", [names[0]], [names[1]]),
            helper.make_node("Mul", [names[1], spread], [names[2]]),
            helper.make_node("Add", [before, names[2]], [names[3]]),
            helper.make_node("Add", [names[3], shift], [t.tensor]),
        ]
    graph.node.extend(added_nodes)
    for t in targets:
        graph.input.extend([helper.make_tensor_value_info(name, t.elem_type, []) for name in (t.spread, t.shift)])
    try:
        yield model
    finally:
        del graph.node[len(graph.node) - len(added_nodes):]
        if targets:
            del graph.input[len(graph.input) - 2 * len(targets):]
        for t in targets:
            node, slot = slots[t.tensor]
            node.output[slot] = t.tensor


# -- faults, not rounding ---------------------------------------------------------------
#
# The optimizer's floor is a floor of rounding only if the optimized original computes
# the same function. It may not: onnxruntime's layout optimizer trusts value_info, and
# value_info written from -1 dims (Paddle exports) made its NCHWc run of a real detector
# wrong by 347x its output. A floor that large would excuse any candidate. So an
# optimizer floor past SUSPECT_ULPS ulps of the output is checked against what rounding
# can do there, measured directly: the original as written, with every float tensor of
# rank >= 2 that a computing node makes moved by ROUNDING_EPSILON of its own largest
# magnitude, with random signs (rounding-sized errors where the network computes, carried
# to the outputs as the network carries them). An optimizer floor more than FAULT_FACTOR
# times that is a fault: reported, and not used as a floor; the rounding floor stands in.

ROUNDING_METHOD = "the original as written, every computed float tensor moved by 2^-20 of its largest |value| (random signs)"
ROUNDING_EPSILON = 2.0 ** -20  # 16 float32 ulps: more than a reordered or fused sum rounds, relative to its magnitude
SUSPECT_ULPS = 1024.0  # an optimizer floor below this many ulps of max |output| is taken as rounding without a check
FAULT_FACTOR = 100.0
# Ops whose outputs are moved: everything but what only moves, picks or describes values.
_NOT_COMPUTING = frozenset(SHAPE_ONLY_OPS | MAX_POOL_OPS | {
    "GatherElements", "GatherND", "Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike", "ReduceMax",
    "ReduceMin", "Max", "Min", "Relu", "Pad", "Resize", "Upsample", "Where", "TopK", "ArgMax", "ArgMin", "NonZero",
    "Range", "If", "Loop", "Scan", "QuantizeLinear", "DequantizeLinear", "Dropout",
})
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}


def rounding_targets(model: onnx.ModelProto, elem_types: Mapping[str, int], ranks: Mapping[str, int]) -> list[PerturbedTarget]:
    """The tensors the rounding floor moves: float outputs of rank >= 2 of the main graph's
    computing nodes (not of shape arithmetic, whose values decide shapes)."""
    constant = {t.name for t in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if all(i in constant or not i for i in node.input):  # folds to a constant
            constant.update(node.output)
            continue
        if node.op_type in _NOT_COMPUTING or node.domain not in ONNX_DOMAINS:
            continue
        for name in node.output:
            if name and elem_types.get(name) in _FLOATS and ranks.get(name, 0) >= 2:
                targets.append(PerturbedTarget(name, elem_types[name]))
    return targets


def suspect(floor: OutputNoise, reference: np.ndarray) -> bool:
    """Whether an optimizer floor is too large to be taken as rounding without a check."""
    if not np.isfinite(floor.max_abs) or floor.max_abs == 0 or not np.issubdtype(reference.dtype, np.floating):
        return False
    finite = reference[np.isfinite(reference)]
    scale = float(np.max(np.abs(finite), initial=0.0))
    unit = float(np.finfo(reference.dtype).eps) / 2
    return floor.max_abs > SUSPECT_ULPS * unit * scale


def judge_optimizer_floor(floor: OutputNoise, rounding: Optional[float]) -> OutputNoise:
    """The optimizer's floor if it looks like rounding (within :data:`FAULT_FACTOR` of the
    measured ``rounding`` floor); else a fault: the rounding floor stands in. ``rounding``
    None (it could not be measured) leaves the floor as it is."""
    if rounding is None or not np.isfinite(rounding):
        return floor
    if floor.max_abs <= FAULT_FACTOR * rounding:
        return OutputNoise(floor.max_abs, floor.note, rounding=rounding)
    note = (f"the optimized original disagrees with itself by {floor.max_abs:.3g}, "
            f"{floor.max_abs / rounding if rounding > 0 else float('inf'):.3g}x what rounding does there ({rounding:.3g}): "
            "not used as a noise floor")
    return OutputNoise(rounding, note, fault=floor.max_abs, rounding=rounding)
