"""Comparing two arrays of one output, a block at a time (no float64 copy of a whole output)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .inputs import SUITE_BLOCK_VALUES


def finite_difference(ref: np.ndarray, cand: np.ndarray) -> tuple[str, float, float, bool]:
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


def all_finite(arrays: Iterable[np.ndarray]) -> bool:
    """No NaN or inf in any float array of ``arrays``."""
    return all(bool(np.isfinite(a).all()) for a in arrays if np.issubdtype(a.dtype, np.floating))
