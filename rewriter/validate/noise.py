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

    max_abs: float  # max |optimized - unoptimized| over the finite values; inf: cannot judge
    note: str = ""


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
def perturbed(model: onnx.ModelProto, targets: Sequence[PerturbedTarget]) -> Iterator[onnx.ModelProto]:
    """``model`` with ``t = t' + spread * sign(uniform(-1, 1)) + shift`` at every target
    (``spread`` and ``shift`` are new scalar inputs), restored on exit (no copy of the weights)."""
    graph = model.graph
    made_by = producers([graph])
    targets = [t for t in targets if t.tensor in made_by]
    slots = {t.tensor: (made_by[t.tensor], list(made_by[t.tensor].output).index(t.tensor)) for t in targets}
    added_nodes: list[onnx.NodeProto] = []
    for index, t in enumerate(targets):
        node, slot = slots[t.tensor]
        before = f"{t.tensor}/poolrewrite_unperturbed"
        node.output[slot] = before
        names = [f"{t.tensor}/poolrewrite_{part}" for part in ("uniform", "sign", "scaled", "spread_added")]
        added_nodes += [
            helper.make_node("RandomUniformLike", [before], [names[0]], low=-1.0, high=1.0, seed=float(index + 1)),
            helper.make_node("Sign", [names[0]], [names[1]]),
            helper.make_node("Mul", [names[1], t.spread], [names[2]]),
            helper.make_node("Add", [before, names[2]], [names[3]]),
            helper.make_node("Add", [names[3], t.shift], [t.tensor]),
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
