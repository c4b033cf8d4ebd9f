"""Validation's comparator: what "equal" means for one output under one suite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .arrays import finite_difference
from .noise import METHOD as NOISE_METHOD, NOISE_FACTOR, OutputNoise, allowed_by_noise


# atol + rtol * max |reference| of that output. A correct rewrite differs by
# rounding only (a few ulps per pairwise max or per sum); every known bug class
# (zero pads, wrong divisor, dropped ceil window, flipped kernel) is off by far
# more than 1e-3 of the output's magnitude.
DEFAULT_RTOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2, "float64": 1e-12}


@dataclass
class OutputComparison:
    """One output (or one node's output) under one input suite."""

    output: str
    suite: str
    passed: bool
    max_abs_error: float
    rel_error: float  # max_abs_error / max |reference|
    ulp_error: float  # max_abs_error in ulps of max |reference|
    note: str = ""
    allowed: float = 0.0  # the largest max_abs_error that passes
    strict_allowed: float = 0.0  # what the fixed tolerance alone allows
    noise_floor: Optional[float] = None  # the original's own rounding noise there (see rewriter.validate.noise)
    noise_ratio: Optional[float] = None  # max_abs_error / noise_floor
    pool_noise: Optional[float] = None  # the rewritten nodes' own rounding carried here, when measured
    level: str = "ORT_DISABLE_ALL"  # the onnxruntime graph-optimization level both models ran at
    exact: bool = False  # compared exactly: no tolerance, no noise floor (quantized outputs)
    # An average judged against its exact value (see rewriter.validate.exact): the candidate's
    # and onnxruntime's largest errors there, as fractions of the largest window mean |x|.
    exact_error: Optional[float] = None
    runtime_error: Optional[float] = None
    # Quantized averages at ties (rewriter.validate.ties): what rounding the candidate's tie outputs
    # the other way changes here, and the original's own disagreement between its two levels.
    tie_effect: Optional[float] = None
    level_disagreement: Optional[float] = None

    @classmethod
    def failure(cls, output: str, suite: str, note: str) -> "OutputComparison":
        """A comparison that could not even measure an error (shape, dtype, a run that failed)."""
        return cls(output, suite, False, float("inf"), float("inf"), float("inf"), note)


def compare_exact(output: str, suite: str, ref: np.ndarray, cand: np.ndarray) -> OutputComparison:
    """``cand`` against ``ref`` with no tolerance at all: same shape, dtype and values
    (NaN where the reference has NaN). For quantized outputs: integers, and floats that are
    DequantizeLinear of integers. The error is the largest difference (in integer steps
    for integers) and the note says how many values differ."""
    if ref.shape != cand.shape:
        return OutputComparison.failure(output, suite, f"shape {cand.shape} != reference {ref.shape}")
    if ref.dtype != cand.dtype:
        return OutputComparison.failure(output, suite, f"dtype {cand.dtype} != reference {ref.dtype}")
    if np.issubdtype(ref.dtype, np.floating):
        differ = (ref != cand) & ~(np.isnan(ref) & np.isnan(cand))
        finite = differ & np.isfinite(ref) & np.isfinite(cand)
        if (differ & ~finite).any():  # NaN or inf where the other has something else
            diff = float("inf")
        else:
            diff = float(np.max(np.abs(ref[finite].astype(np.float64) - cand[finite]), initial=0.0))
    else:
        wide = np.int64 if ref.dtype != np.uint64 else np.float64
        differ = ref != cand
        diff = float(np.max(np.abs(ref.astype(wide) - cand.astype(wide)), initial=0))
    count = int(np.count_nonzero(differ))
    scale = float(np.max(np.abs(ref[np.isfinite(ref)] if np.issubdtype(ref.dtype, np.floating) else ref).astype(np.float64), initial=0.0))
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    ulp = diff / float(np.spacing(ref.dtype.type(scale))) if np.issubdtype(ref.dtype, np.floating) and scale > 0 else diff
    note = "" if count == 0 else f"exact comparison: {count} of {ref.size} values differ"
    return OutputComparison(output, suite, count == 0, diff, rel, ulp, note, allowed=0.0, strict_allowed=0.0, exact=True)


@dataclass
class ToleranceComparator:
    """Equal means: same shape and dtype, NaN and inf in the same places with the
    same values, and ``max|Δ| <= atol + rtol * max|reference|`` over the finite
    values (with ``ulps`` set instead: ``max|Δ| <= ulps`` ulps of ``max|reference|``).
    ``rtol=None`` picks the default for the output's dtype.

    Given the network's own rounding noise on an output (``noise``, see
    :mod:`rewriter.validate.noise`), the bound is also at least ``noise_factor`` times that
    floor; ``noise_factor=None`` turns the floor off (explicit tolerances do).
    Node checks never pass a floor: they stay within a few ulps."""

    rtol: Optional[float] = None
    atol: float = 0.0
    ulps: Optional[float] = None
    noise_factor: Optional[float] = NOISE_FACTOR

    @classmethod
    def explicit(cls, rtol: Optional[float] = None, atol: Optional[float] = None, ulps: Optional[float] = None) -> "ToleranceComparator":
        """The command line's choice: any explicit tolerance replaces the calibrated default."""
        calibrated = rtol is None and atol is None and ulps is None
        return cls(rtol=rtol, atol=atol or 0.0, ulps=ulps, noise_factor=NOISE_FACTOR if calibrated else None)

    def describe(self) -> dict[str, Any]:
        """The tolerance as the JSON report records it."""
        if self.ulps is not None:
            fixed: dict[str, Any] = {"ulps_of_max_reference": self.ulps, "atol": self.atol}
        else:
            fixed = {"rtol": self.rtol if self.rtol is not None else DEFAULT_RTOL, "atol": self.atol}
        if self.noise_factor is None:
            return {**fixed, "noise_floor": None}
        return {**fixed, "noise_floor": {"method": NOISE_METHOD, "factor": self.noise_factor}}

    def fixed_allowed(self, dtype: np.dtype, scale: float) -> float:
        """What the fixed tolerance allows an output of ``dtype`` whose largest |reference| is ``scale``."""
        if self.ulps is not None:
            return self.atol + self.ulps * ulp(dtype, scale)
        rtol = self.rtol if self.rtol is not None else DEFAULT_RTOL.get(np.dtype(dtype).name, 1e-5)
        return self.atol + rtol * scale

    def compare(
        self, output: str, suite: str, ref: np.ndarray, cand: np.ndarray, noise: Optional[OutputNoise] = None
    ) -> OutputComparison:
        """``cand`` against ``ref`` for ``output`` on ``suite``, given the output's noise floor there if measured."""
        if ref.shape != cand.shape:
            return OutputComparison.failure(output, suite, f"shape {cand.shape} != reference {ref.shape}")
        if ref.dtype != cand.dtype:
            return OutputComparison.failure(output, suite, f"dtype {cand.dtype} != reference {ref.dtype}")
        if not np.issubdtype(ref.dtype, np.floating):
            equal = np.array_equal(ref, cand)
            return OutputComparison(output, suite, equal, 0.0 if equal else float("inf"), 0.0, 0.0, "" if equal else "values differ")
        note, diff, scale, any_finite = finite_difference(ref, cand)
        if note:
            return OutputComparison.failure(output, suite, note)
        if not any_finite:
            return OutputComparison(output, suite, True, 0.0, 0.0, 0.0)
        one_ulp = ulp(ref.dtype, scale)
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        strict = self.fixed_allowed(ref.dtype, scale)
        floor = noise.max_abs if noise is not None and self.noise_factor is not None else None
        allowed = max(strict, allowed_by_noise(noise, self.noise_factor)) if floor is not None else strict
        measured = floor is not None and np.isfinite(floor)
        ratio = None if not measured else (diff / floor if floor > 0 else (0.0 if diff == 0 else float("inf")))
        return OutputComparison(
            output, suite, diff <= allowed, diff, rel, diff / one_ulp, noise.note if floor is not None and noise else "",
            allowed=allowed, strict_allowed=strict, noise_floor=floor, noise_ratio=ratio,
        )


def ulp(dtype: np.dtype, scale: float) -> float:
    """One ulp of ``scale`` in ``dtype`` (the smallest subnormal for 0)."""
    dtype = np.dtype(dtype)
    return float(np.spacing(dtype.type(scale))) if scale > 0 else float(np.finfo(dtype).smallest_subnormal)
