"""Check a candidate model against its original on onnxruntime.

Three parts, each replaceable on its own (the Polygraphy split):

* data loader: :class:`InputSuite` objects say which inputs to feed;
* runner: :class:`OrtRunner` executes one model (one session, built once);
* comparator: :class:`ToleranceComparator` says what "equal" means.

Inputs are signed and adversarial on purpose. Values in [0, 1) or all ones
cannot expose a zero-padded MaxPool; all-negative windows do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import onnx

from .io import first_line as _first_line

# Graph optimizations off: we validate the graph as written, node by node, so
# that onnxruntime's own fusions can neither hide nor cause a difference.
ORT_OPTIMIZATION = "ORT_DISABLE_ALL"

# Default tolerance: max |candidate - reference| over an output, divided by
# max |reference| of that output. A correct rewrite differs by rounding only
# (a few ulps per pairwise max or per sum); every known bug class (zero pads,
# wrong divisor, dropped ceil window, flipped kernel) is off by >= 1e-2.
DEFAULT_RTOL = {"float32": 1e-5, "float16": 1e-2, "float64": 1e-12}


class ValidationSetupError(ValueError):
    """Validation could not start (for example an unresolved dynamic dimension)."""


# -- data loader ----------------------------------------------------------------


@dataclass(frozen=True)
class InputSuite:
    """A named way to fill float inputs; integers and bools get their own values."""

    name: str
    make_float: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]

    def make(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if dtype == np.bool_:
            return rng.random(shape) < 0.5
        if np.issubdtype(dtype, np.integer):
            return rng.integers(0, 8, shape).astype(dtype)  # small non-negative: ids, indices
        return self.make_float(rng, shape).astype(dtype)


SIGNED_NORMAL = InputSuite("signed-normal", lambda rng, s: rng.standard_normal(s))
ALL_NEGATIVE = InputSuite("all-negative", lambda rng, s: -np.abs(rng.standard_normal(s)) - 0.25)
TIE_HEAVY = InputSuite("tie-heavy-int", lambda rng, s: rng.integers(-10, 11, s).astype(np.float64))
DEFAULT_SUITES: tuple[InputSuite, ...] = (SIGNED_NORMAL, ALL_NEGATIVE, TIE_HEAVY)


@dataclass(frozen=True)
class InputDescription:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def describe_inputs(model: onnx.ModelProto) -> list[InputDescription]:
    """Graph inputs that need a value, with a dynamic batch dimension fixed to 1."""
    initializers = {t.name for t in model.graph.initializer}
    described = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tt = value.type.tensor_type
        dims = []
        for axis, dim in enumerate(tt.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif axis == 0:
                dims.append(1)
            else:
                label = dim.dim_param or "?"
                raise ValidationSetupError(f"input '{value.name}' has dynamic dimension {axis} ('{label}'); give it a static size")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        described.append(InputDescription(value.name, tuple(dims), np.dtype(dtype)))
    return described


def make_feeds(inputs: Sequence[InputDescription], suite: InputSuite, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: suite.make(rng, i.shape, i.dtype) for i in inputs}


# -- runner ---------------------------------------------------------------------


class OrtRunner:
    """One onnxruntime CPU session for one model, built once and reused."""

    def __init__(self, model: onnx.ModelProto) -> None:
        import onnxruntime as ort  # imported lazily: the CLI starts fast without validation

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPTIMIZATION)
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


# -- comparator -------------------------------------------------------------------


@dataclass
class OutputComparison:
    """One output under one input suite."""

    output: str
    suite: str
    passed: bool
    max_abs_error: float
    rel_error: float  # max_abs_error / max |reference|
    ulp_error: float  # max_abs_error in ulps of max |reference|
    note: str = ""


@dataclass
class ToleranceComparator:
    """Equal means: same shape and dtype, NaN and inf in the same places with the
    same values, and finite differences within ``rtol`` of the output's magnitude."""

    rtol: Optional[float] = None

    def compare(self, output: str, suite: str, ref: np.ndarray, cand: np.ndarray) -> OutputComparison:
        def fail(note: str) -> OutputComparison:
            return OutputComparison(output, suite, False, float("inf"), float("inf"), float("inf"), note)

        if ref.shape != cand.shape:
            return fail(f"shape {cand.shape} != reference {ref.shape}")
        if ref.dtype != cand.dtype:
            return fail(f"dtype {cand.dtype} != reference {ref.dtype}")
        if not np.issubdtype(ref.dtype, np.floating):
            equal = np.array_equal(ref, cand)
            return OutputComparison(output, suite, equal, 0.0 if equal else float("inf"), 0.0, 0.0, "" if equal else "values differ")
        ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
        finite = np.isfinite(ref64)
        if not np.array_equal(finite, np.isfinite(cand64)):
            return fail("non-finite values in different places")
        if not np.array_equal(ref64[~finite], cand64[~finite], equal_nan=True):
            return fail("different non-finite values")
        if not finite.any():
            return OutputComparison(output, suite, True, 0.0, 0.0, 0.0)
        diff = float(np.max(np.abs(ref64[finite] - cand64[finite])))
        scale = float(np.max(np.abs(ref64[finite])))
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        ulp = diff / float(np.spacing(ref.dtype.type(scale))) if scale > 0 else (0.0 if diff == 0 else float("inf"))
        rtol = self.rtol if self.rtol is not None else DEFAULT_RTOL.get(ref.dtype.name, 1e-5)
        return OutputComparison(output, suite, rel <= rtol, diff, rel, ulp)


