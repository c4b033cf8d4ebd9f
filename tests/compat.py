"""The opsets this environment runs, for the suite at the dependency floors.

Tests build their models at :data:`TEST_OPSET`: 22 with current releases, the newest
opset both onnx and onnxruntime support below that at the floors (21 with
onnxruntime 1.18 / onnx 1.16). A test about a newer opset's own semantics uses
:func:`requires_opset`, which skips it below that opset with the reason.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

NEWEST_TESTED_OPSET = 22


@functools.lru_cache(maxsize=None)
def runtime_runs_opset(opset: int) -> bool:
    """Whether onnxruntime loads and runs a one-Relu model stamped at ``opset``."""
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8 if opset < 21 else 10)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.ones(1, np.float32)})
    except Exception:  # onnxruntime refuses opsets newer than it knows
        return False
    return True


def supported_opset(opset: int) -> bool:
    """Whether both onnx (schemas, checker, shape inference) and onnxruntime know ``opset``."""
    return opset <= onnx.defs.onnx_opset_version() and runtime_runs_opset(opset)


TEST_OPSET = next(o for o in range(NEWEST_TESTED_OPSET, 0, -1) if supported_opset(o))


def requires_opset(opset: int):
    """Skip a test about ``opset``'s own semantics where onnx or onnxruntime predates it."""
    import onnxruntime as ort

    return pytest.mark.skipif(
        not supported_opset(opset),
        reason=f"tests opset {opset}: onnx {onnx.__version__} / onnxruntime {ort.__version__} support opset {TEST_OPSET} at most",
    )


def opsets(*candidates: int) -> list[int]:
    """The ``candidates`` this environment runs (for tests that draw an opset at random)."""
    return [o for o in candidates if supported_opset(o)]
