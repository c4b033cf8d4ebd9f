"""Check a candidate model against its original on onnxruntime.

Three parts, each replaceable on its own (the Polygraphy split):

* data loader: :class:`InputSuite` objects say which inputs to feed
  (:func:`load_user_inputs` reads the user's own);
* runner: :class:`OrtRunner` executes one model (one session, built once);
* comparator: :class:`ToleranceComparator` says what "equal" means.

Inputs are signed and adversarial on purpose. Values in [0, 1) or all ones
cannot expose a zero-padded MaxPool; all-negative windows do.

:func:`validate_models` compares every graph output under every suite, then
localizes: each pool node of the original is compared, alone, with whatever
the candidate computes between the same two tensor names, on the activations
the original really produces there. A failure names the node.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .columns import format_columns
from .graphs import weightless_copy
from . import budget, io, wire
from .io import InputError, first_line
from .lower import POOL_OPS, SITE_OPS
from .noise import (
    METHOD as NOISE_METHOD,
    NOISE_FACTOR,
    NOISE_OPTIMIZATION,
    PERTURBATION_METHOD,
    OutputNoise,
    PerturbedTarget,
    allowed_by_noise,
    noise_of_run,
    output_noise,
    perturbed,
)
from .shapes import suggested_dims
from .site import NonNegativity, max_window_source

# Graph optimizations off: we validate the graph as written, node by node, so
# that onnxruntime's own fusions can neither hide nor cause a difference.
ORT_OPTIMIZATION = "ORT_DISABLE_ALL"

# Default tolerance: max |candidate - reference| over an output must not exceed
# atol + rtol * max |reference| of that output. A correct rewrite differs by
# rounding only (a few ulps per pairwise max or per sum); every known bug class
# (zero pads, wrong divisor, dropped ceil window, flipped kernel) is off by far
# more than 1e-3 of the output's magnitude.
DEFAULT_RTOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2, "float64": 1e-12}


class ValidationSetupError(ValueError):
    """Validation could not start (for example an unresolved dynamic dimension)."""


# -- data loader ----------------------------------------------------------------


# Suites fill an input a block of this many values at a time, so the temporaries
# of a suite's formula stay small however big the input is.
SUITE_BLOCK_VALUES = 1 << 20


@dataclass(frozen=True)
class InputSuite:
    """A named way to fill float inputs; integers and bools get their own values.

    ``make_float(rng, shape, dtype)`` returns the values of one block, of shape
    ``(n,)``, for an input of float ``dtype``; they must not depend on their
    position in the input. Compute them in :func:`suite_precision` ``(dtype)``."""

    name: str
    make_float: Callable[[np.random.Generator, tuple[int, ...], np.dtype], np.ndarray]

    def make(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An ``np.ndarray`` of ``shape`` and ``dtype`` (also for a scalar, shape ``()``),
        filled block by block in the input's own precision (no float64 copy of a float32 input)."""
        dtype = np.dtype(dtype)
        out = np.empty(shape, dtype)
        flat = out.reshape(-1)  # a view: ``out`` is fresh and contiguous
        for start in range(0, flat.size, SUITE_BLOCK_VALUES):
            count = min(SUITE_BLOCK_VALUES, flat.size - start)
            if dtype == np.bool_:
                flat[start : start + count] = rng.random(count, dtype=np.float32) < 0.5
            elif np.issubdtype(dtype, np.integer):
                flat[start : start + count] = rng.integers(0, 8, count)  # small non-negative: ids, indices, lengths
            else:
                flat[start : start + count] = self.make_float(rng, (count,), dtype)
        return out


def suite_precision(dtype: np.dtype) -> np.dtype:
    """The dtype suites compute in for an input of ``dtype``: float64 for float64, float32
    otherwise (numpy draws no float16; float32 rounds once more to float16 or bfloat16)."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _signed_normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return rng.standard_normal(shape, dtype=suite_precision(dtype))


def _all_negative(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=suite_precision(dtype))
    np.abs(x, out=x)
    np.negative(x, out=x)
    x -= 0.25  # strictly negative: a zero pad would win every border window
    return x


def _tie_heavy(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return rng.integers(-10, 11, shape).astype(suite_precision(dtype))


def _wide_range(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Signed magnitudes spread evenly over decades: ±10**e, e uniform in [-decades, decades)."""
    decades = 3 if dtype == np.float16 else 6  # float16 overflows past 65504
    work = suite_precision(dtype)
    v = rng.random(shape, dtype=work)
    v *= 2
    v -= 1  # uniform in [-1, 1): its sign and its magnitude are independent, one draw for both
    x = np.abs(v)
    x *= 2 * decades
    x -= decades
    np.power(work.type(10), x, out=x)
    return np.copysign(x, v, out=x)


SIGNED_NORMAL = InputSuite("signed-normal", _signed_normal)
ALL_NEGATIVE = InputSuite("all-negative", _all_negative)
TIE_HEAVY = InputSuite("tie-heavy-int", _tie_heavy)
WIDE_RANGE = InputSuite("wide-range", _wide_range)
DEFAULT_SUITES: tuple[InputSuite, ...] = (SIGNED_NORMAL, ALL_NEGATIVE, TIE_HEAVY, WIDE_RANGE)


@dataclass(frozen=True)
class InputDescription:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def describe_inputs(model: onnx.ModelProto, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> list[InputDescription]:
    """Graph inputs that need a value, with static shapes.

    ``shapes`` fixes dynamic dims by input name; a ``-1`` in it keeps the
    model's dim. A dynamic batch (first) dimension defaults to 1; any other
    unresolved dimension is an error that suggests ``--overwrite-input-shape``.
    A negative ``dim_value`` (Paddle's -1) is dynamic.
    """
    shapes = dict(shapes or {})
    initializers = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    unknown = set(shapes) - set(names)
    if unknown:
        raise ValidationSetupError(f"--input-shape names unknown input(s) {sorted(unknown)}; the inputs are {names}")
    described = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tt = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in tt.shape.dim]
        if value.name in shapes:
            given = list(shapes[value.name])
            if len(given) != len(dims) or any(d is not None and g >= 0 and d != g for d, g in zip(dims, given)):
                raise ValidationSetupError(f"--input-shape {value.name}:{','.join(map(str, given))} does not fit its declared shape {_dims_text(tt)}")
            dims = [d if g < 0 else g for d, g in zip(dims, given)]  # -1: the model's own dim
        if dims and dims[0] is None:
            dims[0] = 1
        for axis, dim in enumerate(dims):
            if dim is None:
                label = tt.shape.dim[axis].dim_param or "?"
                example = f"{value.name}:{suggested_dims(value, dims)}"
                raise ValidationSetupError(
                    f"input '{value.name}' has dynamic dimension {axis} ('{label}'); fix it with --overwrite-input-shape "
                    f"{example} (your deployment's sizes; --input-shape {example} fixes it for validation only)"
                )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        described.append(InputDescription(value.name, tuple(int(d) for d in dims), dtype))
    return described


