"""The exact value of an average, for judging its rewrite.

A max is exact in any precision, so a max pool's rewrite is compared with
onnxruntime bit for bit (within the node check's few ulps). A sum is not: for a
long window onnxruntime's own float32 average is an approximation (its pool sums
25,600 values of a 160x160 map one after another), and a correct rewrite that
sums in another order (one big depthwise conv, a cascade of small ones) may be
closer to the true mean than onnxruntime is. So an average is judged against its
value computed in float64 from the same float32 input, exactly as the ONNX node
defines it (:mod:`rewriter.spec` says which taps and which divisor), and the
rewrite passes when it is no further from that value than onnxruntime itself,
within a small factor, or than a float32 sum of that window can round
(:func:`summation_bound`).

Covered: AveragePool (pads, ceil_mode, dilations, count_include_pad either way),
GlobalAveragePool, and a ReduceMean acting as a pool (computed by onnxruntime in
float64, from the node as written).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import onnx

from ..ops import ONNX_DOMAINS, onnx_opset
from ..spec import SpecError, attribute_support, global_pool_spec, pool_spec_from_attributes, PoolSpec

if TYPE_CHECKING:
    from .comparator import OutputComparison, ToleranceComparator

# Ops whose node check is judged against the exact value.
AVERAGE_OPS = frozenset({"AveragePool", "GlobalAveragePool", "ReduceMean"})

# The rewrite may be this many times further from the exact value than onnxruntime is.
RUNTIME_FACTOR = 4.0
# The exact value follows rewriter.spec, as the lowerings do, so it cannot catch a misreading
# of the attributes that they share. onnxruntime can: when it is further from the exact value
# than this many times the summation bound, the two read the node differently, and the
# rewrite is judged against onnxruntime as before (a dropped tap of a 160x160 window is
# 1/25600 of it; any misread window or divisor of a small one is far more).
CONSISTENCY_FACTOR = 4.0


@dataclass(frozen=True)
class ExactMean:
    """A node's exact output (float64) on one input, with what judging it needs."""

    value: np.ndarray  # the exact mean of every window
    magnitude: float  # the largest mean |x| of a window: the scale of the sum's rounding
    count: int  # the most taps a window sums


class ExactReference:
    """The exact value of one node check's cut-out (one average node reading the piece's
    input), prepared once and evaluated on any number of inputs."""

    def __init__(self, piece: onnx.ModelProto, node: onnx.NodeProto) -> None:
        self.op_type = node.op_type
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.support = attribute_support(node.op_type, onnx_opset(piece.opset_import))
        self._runner = _float64_runner(piece) if node.op_type == "ReduceMean" else None

    @classmethod
    def of(cls, piece: onnx.ModelProto) -> Optional["ExactReference"]:
        """The reference of ``piece``; None when the piece is not one average node."""
        nodes = [n for n in piece.graph.node if n.op_type != "Constant"]
        if len(nodes) != 1 or nodes[0].domain not in ONNX_DOMAINS or nodes[0].op_type not in AVERAGE_OPS:
            return None
        node = nodes[0]
        if not node.input or node.input[0] != piece.graph.input[0].name:
            return None
        reference = cls(piece, node)
        return None if reference.op_type == "ReduceMean" and reference._runner is None else reference

    def mean(self, x: np.ndarray) -> Optional[ExactMean]:
        """The exact output on ``x``; None for an input it does not cover."""
        if not np.issubdtype(x.dtype, np.floating) or x.ndim < 3:
            return None
        x64 = x.astype(np.float64)
        if self._runner is not None:
            return self._runner(x64)
        try:
            if self.op_type == "GlobalAveragePool":
                spec = global_pool_spec("average", x.shape[2:])
            else:
                spec = pool_spec_from_attributes("average", self.attrs, x.shape[2:], **self.support)
        except SpecError:
            return None
        divisor = _divisor(spec)
        value = _window_sums(x64, spec) / divisor
        magnitude = float(np.max(_window_sums(np.abs(x64), spec) / divisor, initial=0.0))
        return ExactMean(value, magnitude, int(np.max(divisor, initial=1)))


def exact_mean(piece: onnx.ModelProto, x: np.ndarray) -> Optional[ExactMean]:
    """The exact output of ``piece`` (one average node reading its input) on ``x``; None
    when the piece is anything else (:class:`ExactReference`, for one input)."""
    reference = ExactReference.of(piece)
    return reference.mean(x) if reference is not None else None


