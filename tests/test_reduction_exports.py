"""Issue 22: exports whose global pools are reductions, under no target, every built-in
profile and the user profile file.

Each run exits 0 with validation passed; every reduction acting as a global pool is
rewritten (none is left, by :func:`rewriter.reductions.pooling_reductions`), or, when
its output rank differs and the target has no Reshape, kept with that reason; every
node the rewrite added keeps to the target's limits by the independent encoding in
tests/target_limits.py; the outputs equal the original's on onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from rewriter.cli import main
from rewriter.reductions import pooling_reductions
from tests import realistic
from tests.helpers import input_suites, run, target_option
from tests.target_limits import USER_PROFILE_FILE, outside

TARGETS = [None, "nvidia-dla", "rknn", "tidl", "user"]


def _cli(tmp_path: Path, model: onnx.ModelProto, target, *options: str) -> tuple[int, onnx.ModelProto, dict]:
    src, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, src)
    chosen = ["--target", target_option(target, tmp_path, {"user": USER_PROFILE_FILE})] if target else []
    code = main([str(src), str(out), "-q", "--report", str(report), *chosen, *options])
    return code, (onnx.load(out) if out.exists() else None), json.loads(report.read_text())


@pytest.mark.parametrize("allow_reshape", [False, True])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("builder", list(realistic.REDUCTION_BUILDERS))
def test_reduction_exports_are_rewritten_whole(tmp_path: Path, builder: str, target, allow_reshape: bool) -> None:
    original = realistic.REDUCTION_BUILDERS[builder]()
    assert {n.name for n in original.graph.node if n.output[0] in pooling_reductions(original)} == set(realistic.REDUCTIONS[builder])
    code, written, report = _cli(tmp_path, original, target, *(["--allow", "Reshape"] if allow_reshape else []))
    assert code == 0 and report["validation"]["passed"] in (True,), report["validation"]
    rows = {row["name"]: row for row in report["nodes"]}
    kept = set()
    for name, (op, layout, needs_reshape) in realistic.REDUCTIONS[builder].items():
        row = rows[name]
        assert row["op_type"] == op and row["attributes"].startswith(f"global {layout}"), row
        if needs_reshape and not allow_reshape:
            assert row["status"] == "kept" and "needs Reshape" in row["reason"], row
            kept.add(name)
        else:
            assert row["status"] == "rewritten", row
    left = {n.name for n in written.graph.node if n.output[0] in pooling_reductions(written)}
    assert left == kept
    reductions = [n.name for n in written.graph.node if n.op_type in ("ReduceMean", "ReduceMax")]
    assert set(reductions) == kept  # the stand-ins have no other reductions; a chain's earlier node went too
    checked = {c["name"] for c in report["validation"].get("nodes", []) if c["passed"]}
    assert set(realistic.REDUCTIONS[builder]) - kept <= checked  # each rewrite checked alone, from its chain's start
    if target is not None:
        assert [b for b in outside(original, written, target) if not b.endswith("op Reshape")] == []
    feeds = realistic.example_feeds(original)
    for expected, actual in zip(run(original, feeds), run(written, feeds)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


SHAPES = [[1, 7, 7, 16], [1, 20, 20, 8], [2, 40, 40, 4], [1, 1, 9, 4], [2, 5, 1, 3], [1, 13, 6, 5]]


@pytest.mark.parametrize("target", TARGETS[1:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_channels_last_heads_fit_every_target(tmp_path: Path, op: str, shape: list, target: str) -> None:
    from test_reduce_pools import reduce_model

    from rewriter import rewrite_model
    from rewriter.profiles import load_profile

    original = reduce_model(op, shape, [1, 2])
    profile = load_profile(target_option(target, tmp_path, {"user": USER_PROFILE_FILE}))
    written, report = rewrite_model(original, target=profile)
    assert [n.status for n in report.nodes] == ["rewritten"], report.table()
    assert outside(original, written, target) == []
    assert pooling_reductions(written) == {}
    for suite, x in input_suites(shape).items():
        np.testing.assert_allclose(run(written, {"x": x})[0], run(original, {"x": x})[0], rtol=1e-6, atol=1e-6, err_msg=suite)


def test_a_profile_listing_reshape_lets_a_keepdims_0_head_through(tmp_path: Path) -> None:
    profile = {**USER_PROFILE_FILE, "name": "user-reshape", "ops": [*USER_PROFILE_FILE["ops"], "Reshape"]}
    (tmp_path / "npu.json").write_text(json.dumps(profile))
    original = realistic.tf2onnx_resnet_head()
    src, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(original, src)
    assert main([str(src), str(out), "-q", "--report", str(report), "--target", str(tmp_path / "npu.json")]) == 0
    [row] = json.loads(report.read_text())["nodes"]
    assert row["status"] == "rewritten" and row["op_counts"].get("Reshape") == 1, row
    written = onnx.load(out)
    assert [b for b in outside(original, written, "user") if not b.endswith("op Reshape")] == []
    feeds = realistic.example_feeds(original)
    np.testing.assert_allclose(run(written, feeds)[0], run(original, feeds)[0], rtol=1e-5, atol=1e-6)
