"""Averages in a QDQ region: kept, with the windows and the tie that make them so.

(Placeholder rule until measured; see docs/lowering.md, "Quantized (QDQ) regions".)
"""

from __future__ import annotations

from typing import Optional

from ..site import PoolSite
from ..spec import PoolSpec
from .checks import Refusal


def qdq_average_refusal(site: PoolSite, spec: PoolSpec) -> Optional[Refusal]:
    """Why an average between DequantizeLinear and QuantizeLinear is kept, or None."""
    return Refusal(f"{site.op_type} between DequantizeLinear and QuantizeLinear: the quantized output could differ at rounding ties", spec=spec)
