"""Max pools in a QDQ region: fully quantized pairwise maxes.

A pool between the model's DequantizeLinear and QuantizeLinear is built by the
builder in quantized mode (:meth:`~rewriter.builder.SubgraphBuilder.quantized`):
every value is ``n = q - z`` steps of the input's scale ``s`` (its zero point ``z``),
an integer in ``[qmin - z, qmax - z]`` (255 steps wide). ``max(a, b) = b + relu(a - b)``
is then exact in integers: ``a - b`` spans ``[-255, 255]``, ``relu(a - b)`` spans
``[0, 255]`` (int8 with zero point -128, uint8 with 0, at the same scale ``s``), and
the sum is a value of the pool again (zero point ``z``). Every float op works on a
few values of at most 255 steps, so its result is within float32 rounding of an
integer number of steps and its QuantizeLinear recovers that integer exactly;
onnxruntime's integer kernels (QLinearConv, QLinearAdd: every scale ratio is 1)
compute the same integers.

Only the strategies built of such pairwise maxes run in a QDQ region
(:data:`QDQ_STRATEGIES`): the nested relu chain adds ``t_i - t_(i+1)``, which spans
``[-255, 255]``, to the level before it, and that sum has no 8-bit requantization
before its Relu; the border fixes add a signed correction of the same width.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from ..site import PoolSite
from .checks import Lowering, Refusal

# The MaxPool strategies whose every Add is a pairwise max (or a placement of parts).
QDQ_STRATEGIES = frozenset({"single-tap", "grow-from-reach", "ladder", "profile-padded-copy", "anchored-ladder", "padded-copy"})


def qdq_lowering(site: PoolSite, lowering: Lowering) -> Lowering:
    """The lowering for ``site``: in a QDQ region, only :data:`QDQ_STRATEGIES`."""
    if not site.between_qdq:
        return lowering
    return replace(lowering, max_strategies=tuple(s for s in lowering.max_strategies if s.name in QDQ_STRATEGIES))


def qdq_site_refusal(site: PoolSite) -> Optional[Refusal]:
    """Why a pool between DequantizeLinear and QuantizeLinear is kept: the region is none
    the quantized lowering handles (a float island would not run on an int8 target)."""
    if not site.between_qdq:
        return None
    if site.qdq is None or not site.qdq.usable:
        why = site.qdq.refusal if site.qdq is not None else "its quantization is unknown"
        return Refusal(f"QDQ region not lowered quantized: {why}")
    return None


def qdq_strategy(strategy: str) -> str:
    """The report's name of a strategy built quantized: each axis's with ``qdq``."""
    return " x ".join(f"qdq {part}" for part in strategy.split(" x ")) if strategy else "qdq"
