"""docs/pipeline.md's chain on the real-model stand-ins: onnxslim before and after the
CLI's rewrite keeps it valid (``--compare`` passes) and re-creates no pool op.

Needs onnxslim (the ``pipelines`` extra); skipped with the reason without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

onnxslim = pytest.importorskip("onnxslim", reason="the simplifier tests need onnxslim: pip install 'onnx-poolrewrite[pipelines]'")
import realistic  # noqa: E402

from rewriter import cli  # noqa: E402
from rewriter.graphs import all_graphs  # noqa: E402
from rewriter.ops import POOL_OPS  # noqa: E402

STAND_INS = realistic.BUILDERS  # the real-model stand-ins, by name


def pools(model: onnx.ModelProto) -> list[str]:
    """Every pool node's name, in every graph and function of ``model``."""
    nodes = [n for g in all_graphs(model.graph) for n in g.node] + [n for f in model.functions for n in f.node]
    return sorted(n.name or n.output[0] for n in nodes if n.op_type in POOL_OPS and n.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("target", [None, "rknn"], ids=["strict", "rknn"])
@pytest.mark.parametrize("name", list(STAND_INS))
def test_onnxslim_before_and_after_the_rewrite(name, target, tmp_path: Path):
    exported = STAND_INS[name](dynamic=True)  # as the exporter writes it: dynamic dims
    shapes = realistic.overwrite_input_shape_args(exported)
    target_args = ["--target", target] if target else []
    original, slimmed, rewritten, final = (str(tmp_path / f"{s}.onnx") for s in ("original", "slim", "rewritten", "final"))
    onnx.save(exported, original)

    # onnxslim 0.1.98 folds a -1 input dim (paddle2onnx's [-1, 3, -1, -1]) as if it were a
    # size, and the Resize it feeds fails; give it the shapes there (docs/pipeline.md).
    declared_minus_one = any(d.dim_value < 0 for i in exported.graph.input for d in i.type.tensor_type.shape.dim)
    slim_shapes = [a for a in shapes if a != "--overwrite-input-shape"] if declared_minus_one else None
    onnx.save(onnxslim.slim(exported, input_shapes=slim_shapes), slimmed)
    report = tmp_path / "report.json"
    assert cli.main([slimmed, rewritten, *shapes, *target_args, "--report", str(report), "-q"]) == 0
    nodes = json.loads(report.read_text())["nodes"]
    kept = pools(onnx.load(rewritten))
    assert kept == sorted(n["name"] for n in nodes if n["status"] == "kept")
    if target is None:
        assert kept == [] and nodes  # every pool rewritten; on rknn, those it runs natively stay
    else:
        assert all(n["reason"].startswith("runs natively") for n in nodes if n["status"] == "kept")

    onnx.save(onnxslim.slim(onnx.load(rewritten)), final)
    assert pools(onnx.load(final)) == kept  # the simplifier re-created no pool op
    # The slimmed rewrite against the untouched export: the chain as a whole is exact.
    assert cli.main(["--compare", original, final, *shapes, "-q"]) == 0
    assert cli.main(["--compare", rewritten, final, *shapes, "-q"]) == 0


def test_compare_fails_on_a_broken_rewrite_after_onnxslim(tmp_path: Path):
    """The other half: a rewrite broken after onnxslim (one conv weight changed) fails --compare."""
    import numpy as np
    from onnx import numpy_helper

    exported = STAND_INS["yolo_sppf_detector"](dynamic=True)
    shapes = realistic.overwrite_input_shape_args(exported)
    original, rewritten = str(tmp_path / "original.onnx"), str(tmp_path / "rewritten.onnx")
    onnx.save(exported, original)
    assert cli.main([original, rewritten, *shapes, "-q"]) == 0
    model = onnxslim.slim(onnx.load(rewritten))
    added = {i for n in model.graph.node if "/poolrewrite" in n.name and n.op_type == "Conv" for i in n.input[1:2]}
    weights = next(t for t in model.graph.initializer if t.name in added)
    values = numpy_helper.to_array(weights).copy()
    values.flat[0] += np.float32(0.5)
    weights.CopyFrom(numpy_helper.from_array(values, weights.name))
    broken = str(tmp_path / "broken.onnx")
    onnx.save(model, broken)
    assert cli.main(["--compare", original, broken, *shapes, "-q"]) == 1


def test_docs_pipeline_runs_as_written(tmp_path: Path, monkeypatch):
    """docs/pipeline.md's blocks, in order, from a folder holding a copy of models/
    (the ``# setup`` and ``# optional`` blocks left out)."""
    pytest.importorskip("onnx_ir", reason="the page's last step needs onnx-ir: pip install 'onnx-poolrewrite[pipelines]'")
    pytest.importorskip("onnxscript", reason="the page's last step needs onnxscript: pip install 'onnx-poolrewrite[pipelines]'")
    import os
    import re
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```(sh|python)\n(.*?)```", (root / "docs" / "pipeline.md").read_text(), re.S)
    run = [(kind, code) for kind, code in blocks if not code.startswith(("# setup", "# optional"))]
    assert [kind for kind, _ in run].count("sh") >= 2 and [kind for kind, _ in run].count("python") == 2
    shutil.copytree(root / "models", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for kind, code in run:
        if kind == "sh":
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{code}\n{proc.stdout}\n{proc.stderr}"
        else:
            exec(compile(code, "docs/pipeline.md", "exec"), {})
    for name in ("ceil_mode.rknn.onnx", "ceil_mode.rknn.slim.onnx", "ceil_mode.api.onnx", "ceil_mode.ir.onnx"):
        assert pools(onnx.load(tmp_path / "out" / name)) == [], name
    report = json.loads((tmp_path / "out" / "ceil_mode.rknn.json").read_text())
    assert [n["status"] for n in report["nodes"]] == ["rewritten"] * 3