# -- driver ---------------------------------------------------------------------


@dataclass
class ValidationResult:
    passed: bool
    comparisons: list[OutputComparison] = field(default_factory=list)
    rtol: Optional[float] = None

    @property
    def worst(self) -> Optional[OutputComparison]:
        if not self.comparisons:
            return None
        return max(self.comparisons, key=lambda c: (not c.passed, c.rel_error))

    def summary(self) -> str:
        w = self.worst
        if w is None:
            return "validation: nothing compared"
        verdict = "passed" if self.passed else "FAILED"
        detail = w.note or f"max abs error {w.max_abs_error:.3g}, {w.rel_error:.3g} of max |reference|, {w.ulp_error:.3g} ulp"
        return f"validation {verdict}: worst output '{w.output}' on {w.suite} inputs: {detail}"

    def to_dict(self) -> dict[str, Any]:
        w = self.worst
        return {
            "passed": self.passed,
            "ort_graph_optimization": ORT_OPTIMIZATION,
            "rtol": self.rtol if self.rtol is not None else DEFAULT_RTOL,
            "worst": asdict(w) if w else None,
            "comparisons": [asdict(c) for c in self.comparisons],
        }


def validate_models(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    *,
    suites: Iterable[InputSuite] = DEFAULT_SUITES,
    comparator: Optional[ToleranceComparator] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> ValidationResult:
    """Run both models on every suite and compare every graph output."""
    comparator = comparator or ToleranceComparator()
    inputs = describe_inputs(original)
    try:
        reference = OrtRunner(original)
    except Exception as err:  # onnxruntime raises several unrelated types
        raise ValidationSetupError(f"the original model does not load in onnxruntime: {_first_line(err)}") from err
    try:
        tested = OrtRunner(candidate)
    except Exception as err:
        note = f"candidate does not load in onnxruntime: {_first_line(err)}"
        return ValidationResult(False, [OutputComparison("<session>", "-", False, *(3 * [float("inf")]), note)], comparator.rtol)
    if reference.output_names != tested.output_names:
        raise ValidationSetupError(f"graph outputs differ: {reference.output_names} vs {tested.output_names}")
    result = ValidationResult(passed=True, rtol=comparator.rtol)
    suites = list(suites)
    for index, suite in enumerate(suites):
        if progress:
            progress(f"validating: {suite.name} inputs ({index + 1}/{len(suites)})")
        feeds = make_feeds(inputs, suite, seed)
        expected = reference.run(feeds)
        try:
            actual = tested.run(feeds)
        except Exception as err:  # the candidate does not run: that is a failed validation
            note = f"candidate fails in onnxruntime: {_first_line(err)}"
            result.comparisons.append(OutputComparison("<run>", suite.name, False, *(3 * [float("inf")]), note))
            result.passed = False
            continue
        for name in reference.output_names:
            comparison = comparator.compare(name, suite.name, expected[name], actual[name])
            result.comparisons.append(comparison)
            result.passed &= comparison.passed
    return result
