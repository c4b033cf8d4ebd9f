"""Seed 000's printed example: a 16x16 integer input and its 2x2/s2 max pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import STRICT_OPS, op_types, pool_model, run

from rewriter import rewrite_model

DATA = Path(__file__).parent / "data" / "seed000_example.txt"


def load_seed_example() -> tuple[np.ndarray, np.ndarray]:
    blocks: dict[str, list[list[float]]] = {}
    current = None
    for line in DATA.read_text().splitlines():
        if line.startswith("# X") or line.startswith("# Y"):
            current = line[2]
            blocks[current] = []
        elif line and not line.startswith("#"):
            blocks[current].append([float(v) for v in line.split()])
    return np.array(blocks["X"], np.float32), np.array(blocks["Y"], np.float32)


def test_seed_table_is_intact():
    x, y = load_seed_example()
    assert x.shape == (16, 16) and y.shape == (8, 8)
    np.testing.assert_array_equal(x.reshape(8, 2, 8, 2).max(axis=(1, 3)), y)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_seed_example_reproduced_exactly(op):
    x, y_max = load_seed_example()
    model = pool_model(op, [1, 1, 16, 16], dict(kernel_shape=[2, 2], strides=[2, 2]))
    new, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten"
    assert op_types(new) <= STRICT_OPS
    feeds = {"x": x.reshape(1, 1, 16, 16)}
    actual = run(new, feeds)[0][0, 0]
    expected = y_max if op == "MaxPool" else x.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(actual, run(model, feeds)[0][0, 0])
