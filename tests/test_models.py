"""The committed demo models: regenerated identically, rewritten with no pool op left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from rewriter import rewrite_model
from rewriter.lower import POOL_OPS
from rewriter.validate import validate_models

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.onnx"))
KEPT = {"kept_nodes.onnx": {"encoder/maxpool_with_indices", "side/lppool"}}


def test_models_are_what_the_script_generates(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_models.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    generated = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert generated == [p.name for p in MODELS]
    for path in MODELS:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_demo_model_rewrites_and_validates(path):
    model = onnx.load(path)
    new, report = rewrite_model(model)
    expected_kept = KEPT.get(path.name, set())
    assert {n.name for n in report.kept} == expected_kept
    left = {n.name for n in new.graph.node if n.op_type in POOL_OPS}
    assert left == expected_kept
    onnx.checker.check_model(new, full_check=True)
    result = validate_models(model, new)
    assert result.passed, result.summary()