def _dims_text(tt: onnx.TypeProto.Tensor) -> str:
    return "[" + ",".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?") for d in tt.shape.dim) + "]"


def make_feeds(inputs: Sequence[InputDescription], suite: InputSuite, seed: int = 0) -> dict[str, np.ndarray]:
    """One suite's values for ``inputs``, the same for the same seed (so a suite can be
    regenerated instead of kept). Raises :class:`ValidationSetupError` when they
    cannot fit in the memory available, before allocating them."""
    needed = sum(feed_bytes(i) for i in inputs)
    available = budget.available_memory_bytes()
    if available is not None and needed > available:
        raise ValidationSetupError(
            f"the {suite.name} inputs need {budget.gib(needed)} of memory, {budget.gib(available)} is available{_smaller_shape_hint(inputs)}"
        )
    rng = np.random.default_rng(seed)
    return {i.name: suite.make(rng, i.shape, i.dtype) for i in inputs}


def feed_bytes(description: InputDescription) -> int:
    """Size of one generated input."""
    return int(np.prod(description.shape, dtype=np.int64)) * description.dtype.itemsize


def _smaller_shape_hint(inputs: Sequence[InputDescription]) -> str:
    biggest = max(inputs, key=feed_bytes, default=None)
    if biggest is None:
        return ""
    dims = ",".join(f"D{i}" for i in range(len(biggest.shape)))
    now = "x".join(map(str, biggest.shape)) or "a scalar"
    return f"; {biggest.name} is {now} here: validate at a smaller deployed shape with --overwrite-input-shape {biggest.name}:{dims}"


def load_user_inputs(path: str | os.PathLike, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Read the user's inputs: a ``.npz`` (name -> array), a ``.npy`` (single-input
    models), a TensorProto ``.pb`` file, or a folder of ``input_*.pb`` files as in
    ONNX test data sets (``test_data_set_0/``). Unnamed tensors map to inputs in order.
    """
    p = Path(path)
    initializers = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    try:
        if p.is_dir():
            files = sorted(p.glob("input_*.pb"), key=lambda f: int(f.stem.split("_")[-1]) if f.stem.split("_")[-1].isdigit() else 0)
            if not files:
                raise InputError(f"{p}: no input_*.pb files in this folder")
            tensors = [_read_tensor_pb(f) for f in files]
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return _check_user_inputs({k: data[k] for k in data.files}, names, p)
        elif p.suffix == ".npy":
            return _check_user_inputs({names[0]: np.load(p, allow_pickle=False)} if len(names) == 1 else {}, names, p)
        elif p.suffix == ".pb":
            tensors = [_read_tensor_pb(p)]
        else:
            raise InputError(f"{p}: inputs must be .npz, .npy, .pb or a folder of input_*.pb files")
    except InputError:
        raise
    except FileNotFoundError as err:
        raise InputError(f"{p}: no such file") from err
    except Exception as err:
        raise InputError(f"{p}: cannot read inputs ({first_line(err)})") from err
    arrays = {}
    for index, (tensor_name, array) in enumerate(tensors):
        if tensor_name:
            arrays[tensor_name] = array
        elif index < len(names):
            arrays[names[index]] = array
    return _check_user_inputs(arrays, names, p)


def _read_tensor_pb(path: Path) -> tuple[str, np.ndarray]:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return tensor.name, numpy_helper.to_array(tensor)


def _check_user_inputs(arrays: dict[str, np.ndarray], names: list[str], path: Path) -> dict[str, np.ndarray]:
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in names]
    if missing or extra:
        raise InputError(f"{path}: inputs do not match the model: missing {missing}, unknown {extra}")
    return arrays


# -- runner ---------------------------------------------------------------------


class OrtRunner:
    """One onnxruntime CPU session for one model, built once and reused.

    ``expose`` names intermediate tensors to return as extra outputs, with
    their element types in ``elem_types`` (see :func:`elem_types`).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        expose: Sequence[str] = (),
        elem_types: Optional[Mapping[str, int]] = None,
        optimization: str = ORT_OPTIMIZATION,
    ) -> None:
        import onnxruntime as ort  # imported lazily: the CLI starts fast without validation

        ort.set_default_logger_severity(4)  # failures reach us as exceptions; keep stderr to one line
        options = ort.SessionOptions()
        options.log_severity_level = 4
        # Prepacking keeps a second, reordered copy of every Conv/MatMul weight: a few
        # runs do not need the speed, and peak memory is at least a copy smaller.
        options.add_session_config_entry("session.disable_prepacking", "1")
        # The memory pattern plans one block for a run's intermediates, about twice what
        # the arena reuses without it (measured on a rewritten MaxPool); a few runs need no plan.
        options.enable_mem_pattern = False
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
        if not wire.has_weights_on_disk(model) and wire.serialized_size(model) < SESSION_FROM_FILE_MIN_BYTES:
            data = _serialize_with_outputs(model, expose, elem_types or {})
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        else:
            # A big model (or one past protobuf's 2 GiB): hand onnxruntime a file with
            # external data. It maps the weights from the file instead of holding a
            # serialized copy and a copy of its own next to ours (peak memory).
            with tempfile.TemporaryDirectory(prefix="onnx-poolrewrite-") as folder:
                path = _save_with_outputs(model, expose, elem_types or {}, Path(folder))
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, dict(feeds))))


