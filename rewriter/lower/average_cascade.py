"""A long average as a cascade of short strided depthwise convs.

A window of ``K = k1 * k2 * ...`` taps that tiles its axis (no padding, stride
equal to the kernel, or a single window) is the mean of ``k1``-means of
``k2``-means ...: one conv per factor, kernel = stride = ``k_i``, weights
``1/k_i``, no padding. Each stage may cover several axes at once (a ``5x5``
stride-5 conv), and each must fit the target's conv limits; this is how a
160-wide global average fits a target whose kernels stop at 31 and strides at 7.
"""

from __future__ import annotations

import heapq
from functools import lru_cache
from itertools import product
from math import prod
from typing import Optional

from ..profile import ConvLimits, conv_violations
from ..spec import AxisSpec, PoolSpec

Stage = tuple[int, ...]  # kernel = stride of one conv, per spatial axis


def tiles(a: AxisSpec) -> bool:
    """Whether the axis's windows tile it from index 0 without padding or overlap:
    ``size // kernel`` outputs, each a mean of its own ``kernel`` taps."""
    return (
        a.pad_begin == a.pad_end == 0
        and a.dilation == 1
        and (a.stride == a.kernel or a.out_size == 1)
        and a.out_size == a.size // a.kernel
    )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def cascade_stages(spec: PoolSpec, limits: ConvLimits) -> Optional[list[Stage]]:
    """The stages whose product per axis is the pool's kernel, each a conv within
    ``limits``: the fewest stages, then the fewest MACs per window. None when an
    axis does not tile or no factorisation fits (a prime extent past the kernel limit).

    MACs are counted per output window, so the choice does not depend on the extent
    (a strided conv with kernel = stride reads each of its inputs once).
    """
    if not all(tiles(a) for a in spec.axes):
        return None
    rank = spec.rank
    kernel = tuple(a.kernel for a in spec.axes)

    @lru_cache(maxsize=None)
    def fits(stage: Stage) -> bool:
        return not conv_violations(stage, stage, [1] * rank, [0] * (2 * rank), True, limits)

    # Dijkstra over what is left to average per axis; costs (stages, MACs) are additive.
    heap: list[tuple[int, int, Stage, list[Stage]]] = [(0, 0, kernel, [])]
    settled: set[Stage] = set()
    while heap:
        stages, macs, left, path = heapq.heappop(heap)
        if left in settled:
            continue
        settled.add(left)
        if all(k == 1 for k in left):
            return path
        for stage in product(*(_divisors(k) for k in left)):
            if all(f == 1 for f in stage) or not fits(stage):
                continue
            rest = tuple(k // f for k, f in zip(left, stage))
            if rest not in settled:
                # One window's stage output has prod(rest) values, each of prod(stage) taps.
                heapq.heappush(heap, (stages + 1, macs + prod(rest) * prod(stage), rest, path + [stage]))
    return None
