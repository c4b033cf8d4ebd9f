"""The numerics claims of docs/lowering.md, measured against onnxruntime's native pools.

MaxPool: at most 1 ulp of the window's magnitude per relu level (pairwise max or nested level).
AveragePool: a few ulps of the window's magnitude.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from measure_numerics import CASES, measure  # noqa: E402


@pytest.mark.parametrize("op,shape,attrs", CASES, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(CASES)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_error_in_window_ulps(op, shape, attrs, dtype):
    result = measure(op, shape, attrs, dtype=dtype, samples=2)
    bound = result["relu_levels"] if "Max" in op else 4
    assert result["worst_ulps"] <= bound, result