class TrueConvolutionRunner:
    """Runs a model as a true-convolution backend would (``--flip-kernels`` output):
    Conv and ConvTranspose from their definition in numpy, every other node on
    onnxruntime one by one (on onnx's reference evaluator when control flow holds
    convs). The convs never touch onnxruntime."""

    def __init__(self, model: onnx.ModelProto, expose: Sequence[str] = (), elem_types: Optional[Mapping[str, int]] = None) -> None:
        from .true_conv import TrueConvolutionEvaluator, TrueConvolutionHybridEvaluator

        copy = onnx.ModelProto()
        copy.ParseFromString(_serialize_with_outputs(model, expose, elem_types or {}))
        if TrueConvolutionHybridEvaluator.applicable(copy):
            self.evaluator = TrueConvolutionHybridEvaluator(copy)
        else:
            self.evaluator = TrueConvolutionEvaluator(copy)
        self.output_names = self.evaluator.output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.evaluator.run(feeds)


@contextmanager
def _extra_outputs(model: onnx.ModelProto, names: Sequence[str], elem_types: Mapping[str, int]) -> Iterator[None]:
    """Temporarily expose ``names`` as graph outputs of ``model`` (no copy of its weights)."""
    existing = {o.name for o in model.graph.output}
    added = [n for n in names if n not in existing]
    for name in added:
        value = model.graph.output.add()
        value.name = name
        if elem_types.get(name):  # onnxruntime also takes an untyped output
            value.type.tensor_type.elem_type = elem_types[name]
    try:
        yield
    finally:
        if added:
            del model.graph.output[len(model.graph.output) - len(added):]


def _serialize_with_outputs(model: onnx.ModelProto, names: Sequence[str], elem_types: Mapping[str, int]) -> bytes:
    with _extra_outputs(model, names, elem_types):
        return model.SerializeToString()


def _save_with_outputs(model: onnx.ModelProto, names: Sequence[str], elem_types: Mapping[str, int], folder: Path) -> Path:
    """Write ``model`` (plus extra outputs) into ``folder``, its large weights in one
    external file that onnxruntime maps; ``model`` ends as it began."""
    path = folder / "model.onnx"
    with _extra_outputs(model, names, elem_types):
        wire.save_with_external_data(model, path, "weights.bin")
    return path


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference can type; weights are not copied."""
    return _inferred_tensors(model, [])[0]


# -- comparator -------------------------------------------------------------------


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
    noise_floor: Optional[float] = None  # the original's own rounding noise there (see rewriter.noise)
    noise_ratio: Optional[float] = None  # max_abs_error / noise_floor
    pool_noise: Optional[float] = None  # the rewritten nodes' own rounding carried here, when measured


@dataclass
class ToleranceComparator:
    """Equal means: same shape and dtype, NaN and inf in the same places with the
    same values, and ``max|Δ| <= atol + rtol * max|reference|`` over the finite
    values (with ``ulps`` set instead: ``max|Δ| <= ulps`` ulps of ``max|reference|``).
    ``rtol=None`` picks the default for the output's dtype.

    Given the network's own rounding noise on an output (``noise``, see
    :mod:`rewriter.noise`), the bound is also at least ``noise_factor`` times that
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
        if self.ulps is not None:
            fixed: dict[str, Any] = {"ulps_of_max_reference": self.ulps, "atol": self.atol}
        else:
            fixed = {"rtol": self.rtol if self.rtol is not None else DEFAULT_RTOL, "atol": self.atol}
        if self.noise_factor is None:
            return {**fixed, "noise_floor": None}
        return {**fixed, "noise_floor": {"method": NOISE_METHOD, "factor": self.noise_factor}}

    def compare(
        self, output: str, suite: str, ref: np.ndarray, cand: np.ndarray, noise: Optional[OutputNoise] = None
    ) -> OutputComparison:
        def fail(note: str) -> OutputComparison:
            return OutputComparison(output, suite, False, float("inf"), float("inf"), float("inf"), note)

        if ref.shape != cand.shape:
            return fail(f"shape {cand.shape} != reference {ref.shape}")
        if ref.dtype != cand.dtype:
            return fail(f"dtype {cand.dtype} != reference {ref.dtype}")
        if not np.issubdtype(ref.dtype, np.floating):
            equal = np.array_equal(ref, cand)
            return OutputComparison(output, suite, equal, 0.0 if equal else float("inf"), 0.0, 0.0, "" if equal else "values differ")
        note, diff, scale, any_finite = _finite_difference(ref, cand)
        if note:
            return fail(note)
        if not any_finite:
            return OutputComparison(output, suite, True, 0.0, 0.0, 0.0)
        ulp = float(np.spacing(ref.dtype.type(scale))) if scale > 0 else float(np.finfo(ref.dtype).smallest_subnormal)
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        if self.ulps is not None:
            strict = self.atol + self.ulps * ulp
        else:
            rtol = self.rtol if self.rtol is not None else DEFAULT_RTOL.get(ref.dtype.name, 1e-5)
            strict = self.atol + rtol * scale
        floor = noise.max_abs if noise is not None and self.noise_factor is not None else None
        allowed = max(strict, allowed_by_noise(noise, self.noise_factor)) if floor is not None else strict
        ratio = None if floor is None else (diff / floor if floor > 0 else (0.0 if diff == 0 else float("inf")))
        return OutputComparison(
            output, suite, diff <= allowed, diff, rel, diff / ulp, noise.note if floor is not None and noise else "",
            allowed=allowed, strict_allowed=strict, noise_floor=floor, noise_ratio=ratio,
        )


