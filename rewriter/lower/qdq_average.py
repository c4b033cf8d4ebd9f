"""Averages in a QDQ region: rewritten only where every step is exact, else kept.

The original computes ``Q(fl(sum of fl(s * n_i)) / K)``, with ``n_i = q_i - z``. Where
the window sum ``S`` of the ``n_i`` has ``S ≡ K/2 (mod K)`` (same input and output
scale), ``S / K`` lies exactly on a half step of QuantizeLinear, and the rounding error
of the float products and sum decides which way it goes: measured on onnxruntime
1.32, the original itself then differs between ORT_DISABLE_ALL and ORT_ENABLE_ALL
(which runs QLinearAveragePool) on about 1% of the 2x2 windows of random int8 input at
scale 0.0173, so no rewrite can equal it at both levels.

Exact: an input scale that is a power of two, the output's quantization equal to the
input's, an even zero point, and the same power-of-two count ``K = 2^k`` in every window.
Then every ``s * n_i``, their sum and ``/ K`` are exact, a tie is a true tie, and both
levels round it half to even onto the same integer: ORT_DISABLE_ALL rounds ``S / K``
and adds the zero point, QLinearAveragePool rounds ``sum(q_i) / K = S / K + z``, which
agree only for an even ``z`` (measured: at scale 0.25 with zero point -3 the original
differs between the levels on a quarter of the 2x2 windows). The rewrite (one conv
summing the window with int8 weights 1 at scale 2^-k, requantized at scale 1) rounds
the same exact value the same way.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..site import PoolSite
from ..spec import PoolSpec
from .average_pool import folded_groups, plain_fits
from .checks import Lowering, Refusal


def _power_of_two(value: float) -> bool:
    mantissa, _ = math.frexp(float(value))
    return mantissa == 0.5


def qdq_average_refusal(site: PoolSite, spec: PoolSpec, lowering: Lowering) -> Optional[Refusal]:
    """Why an average between DequantizeLinear and QuantizeLinear is kept, or None."""
    assert site.qdq is not None and site.qdq.input is not None
    divisors = [sorted(set(spec.divisors(i))) for i in range(spec.rank)]
    if any(len(d) > 1 for d in divisors):
        which = ", ".join(f"axis {i}: {d}" for i, d in enumerate(divisors) if len(d) > 1)
        return Refusal(f"{site.op_type} in a QDQ region with windows of different counts ({which}): a count that is no power "
                       "of two makes window means that are no exact binary fractions, rounded at a tie of QuantizeLinear "
                       "by the original's float error", spec=spec)
    k = int(np.prod([d[0] for d in divisors]))
    tie = (f"a window whose sum of q - z is {k // 2} mod {k} lands on a rounding tie of QuantizeLinear, and the original's "
           f"float sum of DequantizeLinear values decides it (onnxruntime rounds such ties differently with and without "
           f"graph optimizations)")
    if k & (k - 1):
        return Refusal(f"{site.op_type} in a QDQ region over {k} values per window, no power of two: its means are no exact "
                       f"binary fractions, and {tie}", spec=spec)
    q = site.qdq.input
    if not site.qdq.same_scales:
        return Refusal(f"{site.op_type} in a QDQ region whose output scale or zero point differs from the input's: the "
                       "original rounds its float mean of DequantizeLinear values once, at the output's scale, and that "
                       "float's last bits, which no requantized subgraph reproduces, decide every mean that lies within "
                       "them of a rounding boundary", spec=spec)
    if not _power_of_two(q.scale):
        return Refusal(f"{site.op_type} in a QDQ region at scale {str(q.scale)}, no power of two: {tie}", spec=spec)
    if int(q.zero_point) % 2:
        return Refusal(f"{site.op_type} in a QDQ region with the odd zero point {int(q.zero_point)}: {tie}; onnxruntime's "
                       "QLinearAveragePool rounds the tie with the zero point added, its float path before, which differ "
                       "by one for an odd zero point", spec=spec)
    if len(folded_groups(spec, [True] * spec.rank)) != 1 or not plain_fits(spec, lowering.target.conv_limits):
        return Refusal(f"{site.op_type} in a QDQ region that needs more than one conv: each would round its partial "
                       "mean when requantized", spec=spec)
    return None
