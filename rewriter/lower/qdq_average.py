"""Averages in a QDQ region: rewritten where every rounding is decided alike, else kept.

The original computes ``Q(mean of fl(s_in * n_i))``, ``n_i = q_i - z_in``: the window
mean ``v = S * s_in / (K * s_out)`` of the window sum ``S`` (in output steps), rounded
half to even. Its float error is what differs between implementations:
onnxruntime's float path at ORT_DISABLE_ALL, its QLinearAveragePool at ORT_ENABLE_ALL
(which also adds the zero point before rounding), and any rewrite. Two constructions:

* **Integers** (:class:`PoolPlan`, the builder's quantized mode): an input scale that
  is a power of two, the output's quantization equal to the input's, an even zero
  point and the same power-of-two count ``K = 2^k`` in every window. Then every
  product, sum and ``/ K`` is exact, a tie is a true tie, and all paths round it half
  to even onto the same integer. One conv sums the window with int8 weights 1 at
  scale 2^-k, requantized at the input scale.
* **The model's scales** (:class:`ModelScalePlan`): where no reachable sum lands on a
  tie exactly (:func:`tie_margin`, a rational test), one conv reads the model's
  DequantizeLinear, weighs the window with int8 weights 127 at scale 1/(127 K), and the
  model's QuantizeLinear reads it. The margin by which the reachable means miss the
  ties is computed against a bound on every implementation's float32 rounding: past
  it, every path rounds the same way, proven (odd counts at one scale: a mean is a
  multiple of 1/K, at least 1/(2K) from a tie). Sums within the bound are named in
  the report: there onnxruntime's own levels can round either way, and the validator
  compares the outputs exactly at both.

Where a tie is reachable (one non-power-of-two scale and an even count: DenseNet's 2x2
average at quantize_static's shared scale), onnxruntime's own two levels round those
outputs differently: no construction equals both, and bit-exactness against one of them
is not a property a user can have. Such averages are rewritten all the same (the model-
scale conv; its rounding is within float32 of the exact mean, as the original's is),
and validation allows one step at the outputs whose exact mean lies within float32
rounding of a tie (:mod:`rewriter.validate.ties`). ``keep_tie_averages``
(``--keep-tie-averages``) keeps them instead, with the reason.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..site import PoolSite, Quantization
from ..spec import PoolSpec
from ..profile import concat_violations, conv_violations
from .average_pool import uniform_axes_shape
from .checks import Lowering, PoolPlan, Refusal

UNIT_ROUNDOFF = 2.0 ** -24  # float32


@dataclass(frozen=True)
class TieMargin:
    """How the window means of an average miss QuantizeLinear's rounding ties.

    ``exact_tie``: the smallest window sum that lands on a tie exactly (None: none can).
    ``near``: reachable sums whose mean lies within ``bound`` (float32 rounding, in
    output steps, of any implementation) of a tie; ``nearest`` one of them as
    ``(sum, mean in steps)``.
    """

    exact_tie: Optional[int]
    near: int = 0
    nearest: Optional[tuple[int, float]] = None

    @property
    def proven(self) -> bool:
        return self.exact_tie is None and self.near == 0


def _exact_tie(ratio: Fraction, sums: tuple[int, int], out: Quantization) -> Optional[int]:
    """The smallest |S| in ``sums`` with ``S * ratio`` a half step that decides an output.

    ``S * P / Q`` is a half step iff ``2 S P / Q`` is odd: ``P`` odd, ``Q`` even and
    ``S`` an odd multiple of ``Q / 2``."""
    p, q = ratio.numerator, ratio.denominator
    if p % 2 == 0 or q % 2:
        return None
    lo, hi = out.int_range
    half = q // 2
    for m in range(1, max(abs(sums[0]), abs(sums[1])) // half + 1, 2):
        for s in (m * half, -m * half):
            t = Fraction(s) * ratio + out.zero_point
            if sums[0] <= s <= sums[1] and lo < t < hi:  # a tie past the clamp decides nothing
                return s
    return None


_CHUNK = 1 << 20


def _near_ties(s_values: np.ndarray, ratio: float, out: Quantization, count: int, one_sign: bool, widest: int) -> tuple[np.ndarray, np.ndarray]:
    """Which sums have a mean within float32 rounding of a deciding tie, and the distances."""
    t = s_values * ratio + out.zero_point
    # One sign of n: the terms' magnitude is |S|; both: up to count * max |n|.
    magnitude = np.abs(s_values) if one_sign else float(count * widest)
    bound = 1.01 * ((count + 9) * UNIT_ROUNDOFF * magnitude * ratio + 4 * UNIT_ROUNDOFF * (np.abs(t) + abs(out.zero_point) + 1)) + 1e-9
    half = np.floor(t) + 0.5
    qmin, qmax = out.int_range
    distance = np.abs(t - half)
    return (half > qmin) & (half < qmax) & (distance <= bound), distance


def tie_margin(source: Quantization, outputs: Sequence[Quantization], divisor: int, count: int) -> TieMargin:
    """The ties of a mean of ``count`` values (at most) divided by ``divisor``, read at
    ``source``'s quantization and written at each of ``outputs``'.

    The float bound covers DequantizeLinear's products, any summation order of
    ``count`` terms, the weight or ``1/K`` and the division by the output scale
    (``count + 9`` roundings of the terms' magnitude), and the zero point added
    before rounding (a few roundings of the result)."""
    lo_n, hi_n = source.steps
    sums = (count * lo_n, count * hi_n)
    worst: Optional[TieMargin] = None
    for out in outputs:
        ratio = Fraction(float(source.scale)) / (Fraction(float(out.scale)) * divisor)
        tie = _exact_tie(ratio, sums, out)
        if tie is not None:
            return TieMargin(tie)
        found, nearest = 0, (np.inf, 0)
        for start in range(sums[0], sums[1] + 1, _CHUNK):  # a 160x160 mean has 6.5M sums per sign
            s_values = np.arange(start, min(start + _CHUNK, sums[1] + 1), dtype=np.float64)
            near, distance = _near_ties(s_values, float(ratio), out, count, one_sign=lo_n == 0 or hi_n == 0, widest=max(-lo_n, hi_n))
            found += int(near.sum())
            if near.any():
                i = int(np.argmin(np.where(near, distance, np.inf)))
                nearest = min(nearest, (float(distance[i]), int(s_values[i])))
        if found and (worst is None or found > worst.near):
            worst = TieMargin(None, found, (nearest[1], nearest[1] * float(ratio)))
    return worst or TieMargin(None)


@dataclass(frozen=True)
class ModelScalePlan(PoolPlan):
    """An average in a QDQ region as one conv on the model's own DequantizeLinear values,
    read by the model's QuantizeLinear (no exact tie reachable: :func:`tie_margin`)."""

    margin: TieMargin = TieMargin(None)

    @property
    def strategy(self) -> str:
        return "qdq model-scale conv"

    @property
    def caveat(self) -> str:
        """What the report says of the window sums within float rounding of a tie."""
        if self.margin.exact_tie is not None:
            return (f"window sums of q - z reach QuantizeLinear rounding ties (e.g. {self.margin.exact_tie}); onnxruntime's "
                    "own levels round them differently, and validation allows one step at those outputs")
        if self.margin.proven or self.margin.nearest is None:
            return ""
        s, v = self.margin.nearest
        return (f"{self.margin.near} window sum(s) of q - z lie within float32 rounding of a QuantizeLinear tie "
                f"(e.g. {s}: {v:.7f} steps); onnxruntime's own levels may round them either way")


@dataclass(frozen=True)
class CountBlocksPlan(ModelScalePlan):
    """An average whose windows hold different counts (count_include_pad=0 with pads,
    ceil_mode overhangs) in a QDQ region: one conv per block of windows with one count
    (a run of equal counts on every axis), each on the model's DequantizeLinear values
    with weights ``1/K`` of its own count, requantized at the output's quantization, and
    the blocks concatenated (requantized after each Concat but the last, which the
    model's QuantizeLinear reads). Every output is one conv's mean, rounded once."""

    @property
    def strategy(self) -> str:
        return "qdq model-scale conv per count"


def count_runs(spec: PoolSpec) -> list[list[tuple[int, int, int]]]:
    """Per axis, the runs of consecutive outputs with one divisor: ``(count, first, length)``."""
    runs = []
    for i in range(spec.rank):
        axis, first = [], 0
        for count, run in itertools.groupby(spec.divisors(i)):
            length = len(list(run))
            axis.append((count, first, length))
            first += length
        runs.append(axis)
    return runs


def block_layouts(spec: PoolSpec, block: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    """The depthwise conv of one block of windows (one run per axis): kernel (``1/K``
    on the window's taps, K the block's count), strides, dilations and pads."""
    from .windows import window_run_layout

    layouts = [window_run_layout(a.size, start=a.window_start(first), count=length, stride=a.stride, taps=[1.0] * a.kernel, dilation=a.dilation)
               for a, (_, first, length) in zip(spec.axes, block)]
    kernel = np.ones(())
    for layout in layouts:
        kernel = np.multiply.outer(kernel, np.asarray(layout.taps))
    count = int(np.prod([c for c, _, _ in block]))
    pads = [lay.pad_begin for lay in layouts] + [lay.pad_end for lay in layouts]
    return kernel / count, [lay.stride for lay in layouts], [lay.dilation for lay in layouts], pads


def build_count_blocks(b: Any, x: Any, spec: PoolSpec, out: Quantization) -> Any:
    """Build :class:`CountBlocksPlan`: the blocks' convs, requantized at ``out`` and concatenated axis by axis."""
    runs = count_runs(spec)

    def requantized(t: Any) -> Any:
        return b.dequantize(b.quantize(t, float(out.scale), out.zero_point, out.dtype), float(out.scale), out.zero_point, out.dtype)

    def along(axis: int, prefix: tuple[tuple[int, int, int], ...]) -> Any:
        if axis == spec.rank:
            kernel, strides, dilations, pads = block_layouts(spec, prefix)
            return b.depthwise_conv(x, kernel, strides=strides, dilations=dilations, pads=pads, hint="avg_count")
        parts = [along(axis + 1, prefix + (run,)) for run in runs[axis]]
        if len(parts) == 1:
            return parts[0]
        joined = b.concat([requantized(p) for p in parts], axis)
        return joined if axis == 0 else requantized(joined)

    return along(0, ())


def _counts_plan(site: PoolSite, spec: PoolSpec, lowering: Lowering, divisors: list[list[int]]) -> Union[PoolPlan, Refusal]:
    """:class:`CountBlocksPlan` for an average whose windows hold different counts, or why it is kept."""
    assert site.qdq is not None and site.qdq.input is not None
    outputs = site.qdq.outputs
    counts = sorted({int(np.prod(c)) for c in itertools.product(*divisors)})
    margins = [tie_margin(site.qdq.input, outputs, c, c) for c in counts]
    tie = next((m for m in margins if m.exact_tie is not None), None)
    if tie is not None and lowering.keep_tie_averages:
        return _counts_refusal(site, spec, divisors)
    head = f"{site.op_type} in a QDQ region with windows of different counts"
    if not outputs or any(o != outputs[0] for o in outputs):
        return Refusal(f"{head}: its outputs are quantized differently, and each block of windows is requantized before they are joined", spec=spec)
    target = lowering.target
    for axis, d in enumerate(divisors):
        if len(d) > 1 and target.profile is not None and ("Concat" not in target.ops or concat_violations(axis + 2, spec.rank + 2, target.concat_axes)):
            return Refusal(f"{head}: its blocks of windows are joined by a Concat on spatial axis {axis}, which the target does not run", spec=spec)
    runs = count_runs(spec)
    for block in itertools.product(*runs):
        kernel, strides, dilations, pads = block_layouts(spec, block)
        broken = conv_violations(kernel.shape, strides, dilations, pads, depthwise=True, limits=target.conv_limits)
        if broken:
            limits = "; ".join(f"{v.rule} {v.value} outside {v.limit}" for v in broken)
            return Refusal(f"{head}: the conv of one block of windows breaks the target's limits ({limits})", spec=spec)
    return CountBlocksPlan(spec, margin=tie or max(margins, key=lambda m: m.near))


def _power_of_two(value: float) -> bool:
    mantissa, _ = math.frexp(float(value))
    return mantissa == 0.5


def _counts_refusal(site: PoolSite, spec: PoolSpec, divisors: list[list[int]]) -> Refusal:
    """Why an average whose windows hold different counts is kept (``keep_tie_averages``):
    the counts that reach a tie and a sum that does."""
    assert site.qdq is not None and site.qdq.input is not None
    which = ", ".join(f"axis {i}: {d}" for i, d in enumerate(divisors) if len(d) > 1)
    counts = sorted({int(np.prod(c)) for c in itertools.product(*divisors)})
    tying = [(c, tie_margin(site.qdq.input, site.qdq.outputs, c, c).exact_tie) for c in counts]
    tying = [(c, t) for c, t in tying if t is not None]
    head = f"{site.op_type} in a QDQ region with windows of different counts ({which}; windows of {counts} values)"
    ties = ", ".join(f"{c} (a sum of q - z of {t})" for c, t in tying)
    return Refusal(f"{head}: the windows of {ties} have their mean exactly on a rounding tie of QuantizeLinear, and "
                   f"the original's float error decides it (onnxruntime rounds such ties differently with and without "
                   f"graph optimizations); kept as asked (keep_tie_averages)", spec=spec)


def qdq_average_plan(site: PoolSite, spec: PoolSpec, lowering: Lowering) -> Union[PoolPlan, Refusal]:
    """The plan of an average between DequantizeLinear and QuantizeLinear, or why it is kept."""
    assert site.qdq is not None and site.qdq.input is not None
    divisors = [sorted(set(spec.divisors(i))) for i in range(spec.rank)]
    if any(len(d) > 1 for d in divisors):
        return _counts_plan(site, spec, lowering, divisors)
    broken = conv_violations(*uniform_axes_shape(spec, [True] * spec.rank), depthwise=True, limits=lowering.target.conv_limits)
    if broken:
        limits = "; ".join(f"{v.rule} {v.value} outside {v.limit}" for v in broken)
        return Refusal(f"{site.op_type} in a QDQ region whose one conv breaks the target's limits ({limits}), and more "
                       "convs would each round a partial mean when requantized", spec=spec)
    k = int(np.prod([d[0] for d in divisors]))
    q = site.qdq.input
    if site.qdq.same_scales and _power_of_two(q.scale) and not int(q.zero_point) % 2 and not k & (k - 1):
        return PoolPlan(spec)
    margin = tie_margin(q, site.qdq.outputs, k, int(np.prod([a.kernel for a in spec.axes])))
    if margin.exact_tie is None or not lowering.keep_tie_averages:
        # Reachable ties are the original's float noise at both levels: the rewrite is
        # as right as the original, and validation allows one step at those outputs.
        return ModelScalePlan(spec, margin=margin)
    tie = (f"a window whose sum of q - z is {margin.exact_tie} has its mean exactly on a rounding tie of QuantizeLinear, "
           f"and the original's float error decides it (onnxruntime rounds such ties differently with and without graph "
           f"optimizations); kept as asked (keep_tie_averages)")
    if site.qdq.same_scales and _power_of_two(q.scale) and int(q.zero_point) % 2:
        return Refusal(f"{site.op_type} in a QDQ region with the odd zero point {int(q.zero_point)}: {tie}; "
                       "QLinearAveragePool rounds the tie with the zero point added, the float path before, which differ "
                       "by one for an odd zero point", spec=spec)
    if site.qdq.same_scales and k & (k - 1):
        return Refusal(f"{site.op_type} in a QDQ region over {k} values per window, no power of two: {tie}", spec=spec)
    return Refusal(f"{site.op_type} in a QDQ region at scale {str(q.scale)}"
                   + ("" if site.qdq.same_scales else f" (output scale {', '.join(str(o.scale) for o in site.qdq.outputs)})")
                   + f": {tie}", spec=spec)
