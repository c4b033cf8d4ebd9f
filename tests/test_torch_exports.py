"""Models exported by PyTorch (TorchScript opsets 9/13/15 and the dynamo exporter),
committed small, made by scripts/export_torch_blocks.py: what real exporters write.

Each is rewritten through the CLI, with validation, and must leave no pool op
behind except those kept for a stated reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from rewriter.lower import POOL_OPS

DATA = Path(__file__).parent / "data" / "torch"
# What each export holds that the others do not.
CASES = {
    "resnet18.ts13.onnx": "stem MaxPool after Relu, GlobalAveragePool",
    "resnet18.ts15_funcs.onnx": "pools inside model-local functions",
    "sppf.dynamo.onnx": "dynamo exporter, external data, SPPF after SiLU",
    "inception.ts9.onnx": "opset 9: ceil_mode written as extra end pads",
    "scripted_if.ts13.onnx": "pools inside If branches",
    "segnet.dynamo.onnx": "MaxPool with a used Indices output (kept)",
    "avg_ceil_nocip.ts13_fp16.onnx": "float16, ceil_mode, count_include_pad=0",
    "pool3d.ts13.onnx": "3-D pools",
    "adaptive_max.dynamo.onnx": "AdaptiveMax/AvgPool2d(1) as ReduceMax/ReduceMean",
    "resnet18.ts13_dynhw.onnx": "dynamic H and W",
    "squeezenet.ts13.onnx": "MaxPool ceil_mode",
    "dilated.dynamo_dyn.onnx": "dilated MaxPool, dynamic batch",
    "ocr_se.ts13_dynhw.onnx": "SE blocks, dynamic batch and width, fixed for deployment",
    "ocr_se.dynamo_dynhw.onnx": "SE blocks as ReduceMean, dynamic batch and width, fixed for deployment",
    "yolo_sppf.ts13_dynhw.onnx": "SPPF detector, dynamic batch, height and width, fixed for deployment",
    "yolo_sppf.dynamo_dynhw.onnx": "dynamo SPPF detector, dynamic batch, height and width, fixed for deployment",
}
EXTRA_ARGS = {
    "resnet18.ts13_dynhw.onnx": ["--input-shape", "x:2,3,40,36"],
    "ocr_se.ts13_dynhw.onnx": ["--overwrite-input-shape", "x:1,3,32,96"],
    "ocr_se.dynamo_dynhw.onnx": ["--overwrite-input-shape", "x:1,3,32,96"],
    "yolo_sppf.ts13_dynhw.onnx": ["--overwrite-input-shape", "x:1,3,64,64"],
    "yolo_sppf.dynamo_dynhw.onnx": ["--overwrite-input-shape", "x:1,3,64,64"],
}
KEPT = {  # export -> words every kept node's reason must contain
    "segnet.dynamo.onnx": "Indices output is used",
    "resnet18.ts13_dynhw.onnx": "dynamic spatial dims",
}


# The default run keeps one TorchScript and one dynamo export; the rest (about 1 s each) are slow.
DEFAULT_CASES = {"resnet18.ts13_dynhw.onnx", "yolo_sppf.dynamo_dynhw.onnx"}


@pytest.mark.parametrize("name", [n if n in DEFAULT_CASES else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)],
                         ids=lambda n: n.removesuffix(".onnx"))
def test_torch_export_rewrites_and_validates(name, tmp_path):
    out, report_path = tmp_path / name, tmp_path / "report.json"
    args = [sys.executable, "-m", "rewriter", DATA / name, out, "--report", report_path, "-q", *EXTRA_ARGS.get(name, [])]
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    kept = {n["name"]: n["reason"] for n in report["nodes"] if n["status"] == "kept"}
    assert all(KEPT.get(name, "<nothing kept>") in reason for reason in kept.values()), kept
    assert bool(kept) == (name in KEPT)
    if "functions" in CASES[name]:
        assert any("inlined" in note for note in report["notes"])
    new = onnx.load(out)
    left = {n.name for n in new.graph.node if n.op_type in POOL_OPS}
    assert left == set(kept) - {n["name"] for n in report["nodes"] if n["op_type"].startswith("Reduce")}
    assert report["validation"]["passed"] is True or report["validation"].get("skipped")
    assert [o.name for o in new.graph.output] == [o.name for o in onnx.load(DATA / name, load_external_data=False).graph.output]