def _finite_difference(ref: np.ndarray, cand: np.ndarray) -> tuple[str, float, float, bool]:
    """``(failure note or "", max|ref - cand|, max|ref|, any finite value)`` over the
    finite values; NaN and inf must match in place and value. In float64, a block
    at a time: no float64 copy of a whole output."""
    r, c = ref.reshape(-1), cand.reshape(-1)
    diff = scale = 0.0
    any_finite = False
    for start in range(0, r.size, SUITE_BLOCK_VALUES):
        r64 = r[start : start + SUITE_BLOCK_VALUES].astype(np.float64)
        c64 = c[start : start + SUITE_BLOCK_VALUES].astype(np.float64)
        finite = np.isfinite(r64)
        moved = finite != np.isfinite(c64)
        if moved.any():
            where = [int(i) for i in np.unravel_index(start + int(np.argmax(moved)), ref.shape)]
            return f"non-finite values in different places (first at index {where})", 0.0, 0.0, False
        if not np.array_equal(r64[~finite], c64[~finite], equal_nan=True):
            return "different non-finite values", 0.0, 0.0, False
        if finite.all():
            np.subtract(r64, c64, out=c64)
        elif finite.any():
            r64, c64 = r64[finite], r64[finite] - c64[finite]
        else:
            continue
        any_finite = True
        diff = max(diff, float(np.max(np.abs(c64))))
        scale = max(scale, float(np.max(np.abs(r64))))
    return "", diff, scale, any_finite


# Models at least this big reach onnxruntime as a file with external data (see OrtRunner).
SESSION_FROM_FILE_MIN_BYTES = 32 << 20


# -- driver ---------------------------------------------------------------------


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
    # Per run of the real activations: (max abs error, max |reference|) at the node.
    errors_by_run: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)


@dataclass
class ValidationResult:
    passed: bool
    comparisons: list[OutputComparison] = field(default_factory=list)
    nodes: list[NodeCheck] = field(default_factory=list)
    tolerance: dict[str, Any] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def worst(self) -> Optional[OutputComparison]:
        """The comparison closest to (or furthest past) what it is allowed."""
        if not self.comparisons:
            return None
        return max(self.comparisons, key=lambda c: (not c.passed, _margin(c), c.rel_error))

    @property
    def failed_nodes(self) -> list[NodeCheck]:
        return [n for n in self.nodes if n.passed is False]

    @property
    def unchecked_nodes(self) -> list[NodeCheck]:
        """Nodes that could not be cut out and compared alone (see :class:`NodeCheck`)."""
        return [n for n in self.nodes if n.passed is None]

    def per_output(self) -> list[dict[str, Any]]:
        """For each graph output, its worst suite: the candidate's error, the noise
        floor there, their ratio, what was allowed, and the verdict."""
        worst: dict[str, OutputComparison] = {}
        for c in self.comparisons:
            if c.output.startswith("<"):
                continue
            if c.output not in worst or (not c.passed, _margin(c)) > (not worst[c.output].passed, _margin(worst[c.output])):
                worst[c.output] = c
        return [
            {
                "output": c.output, "suite": c.suite, "error": c.max_abs_error, "rel_error": c.rel_error,
                "noise_floor": c.noise_floor, "pool_noise_floor": c.pool_noise, "ratio": c.noise_ratio, "allowed": c.allowed,
                "passed": c.passed,
            }
            for c in worst.values()
        ]

    def output_table(self, limit: int = 12) -> str:
        """One row per graph output (its worst suite): error, noise floor, ratio, verdict."""
        rows = [
            [
                r["output"], r["suite"], f"{r['error']:.3g}",
                "-" if r["noise_floor"] is None else f"{r['noise_floor']:.3g}",
                "-" if r["ratio"] is None else f"{r['ratio']:.2g}x" if np.isfinite(r["ratio"]) else "inf", f"{r['allowed']:.3g}", "ok" if r["passed"] else "FAIL",
            ]
            for r in self.per_output()
        ]
        headers = ["output", "worst suite", "max abs error", "noise floor", "ratio", "allowed", "verdict"]
        shown = sorted(rows, key=lambda r: r[-1] != "FAIL")[:limit]
        lines = format_columns(headers, shown, right=(2, 3, 4, 5))
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more output(s) (see --report)")
        return "\n".join(lines)

    def summary(self) -> str:
        w = self.worst
        if w is None:
            return "validation: nothing compared"
        verdict = "passed" if self.passed else "FAILED"
        failed = self.failed_nodes
        if not self.passed and not w.passed and not failed and not w.note:
            return f"validation FAILED: {_drift(w, self.nodes)}{_unchecked(self.unchecked_nodes)}"
        detail = w.note or f"max abs error {w.max_abs_error:.3g}, {w.rel_error:.3g} of max |reference|, {w.ulp_error:.3g} ulp"
        if not w.note and w.noise_floor:
            detail += f", {w.noise_ratio:.2g}x the network's own rounding noise ({w.noise_floor:.3g})"
        text = f"validation {verdict}: worst output '{w.output}' on {w.suite} inputs: {detail}"
        if failed:
            shown = ", ".join(f"'{n.name or n.output}' ({n.op_type}, {n.note or f'{n.rel_error:.3g} of max |reference|'})" for n in failed[:3])
            more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
            text += f"; failing node(s): {shown}{more}"
        elif not self.passed:
            text += _unchecked(self.unchecked_nodes)
        return text

    def to_dict(self) -> dict[str, Any]:
        w = self.worst
        return {
            "passed": self.passed,
            "ort_graph_optimization": ORT_OPTIMIZATION,
            "tolerance": self.tolerance,
            "suites": self.suites,
            "worst": asdict(w) if w else None,
            "outputs": self.per_output(),
            "comparisons": [asdict(c) for c in self.comparisons],
            "nodes": [{k: v for k, v in asdict(n).items() if k != "errors_by_run"} for n in self.nodes],
            "seconds": round(self.seconds, 3),
        }


def _margin(c: OutputComparison) -> float:
    """Error over what is allowed: above 1 fails."""
    if c.max_abs_error == 0:
        return 0.0
    return c.max_abs_error / c.allowed if c.allowed > 0 else float("inf")


def _drift(w: OutputComparison, nodes: Sequence["NodeCheck"]) -> str:
    """Why outputs failed when no node did: how far past the network's own noise."""
    checked = [n for n in nodes if n.passed is not None]
    lead = "every node matches; " if checked and len(checked) == len(nodes) else f"{len(checked)} node(s) checked alone match; " if checked else ""
    where = f"output '{w.output}' on {w.suite} inputs: max abs error {w.max_abs_error:.3g} ({w.rel_error:.3g} of max |reference|)"
    if w.noise_floor:
        return (
            f"{lead}the outputs drift {w.noise_ratio:.3g}x beyond the network's own rounding noise: {where}, "
            f"noise floor {w.noise_floor:.3g}, allowed {w.allowed:.3g}"
        )
    if w.noise_floor == 0:
        return f"{lead}{where} exceeds the tolerance {w.allowed:.3g}; the original shows no rounding noise there"
    return f"{lead}{where} exceeds the tolerance {w.allowed:.3g}"


