"""Issue 23: ``--target ethos-u`` and ``--target tflite`` on the issue's table of one-pool CNNs.

Each pool is kept where Vela runs it on the NPU (by the independent encoding of
tests/target_limits.py) and rewritten otherwise, or, for the GAP, rewritten because the
profile's measured cost rule says the rewrite is cheaper than Vela's MEAN; every added
node keeps to the target; no added conv is both strided and dilated (what onnx2tf
cannot convert) or dilated at all (same-dilation siblings become SPACE_TO_BATCH_ND);
and the outputs equal the original's on onnxruntime. ``scripts/check_tflite.py`` and
``scripts/check_vela.py`` convert and compile the same table with the real tools.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import helper

from rewriter import PoolRewritePass
from tests.helpers import input_suites, run
from tests.target_limits import outside, pool_breaks

from scripts.check_tflite import cnn  # the issue's one-pool CNN, as the optional check converts it


# The issue's table; per case, whether ethos-u keeps the pool (Vela runs it on the NPU).
TABLE: dict[str, tuple[Callable[[], onnx.ModelProto], bool]] = {
    "gap-20": (lambda: cnn("GlobalAveragePool", {}, 20), False),  # native MEAN, but the rewrite is cheaper
    "gap-40": (lambda: cnn("GlobalAveragePool", {}, 40), False),
    "sppf-5": (lambda: cnn("MaxPool", dict(kernel_shape=[5, 5], pads=[2] * 4), 20), True),
    "spp-13": (lambda: cnn("MaxPool", dict(kernel_shape=[13, 13], pads=[6] * 4), 20), True),
    "avg-3-cip0": (lambda: cnn("AveragePool", dict(kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=0), 20), True),
    "max-3-s2-p1": (lambda: cnn("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4), 40), True),
    "avg-9-p4-cip0": (lambda: cnn("AveragePool", dict(kernel_shape=[9, 9], pads=[4] * 4, count_include_pad=0), 20), False),  # Vela: CPU
    "max-5-s4-p2": (lambda: cnn("MaxPool", dict(kernel_shape=[5, 5], strides=[4, 4], pads=[2] * 4), 40), True),
}


def conv_geometry(model: onnx.ModelProto) -> list[tuple[str, list[int], list[int]]]:
    """(name, strides, dilations) of every Conv."""
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            rank = 2
            out.append((node.name, list(attrs.get("strides", [1] * rank)), list(attrs.get("dilations", [1] * rank))))
    return out


def strided_and_dilated(model: onnx.ModelProto) -> list[str]:
    return [name for name, s, d in conv_geometry(model) if max(s) > 1 and max(d) > 1]


@pytest.mark.parametrize("target", ["ethos-u", "tflite"])
@pytest.mark.parametrize("case", list(TABLE))
def test_the_issues_table_fits_and_is_exact(case: str, target: str) -> None:
    build, kept_on_ethos = TABLE[case]
    original = build()
    result = PoolRewritePass(target=target)(original)
    row = result.report.nodes[0]
    kept = target == "ethos-u" and kept_on_ethos
    assert row.status == ("kept" if kept else "rewritten"), (row.status, row.reason)
    if kept:
        assert row.reason == "runs natively on ethos-u"
        pool = next(n for n in original.graph.node if n.name == "pool")
        assert pool in result.model.graph.node  # byte-identical
    # The independent encoding agrees on what is native (the GAP is not: the cost rule).
    pool = next(n for n in original.graph.node if n.name == "pool")
    size = original.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    assert (pool_breaks(target, pool, [size, size]) == []) == kept
    assert outside(original, result.model, target) == []
    assert strided_and_dilated(result.model) == []
    assert all(max(d) == 1 for _, _, d in conv_geometry(result.model))
    for name, x in input_suites([1, 3, size, size]).items():
        np.testing.assert_allclose(run(result.model, {"x": x})[0], run(original, {"x": x})[0], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("case", ["max-3-s2-p1", "avg-9-p4-cip0", "max-5-s4-p2"])
def test_the_default_output_has_the_convs_onnx2tf_rejects(case: str) -> None:
    # The other half: the check above can fail. Without a target these rewrites hold a conv
    # both strided and dilated, which onnx2tf 2.6.9 does not convert (scripts/check_tflite.py).
    result = PoolRewritePass()(TABLE[case][0]())
    assert strided_and_dilated(result.model)
    assert outside(TABLE[case][0](), result.model, "tflite")


def test_the_gap_cost_rule_rewrites_gap_under_ethos_u_only() -> None:
    model = TABLE["gap-20"][0]()
    ethos = PoolRewritePass(target="ethos-u")(model)
    assert ethos.report.nodes[0].status == "rewritten"
    # convs, not a native pool: neither Vela's MEAN nor the AveragePool of the whole map
    # (measured dearer than the convs, docs/targets.md)
    assert {n.op_type for n in ethos.model.graph.node} == {"Conv", "Relu"}
    # rknn runs the same GAP natively and has no cost rule: kept.
    assert PoolRewritePass(target="rknn")(model).report.nodes[0].reason == "runs natively on rknn"
