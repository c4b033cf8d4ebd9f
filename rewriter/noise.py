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

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

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
    finite = np.isfinite(reference)
    if not np.array_equal(finite, np.isfinite(other)):
        return OutputNoise(float("inf"), "the optimized original is non-finite in other places")
    if not finite.any():
        return OutputNoise(0.0)
    return OutputNoise(float(np.max(np.abs(reference[finite].astype(np.float64) - other[finite]))))


def noise_of_run(expected: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], outputs: Iterable[str]) -> dict[str, OutputNoise]:
    """:func:`output_noise` of every graph output of one suite."""
    return {name: output_noise(expected[name], other[name]) for name in outputs if name in expected and name in other}


def allowed_by_noise(floor: Optional[OutputNoise], factor: float) -> float:
    """The error the floor allows (0 when nothing was measured)."""
    return 0.0 if floor is None else factor * floor.max_abs