def _unchecked(nodes: list[NodeCheck]) -> str:
    if not nodes:
        return ""
    shown = ", ".join(f"'{n.name or n.output}' ({n.note})" for n in nodes[:3])
    more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
    return f"; node(s) that could not be checked alone: {shown}{more}"


@dataclass
class ReferenceRun:
    """What the original computed on every suite (Polygraphy's saved run results).
    Recorded once and compared with any number of candidates, so the original's
    weights need not stay in memory while a candidate runs.

    Nothing big is held for all suites at once: a suite's inputs are regenerated
    from its seed when asked for (:meth:`suite_feeds`; the user's inputs are kept
    as given), an exposed tensor that is a graph input is that run's input, and
    recorded arrays of :data:`budget.SPILL_MIN_BYTES` or more wait in a temporary
    folder, loaded one at a time (:meth:`recorded_output`)."""

    skeleton: onnx.ModelProto  # the original's graph without its large weights
    suites: list[InputSuite]
    seed: int
    inputs: list[InputDescription]  # what every suite fills
    user_inputs: Optional[dict[str, np.ndarray]]
    recorded: list[dict[str, Any]]  # per run: graph outputs and exposed tensors, arrays or files of ``spill``
    exposed: list[str]  # the pool inputs recorded for localization
    types: dict[str, int]
    spill: budget.SpillFolder = field(default_factory=budget.SpillFolder)
    # Per suite, each graph output's rounding noise (empty when not measured).
    noise: list[dict[str, OutputNoise]] = field(default_factory=list)

    @property
    def run_names(self) -> list[str]:
        """One name per run: the suites', then ``"user"`` for the user's inputs."""
        return [s.name for s in self.suites] + (["user"] if self.user_inputs else [])

    def suite_feeds(self, index: int) -> dict[str, np.ndarray]:
        """The inputs of run ``index`` (see :attr:`run_names`), made anew for a suite."""
        if 0 <= index < len(self.suites):
            return make_feeds(self.inputs, self.suites[index], self.seed)
        if self.user_inputs and index == len(self.suites):
            return dict(self.user_inputs)
        raise IndexError(f"run {index} of {len(self.run_names)}")

    def recorded_output(self, index: int, name: str) -> np.ndarray:
        """What the original computed for ``name`` (a graph output or an exposed tensor) on run ``index``."""
        kept = self.recorded[index].get(name)
        if kept is not None:
            return budget.SpillFolder.load(kept)
        if name in self.exposed:  # a graph input: the run's own input
            return self.suite_feeds(index)[name]
        raise KeyError(name)

    @property
    def feeds(self) -> Sequence[tuple[str, dict[str, np.ndarray]]]:
        """``(run name, inputs)`` per run, made when indexed (a lazy sequence: keep one at a time)."""
        return _LazySequence(len(self.run_names), lambda i: (self.run_names[i], self.suite_feeds(i)))

    @property
    def outputs(self) -> Sequence[Mapping[str, np.ndarray]]:
        """Per run, a mapping of what :meth:`recorded_output` gives, loaded on first lookup."""
        return _LazySequence(len(self.recorded), lambda i: _RecordedRun(self, i))

    def held_bytes(self) -> int:
        """Bytes of arrays this object holds in memory (not counting files)."""
        arrays = [v for run in self.recorded for v in run.values() if isinstance(v, np.ndarray)]
        return sum(a.nbytes for a in arrays + list((self.user_inputs or {}).values()))

    def close(self) -> None:
        """Remove the recorded files now (they also go when this object is collected)."""
        self.spill.close()


class _LazySequence(Sequence):
    def __init__(self, length: int, make: Callable[[int], Any]) -> None:
        self._length, self._make = length, make

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._make(index)