def summation_bound(mean: ExactMean, dtype: np.dtype) -> float:
    """What a correct float32 (or float16) average of these windows may be off by: the
    probabilistic bound on a K-term sum, 2 sqrt(K) u times the window's mean |x|
    (rounding errors of a sum grow like sqrt(K) u, Higham 2002, section 2.8), and at
    least 4 u of it (the divisor and a few stages of a cascade round too)."""
    unit = float(np.finfo(dtype).eps) / 2
    return max(4.0, 2.0 * math.sqrt(mean.count)) * unit * mean.magnitude


def _divisor(spec: PoolSpec) -> np.ndarray:
    """Every output's divisor (onnxruntime's: the product of the per-axis counts)."""
    divisor = np.ones((1, 1), dtype=np.float64)
    for axis in range(spec.rank):
        divisor = np.multiply.outer(divisor, np.asarray(spec.divisors(axis), dtype=np.float64))
    return divisor.reshape((1, 1) + spec.out_shape)


def _window_sums(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """The sum of every window of ``x`` [N, C, *spatial], axis by axis (windows are
    products of per-axis taps); taps in the padding add zero."""
    for i, a in enumerate(spec.axes):
        axis = 2 + i
        widths = [(0, 0)] * x.ndim
        widths[axis] = (a.pad_begin, max(0, a.used_extent - a.pad_begin - a.size))
        padded = np.pad(x, widths)
        total = np.zeros(x.shape[:axis] + (a.out_size,) + x.shape[axis + 1:], dtype=np.float64)
        span = (a.out_size - 1) * a.stride + 1
        for j in range(a.kernel):
            index = [slice(None)] * x.ndim
            index[axis] = slice(j * a.dilation, j * a.dilation + span, a.stride)
            total += padded[tuple(index)]
        x = total
    return x


def _float64_runner(piece: onnx.ModelProto) -> Optional[Callable[[np.ndarray], ExactMean]]:
    """A ReduceMean run by onnxruntime in float64 as written (axes, keepdims,
    noop_with_empty_axes), one session for every input; None without a float64 kernel."""
    from .runners import OrtRunner

    wide = onnx.ModelProto()
    wide.CopyFrom(piece)
    for value in list(wide.graph.input[:1]) + list(wide.graph.output):
        value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    x_name, y_name = wide.graph.input[0].name, wide.graph.output[0].name
    try:
        runner = OrtRunner(wide)
    except Exception:  # no float64 kernel for this form: judged as before
        return None

    def mean(x64: np.ndarray) -> ExactMean:
        value = runner.run({x_name: x64})[y_name]
        magnitude = runner.run({x_name: np.abs(x64)})[y_name]
        return ExactMean(value, float(np.max(magnitude, initial=0.0)), max(1, x64.size // max(1, value.size)))

    return mean


def compare_with_exact(
    comparator: "ToleranceComparator", output: str, suite: str, exact: ExactMean, runtime: np.ndarray, candidate: np.ndarray
) -> "OutputComparison":
    """The candidate's average against the exact value: it passes when its largest error
    there is within the fixed tolerance of the exact value's magnitude, within
    :data:`RUNTIME_FACTOR` times onnxruntime's own largest error on the same input, or
    within :func:`summation_bound` (the last two only with the calibrated default: an
    explicit tolerance is the tolerance). Shape, dtype and non-finite values are checked
    against onnxruntime's output as for any node."""
    from .comparator import OutputComparison, ulp

    plain = comparator.compare(output, suite, runtime, candidate)
    if plain.note or not np.isfinite(plain.max_abs_error) or exact.value.shape != candidate.shape:
        return plain  # a shape, dtype or NaN/inf mismatch: no exact value excuses it
    finite = np.isfinite(exact.value) & np.isfinite(candidate)
    if not finite.any():
        return plain
    truth = exact.value[finite]
    error = float(np.max(np.abs(candidate[finite].astype(np.float64) - truth)))
    runtime_error = float(np.max(np.abs(runtime[finite].astype(np.float64) - truth)))
    scale = float(np.max(np.abs(truth)))
    strict, bound = comparator.fixed_allowed(candidate.dtype, scale), summation_bound(exact, candidate.dtype)
    if runtime_error > max(CONSISTENCY_FACTOR * bound, strict):
        return plain  # onnxruntime reads the node otherwise than rewriter.spec: its output decides
    allowed = strict if comparator.noise_factor is None else max(strict, RUNTIME_FACTOR * runtime_error, bound)
    magnitude = exact.magnitude if exact.magnitude > 0 else 1.0
    return OutputComparison(
        output, suite, error <= allowed, error, error / scale if scale > 0 else (0.0 if error == 0 else float("inf")),
        error / ulp(candidate.dtype, scale), allowed=allowed, strict_allowed=strict,
        exact_error=error / magnitude, runtime_error=runtime_error / magnitude,
    )
