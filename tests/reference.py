"""A direct numpy reference of a PoolSpec, used to check that our reading of
the attributes matches onnxruntime before any lowering is trusted."""

from __future__ import annotations

import itertools

import numpy as np

from rewriter.spec import PoolSpec


def reference_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """Pool ``x`` [N, C, *spatial] exactly as the spec says, window by window."""
    n, c = x.shape[:2]
    out = np.zeros((n, c) + spec.out_shape, dtype=np.float64)
    for pos in itertools.product(*[range(a.out_size) for a in spec.axes]):
        tap_lists = [[t for t in a.taps(o) if 0 <= t < a.size] for a, o in zip(spec.axes, pos)]
        window = x[(slice(None), slice(None)) + np.ix_(*tap_lists)] if spec.rank else x
        window = window.reshape(n, c, -1).astype(np.float64)
        if spec.kind == "max":
            value = window.max(axis=2)
        else:
            divisor = np.prod([spec.divisors(i)[o] for i, o in enumerate(pos)])
            value = window.sum(axis=2) / divisor
        out[(slice(None), slice(None)) + pos] = value
    return out