class _RecordedRun(Mapping):
    """One run's recorded tensors, each loaded on first lookup and kept while this object lives."""

    def __init__(self, reference: ReferenceRun, index: int) -> None:
        self._reference, self._index, self._loaded = reference, index, {}
        inputs = [n for n in reference.exposed if n not in reference.recorded[index]]
        self._names = list(reference.recorded[index]) + inputs

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._loaded:
            self._loaded[name] = self._reference.recorded_output(self._index, name)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def record_reference(
    original: onnx.ModelProto,
    *,
    suites: Iterable[InputSuite] = DEFAULT_SUITES,
    user_inputs: Optional[Mapping[str, np.ndarray]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    localize: Optional[Sequence[str]] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    measure_noise: bool = True,
) -> ReferenceRun:
    """Run the original on onnxruntime over every suite (and the user's inputs).

    ``localize`` names output tensors of pool nodes to check one by one later
    (default: every pool node); their inputs are recorded too.
    ``measure_noise`` also runs the original with all graph optimizations, to
    measure each output's own rounding noise (:mod:`rewriter.noise`).
    Raises :class:`ValidationSetupError` when the original does not run, or when
    validation would need more memory than is available (checked before anything
    big is allocated, see :func:`budget.estimate_validation_memory`).
    """
    suites = list(suites)
    user_inputs = dict(user_inputs) if user_inputs else None
    user_shapes = {k: v.shape for k, v in (user_inputs or {}).items()}
    inputs = describe_inputs(original, {**user_shapes, **dict(input_shapes or {})}) if suites else []
    types, sizes, ranks = _inferred_tensors(original, inputs)
    nodes = _localizable_nodes(original, None, localize, ranks=ranks)
    producer = NonNegativity.of_graphs([original.graph]).producer if nodes else None
    # Each pool's input, and where a chain of "same" MaxPools leading to it starts
    # (compare_with_reference checks a pool of pools from there).
    expose = sorted({n.input[0] for n in nodes} | {max_window_source(n.input[0], producer) for n in nodes if producer})
    graph_inputs = set(_needed_inputs(original))
    to_record = [name for name in expose if name not in graph_inputs]  # a graph input is each run's own input
    runs = len(suites) + bool(user_inputs)
    _check_memory(inputs, user_inputs, sizes, [o.name for o in original.graph.output] + to_record, runs)
    try:
        runner = OrtRunner(original, expose=to_record, elem_types=types)
    except Exception as err:  # onnxruntime raises several unrelated types
        raise ValidationSetupError(f"the original model does not load in onnxruntime: {first_line(err)}") from err
    reference = ReferenceRun(weightless_copy(original), suites, seed, inputs, user_inputs, [], expose, types)
    for index, suite_name in enumerate(reference.run_names):
        if progress:
            progress(f"validating: the original on {suite_name} inputs ({index + 1}/{runs})")
        feeds = reference.suite_feeds(index)
        try:
            outputs = runner.run(feeds)
        except Exception as err:
            raise ValidationSetupError(f"the original model fails on {suite_name} inputs: {first_line(err)}") from err
        del feeds
        reference.recorded.append({name: reference.spill.keep(outputs.pop(name)) for name in list(outputs)})
        del outputs
    del runner
    io.release_freed_memory()
    if measure_noise:
        reference.noise = _measure_noise(original, reference, progress)
    return reference


def _measure_noise(original: onnx.ModelProto, reference: "ReferenceRun", progress: Optional[Callable[[str], None]]) -> list[dict[str, OutputNoise]]:
    """Each graph output's gap between the original optimized and as written, per run."""
    names = [o.name for o in original.graph.output]
    try:
        runner = OrtRunner(original, optimization=NOISE_OPTIMIZATION)
    except Exception:  # an optimizer failure is onnxruntime's problem: no floor, strict tolerance
        return []
    noise = []
    for index, run_name in enumerate(reference.run_names):
        if progress:
            progress(f"validating: the original's own rounding noise on {run_name} inputs ({index + 1}/{len(reference.run_names)})")
        try:
            optimized = runner.run(reference.suite_feeds(index))
        except Exception:
            noise.append({})
            continue
        expected = {name: reference.recorded_output(index, name) for name in names}
        noise.append(noise_of_run(expected, optimized, names))
        del optimized, expected
    del runner
    io.release_freed_memory()
    return noise


def _inferred_tensors(
    model: onnx.ModelProto, inputs: Sequence[InputDescription]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Element type, size in bytes where the shape is static, and rank, of every
    tensor shape inference resolves with the inputs at the shapes validation feeds."""
    light = weightless_copy(model)
    fixed = {i.name: i.shape for i in inputs}
    for value in light.graph.input:
        if value.name in fixed:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for d in fixed[value.name]:
                shape.dim.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception:
        inferred = light
    ig = inferred.graph
    types, sizes, ranks = {}, {}, {}
    for v in list(ig.input) + list(ig.value_info) + list(ig.output):
        tt = v.type.tensor_type
        types[v.name] = tt.elem_type
        if tt.HasField("shape"):
            ranks[v.name] = len(tt.shape.dim)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if tt.HasField("shape") and None not in dims and tt.elem_type not in (0, onnx.TensorProto.STRING):
            try:
                itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
            except (KeyError, TypeError, ValueError):  # a type numpy cannot hold: size unknown
                continue
            sizes[v.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types, sizes, ranks


def _check_memory(
    inputs: Sequence[InputDescription],
    user_inputs: Optional[Mapping[str, np.ndarray]],
    sizes: Mapping[str, int],
    recorded: Sequence[str],
    runs: int,
) -> None:
    """Refuse, before allocating anything big, a validation that cannot fit in memory."""
    available = budget.available_memory_bytes()
    if available is None:
        return
    suite_bytes = sum(feed_bytes(i) for i in inputs)
    estimate = budget.estimate_validation_memory(
        suite_bytes,
        sum(a.nbytes for a in (user_inputs or {}).values()),
        max([*sizes.values(), *(feed_bytes(i) for i in inputs)], default=0),
        [sizes.get(name, 0) for name in recorded],
        runs,
    )
    if estimate.total > available:
        raise ValidationSetupError(
            f"validation would need about {budget.gib(estimate.total)} of memory ({estimate.describe()}), "
            f"{budget.gib(available)} is available{_smaller_shape_hint(inputs)}"
        )


def compare_with_reference(
    reference: ReferenceRun,
    candidate: onnx.ModelProto,
    *,
    comparator: Optional[ToleranceComparator] = None,
    localize: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[str], None]] = None,
    candidate_runner: Callable[..., Any] = OrtRunner,
) -> ValidationResult:
    """Run the candidate on the recorded inputs and compare every graph output,
    then localize: each recorded pool node of the original against the candidate's
    computation between the same tensors. ``candidate_runner`` executes the
    candidate: :class:`OrtRunner`, or :class:`TrueConvolutionRunner` for a model
    meant for a true-convolution backend."""
    started = time.monotonic()
    comparator = comparator or ToleranceComparator()
    original = reference.skeleton
    result = ValidationResult(passed=True, tolerance=comparator.describe(), suites=[s.name for s in reference.suites])
    try:
        tested = candidate_runner(candidate)
    except Exception as err:
        result.comparisons.append(_failure("<session>", "-", f"candidate does not load: {first_line(err)}"))
        result.passed = False
        result.seconds = time.monotonic() - started
        return result
    graph_outputs = [o.name for o in original.graph.output]
    # Another tool may rename inputs or outputs; with the same count, match them by position.
    output_map = _name_map(graph_outputs, [o.name for o in candidate.graph.output])
    input_map = _name_map(_needed_inputs(original), _needed_inputs(candidate))
    missing = [name for name in graph_outputs if output_map.get(name) not in tested.output_names]
    if missing:
        result.comparisons.append(_failure(missing[0], "-", f"candidate lacks graph output(s) {missing}"))
        result.passed = False

    for index, suite_name in enumerate(reference.run_names):
        feeds = expected = actual = None  # the previous run's arrays go before this run's are made
        feeds, expected = reference.suite_feeds(index), reference.outputs[index]
        if progress:
            progress(f"validating: the candidate on {suite_name} inputs ({index + 1}/{len(reference.run_names)})")
        try:
            actual = tested.run({input_map.get(k, k): v for k, v in feeds.items()})
            feeds = None
        except Exception as err:  # the candidate does not run: that is a failed validation
            result.comparisons.append(_failure("<run>", suite_name, f"candidate fails to run: {first_line(err)}"))
            result.passed = False
            continue
        if suite_name != "user" and not _all_finite(expected[name] for name in graph_outputs):
            # Overflow upstream (wide ranges through deep or float16 models): conv-based
            # selection turns inf into NaN, so these inputs cannot judge a rewrite.
            note = "inconclusive: the original's outputs are not all finite on these inputs"
            result.comparisons.append(OutputComparison("<all>", suite_name, True, 0.0, 0.0, 0.0, note))
            continue
        floors = reference.noise[index] if index < len(reference.noise) else {}
        for name in graph_outputs:
            if output_map.get(name) in actual:
                comparison = comparator.compare(name, suite_name, expected[name], actual[output_map[name]], floors.get(name))
                result.comparisons.append(comparison)
                result.passed &= comparison.passed
    feeds = expected = actual = None

    del tested  # peak memory: the candidate's session is done before the node checks start theirs
    io.release_freed_memory()
    recorded = set(reference.exposed)
    site_nodes = [n for n in _localizable_nodes(original, candidate, localize) if n.input[0] in recorded]
    if progress and site_nodes:
        progress(f"validating: {len(site_nodes)} node(s) one by one")
    if site_nodes:
        # Loaded one run at a time when a node check gets to it.
        activations = [(name, functools.partial(reference.recorded_output, index)) for index, name in enumerate(reference.run_names)]
        original_paths, candidate_paths = _Paths(original, reference.types), _Paths(candidate, reference.types)
        nonnegative = NonNegativity.of_graphs([original.graph])

        def source(node: onnx.NodeProto) -> str:
            # A MaxPool of "same" MaxPools is lowered knowing its input is already a max
            # (SPPF): it is checked from the chain's start, where any input is fair.
            start = max_window_source(node.input[0], nonnegative.producer)
            return start if start in recorded else node.input[0]

        result.nodes = [
            _check_node(
                n, original_paths, candidate_paths, activations, comparator, candidate_runner,
                reference.suites, reference.seed, nonnegative(source(n)), source=source(n),
            )
            for n in site_nodes
        ]
    result.passed &= not result.failed_nodes
    if not result.passed and not result.failed_nodes and comparator.noise_factor is not None and any(n.passed for n in result.nodes):
        _relax_by_pool_noise(result, reference, candidate, candidate_runner, comparator, input_map, output_map, progress)
    result.seconds = time.monotonic() - started
    return result


def _relax_by_pool_noise(
    result: ValidationResult,
    reference: ReferenceRun,
    candidate: onnx.ModelProto,
    candidate_runner: Callable[..., Any],
    comparator: ToleranceComparator,
    input_map: Mapping[str, str],
    output_map: Mapping[str, str],
    progress: Optional[Callable[[str], None]],
) -> None:
    """Judge the failing outputs again, against the larger of the optimizer's floor and
    the rewritten nodes' own measured rounding carried to the outputs (see
    :mod:`rewriter.noise`). Only a candidate whose every checked node matches gets here."""
    checked = [n for n in result.nodes if n.passed]
    targets = [PerturbedTarget(n.output, reference.types.get(n.output) or onnx.TensorProto.FLOAT) for n in checked]
    failing = [i for i, c in enumerate(result.comparisons) if not c.passed and np.isfinite(c.max_abs_error)]
    if not failing or len(failing) != sum(not c.passed for c in result.comparisons):
        return  # a shape, dtype or non-finite mismatch: no floor excuses it
    try:
        with perturbed(candidate, targets) as model:
            runner = candidate_runner(model)
    except Exception:
        return
    runs = {c.suite for i, c in enumerate(result.comparisons) if i in failing}
    for index, run_name in enumerate(reference.run_names):
        if run_name not in runs:
            continue
        if progress:
            progress(f"validating: the rewritten nodes' own rounding on {run_name} inputs")
        feeds = {input_map.get(k, k): v for k, v in reference.suite_feeds(index).items()}

        def moved(spread: bool, shift: bool) -> dict[str, np.ndarray]:
            scalars = {}
            for node, t in zip(checked, targets):
                error, magnitude = node.errors_by_run.get(run_name, (0.0, 0.0))
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
                amplitude = max(error, float(np.spacing(dtype.type(magnitude))))
                scalars[t.spread] = np.array(amplitude if spread else 0.0, dtype)
                scalars[t.shift] = np.array(amplitude if shift else 0.0, dtype)
            return runner.run({**feeds, **scalars})

        try:
            base, spread, shift = moved(False, False), moved(True, False), moved(False, True)
        except Exception:
            continue
        for i in failing:
            c = result.comparisons[i]
            name = output_map.get(c.output, c.output)
            if c.suite != run_name or name not in base:
                continue
            pool = max(output_noise(base[name], spread[name]).max_abs, output_noise(base[name], shift[name]).max_abs)
            optimizer = c.noise_floor or 0.0
            again = comparator.compare(
                c.output, c.suite, reference.recorded_output(index, c.output), base[name], OutputNoise(max(optimizer, pool))
            )
            again.pool_noise = pool
            result.comparisons[i] = again
        del base, spread, shift
    del runner
    result.tolerance = {**result.tolerance, "pool_noise_floor": PERTURBATION_METHOD}
    result.passed = all(c.passed for c in result.comparisons) and not result.failed_nodes


def validate_models(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    *,
    suites: Iterable[InputSuite] = DEFAULT_SUITES,
    user_inputs: Optional[Mapping[str, np.ndarray]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    comparator: Optional[ToleranceComparator] = None,
    localize: Optional[Sequence[str]] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    candidate_runner: Callable[..., Any] = OrtRunner,
) -> ValidationResult:
    """Run both models on every suite (and the user's inputs) and compare every graph output:
    :func:`record_reference` on the original, then :func:`compare_with_reference`.

    ``localize`` lists output tensor names of original pool nodes to check one by
    one (default: every pool node whose output the candidate also has).
    The original always runs on onnxruntime.
    """
    started = time.monotonic()
    reference = record_reference(
        original, suites=suites, user_inputs=user_inputs, input_shapes=input_shapes, localize=localize, seed=seed,
        progress=progress, measure_noise=comparator is None or comparator.noise_factor is not None,
    )
    result = compare_with_reference(
        reference, candidate, comparator=comparator, localize=localize, progress=progress, candidate_runner=candidate_runner
    )
    result.seconds = time.monotonic() - started
    return result


def _all_finite(arrays: Iterable[np.ndarray]) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays if np.issubdtype(a.dtype, np.floating))


def _name_map(original: list[str], candidate: list[str]) -> dict[str, str]:
    """Original name -> candidate name: by name, or by position when every name differs."""
    if set(original) <= set(candidate) or len(original) != len(candidate):
        return {name: name for name in original}
    return dict(zip(original, candidate))


def _needed_inputs(model: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers]


def _failure(output: str, suite: str, note: str) -> OutputComparison:
    return OutputComparison(output, suite, False, float("inf"), float("inf"), float("inf"), note)


def _localizable_nodes(
    original: onnx.ModelProto,
    candidate: Optional[onnx.ModelProto],
    only: Optional[Sequence[str]],
    ranks: Optional[Mapping[str, Optional[int]]] = None,
) -> list[onnx.NodeProto]:
    """Original pool nodes whose input and output tensors the candidate also has
    (with no candidate yet: every pool node of the original, or those in ``only``).
    Reduces count as pools when they reduce every axis after the channel axis
    (by ``ranks``, when known) and the candidate computes them otherwise."""
    source = candidate if candidate is not None else original
    producer_op = {o: n.op_type for n in source.graph.node for o in n.output}
    initializers = {t.name: t for t in original.graph.initializer}
    produced = set(producer_op)
    available = produced | {i.name for i in source.graph.input}
    wanted = set(only) if only is not None else None
    nodes = []
    for node in original.graph.node:
        if node.domain not in ("", "ai.onnx") or not node.output:
            continue
        if wanted is not None and node.output[0] not in wanted:
            continue
        if wanted is None and node.op_type not in POOL_OPS:
            rank = (ranks or {}).get(node.input[0]) if node.input else None
            if not _pooling_reduce(node, initializers, rank):
                continue
            if candidate is not None and producer_op.get(node.output[0]) == node.op_type:
                continue  # the candidate still reduces there: nothing rewritten to check
        if node.output[0] in produced and node.input[0] in available:
            nodes.append(node)
    return nodes


def _pooling_reduce(node: onnx.NodeProto, initializers: Mapping[str, onnx.TensorProto], rank: Optional[int]) -> bool:
    """A ReduceMean/ReduceMax over axes 2.. with keepdims (the pass's global pools in disguise)."""
    if node.op_type not in SITE_OPS - POOL_OPS:
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in initializers:
        axes = numpy_helper.to_array(initializers[node.input[1]]).reshape(-1).tolist()
    if not axes or not attrs.get("keepdims", 1):
        return False
    if rank is None:
        return all(a >= 2 or a < 0 for a in axes)
    return rank >= 3 and sorted(int(a) % rank for a in axes) == list(range(2, rank))


def _check_node(
    node: onnx.NodeProto,
    original: "_Paths",
    candidate: "_Paths",
    activations: Sequence[tuple[str, Callable[[str], np.ndarray]]],
    comparator: ToleranceComparator,
    candidate_runner: Callable[..., Any],
    suites: Sequence[InputSuite] = (),
    seed: int = 0,
    input_nonnegative: bool = False,
    source: Optional[str] = None,
) -> NodeCheck:
    """The node alone against the candidate's computation between the same tensors:
    on the activations the original really produces there (``activations``: per
    run, its name and a loader of a tensor by name), and on the adversarial suites
    fed straight into the node (upstream layers can hide all-negative windows).
    ``source`` moves the start back from the node's input (to a chain's start).
    One input of the node is in memory at a time."""
    check = NodeCheck(node.name, node.op_type, node.output[0], passed=None)
    x_name, y_name = source or node.input[0], node.output[0]
    try:
        ref_runner = OrtRunner(original.between(x_name, y_name))
        cand_runner = candidate_runner(candidate.between(x_name, y_name))
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
        for suite in direct_suites if at_node else ():
            x = make_feeds([at_node], suite, seed)[x_name]
            if input_nonnegative:
                np.abs(x, out=x)
            yield f"{suite.name} at the node", x
            del x

    worst: Optional[OutputComparison] = None
    for suite_name, x in node_inputs():
        if suite_name == "user" or _all_finite([x]):  # the rewrite is exact for finite inputs only (see README)
            try:
                expected = ref_runner.run({x_name: x})[y_name]
                actual = cand_runner.run({x_name: x})[y_name]
            except Exception as err:
                check.passed, check.note, check.worst_suite = False, f"fails to run: {first_line(err)}", suite_name
                return check
            del x  # before the comparison's own temporaries
            c = comparator.compare(y_name, suite_name, expected, actual)
            if not suite_name.endswith(" at the node") and np.issubdtype(expected.dtype, np.floating) and expected.size:
                check.errors_by_run[suite_name] = (c.max_abs_error, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)))
            del expected, actual
            if worst is None or (not c.passed, c.rel_error) > (not worst.passed, worst.rel_error):
                worst = c
        x = None  # released before the next input is made
    if worst is not None:
        check.passed = worst.passed
        check.max_abs_error, check.rel_error, check.ulp_error = worst.max_abs_error, worst.rel_error, worst.ulp_error
        check.worst_suite, check.note = worst.suite, worst.note
    return check


class _NotLocalizable(Exception):
    pass


class _Paths:
    """Cuts single-input pieces out of one model: what computes ``y`` from ``x`` alone."""

    def __init__(self, model: onnx.ModelProto, elem_types: Mapping[str, int]) -> None:
        self.model = model
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.order = {id(n): i for i, n in enumerate(model.graph.node)}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.elem_types = elem_types

    def between(self, x_name: str, y_name: str) -> onnx.ModelProto:
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

        inits = [t for name, t in self.initializers.items() if name in used]
        graph = onnx.helper.make_graph(nodes, "localized", [info(x_name)], [info(y_name)], inits)
        return onnx.helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
