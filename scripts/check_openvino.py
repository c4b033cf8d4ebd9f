"""Optional check: OpenVINO runs every conv of the quantized rewrite in 8-bit integers.

Not a project dependency and never run in CI. OpenVINO reads QDQ ONNX and, through its
low-precision transformations, runs a Conv whose data and weights come through
DequantizeLinear and whose result goes into QuantizeLinear as an integer convolution
(the Relu, Add and requantization fused into it). A float island (float weights,
float Add or Relu between the model's DQ and Q) runs in float instead. This script:

1. takes the issue-16 acceptance models of ``tests/quantized.py`` (quantize_static,
   QDQ, per-channel int8 weights, int8 and uint8 activations), rewrites them, and
   compiles original and rewrite for OpenVINO's CPU plugin;
2. lists every runtime layer that comes from the rewrite (its original layer names
   carry ``/poolrewrite``) with its runtime precision: every one must be an 8-bit
   layer (u8/i8), none a float one (a float island);
3. compares the original's and the rewrite's outputs on OpenVINO (they must agree),
   and each with onnxruntime's (ORT_ENABLE_ALL), counting the values that differ
   (OpenVINO's own int8 arithmetic may differ from onnxruntime's, on the original too);
4. as a control that the check can fail, compiles a float island (the MaxPool of the
   ResNet stem replaced by a float depthwise conv between the DQ and the Q) and
   expects a layer that is not 8-bit there (the CPU plugin runs it in f32 or bf16).

Install (a separate venv; Python 3.11; the versions this was run with):

    python3 -m venv /tmp/ovvenv
    /tmp/ovvenv/bin/pip install openvino==2026.4.1 onnx==1.23.2 onnxruntime==1.32.0 numpy onnx-graphsurgeon
    /tmp/ovvenv/bin/python scripts/check_openvino.py

Exit status 0 when every rewritten layer is 8-bit, the control is caught, and the
outputs agree; 1 otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
import quantized as Q  # noqa: E402  (tests/quantized.py: the acceptance models)
from rewriter import rewrite_model  # noqa: E402

import openvino as ov  # noqa: E402
import onnxruntime as ort  # noqa: E402

MARK = "/poolrewrite"
EIGHT_BIT = {"u8", "i8"}
LAYOUT_ONLY = {"Const", "Reorder", "Input", "Output", "Reshape", "Transpose"}  # move or hold values, compute nothing


def runtime_layers(core: "ov.Core", path: Path) -> tuple[list[tuple[str, str, str]], "ov.CompiledModel"]:
    """(layer type, runtime precision, original layer names) of each layer OpenVINO's CPU plugin runs."""
    compiled = core.compile_model(core.read_model(str(path)), "CPU")
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        get = lambda key: info[key].astype(str) if key in info else ""  # noqa: E731
        layers.append((get("layerType"), get("runtimePrecision"), get("originalLayersNames")))
    return layers, compiled


def float_layers(layers: list[tuple[str, str, str]], marked_only: bool) -> list[tuple[str, str, str]]:
    """Computing layers (from the rewrite, when ``marked_only``) that do not run in 8-bit
    integers: f32, or the bf16/f16 the plugin may pick for float layers."""
    return [l for l in layers if l[0] not in LAYOUT_ONLY and l[1] not in EIGHT_BIT and (not marked_only or MARK in l[2])]


def float_island(model: onnx.ModelProto) -> onnx.ModelProto:
    """The first MaxPool between DQ and Q replaced by a 1-tap float depthwise conv (a float island)."""
    island = onnx.ModelProto()
    island.CopyFrom(model)
    pool = next(n for n in island.graph.node if n.op_type == "MaxPool")
    channels = next(d.dim_value for v in onnx.shape_inference.infer_shapes(island).graph.value_info
                    if v.name == pool.input[0] for d in list(v.type.tensor_type.shape.dim)[1:2])
    index = list(island.graph.node).index(pool)
    island.graph.node.remove(pool)
    island.graph.initializer.append(numpy_helper.from_array(np.ones([channels, 1, 1, 1], np.float32), "island/w"))
    island.graph.node.insert(index, helper.make_node("Conv", [pool.input[0], "island/w"], [pool.output[0]], name=f"island{MARK}/conv",
                                                     group=channels, kernel_shape=[1, 1], strides=[2, 2]))
    return island


def main() -> int:
    core = ov.Core()
    failures = 0
    work = Path(tempfile.mkdtemp(prefix="ovcheck-"))
    print(f"OpenVINO {ov.__version__}, onnxruntime {ort.__version__}")
    print("| model | activations | rewritten layers (type/precision) | float layers from the rewrite | OV: original vs rewrite | OV vs onnxruntime: original, rewrite |")
    print("|---|---|---|---|---|---|")
    for name in Q.BUILDERS:
        for activation in Q.ACTIVATIONS:
            original = Q.quantized(name, Q.Quantization(activation, True, False))
            rewritten, _ = rewrite_model(original)
            paths = work / f"{name}-{activation}.onnx", work / f"{name}-{activation}-rewritten.onnx"
            onnx.save(original, paths[0])
            onnx.save(rewritten, paths[1])
            (_, ov_original), (layers, ov_rewritten) = runtime_layers(core, paths[0]), runtime_layers(core, paths[1])
            ours = Counter(f"{t}/{p}" for t, p, names in layers if MARK in names and t not in LAYOUT_ONLY)
            floats = float_layers(layers, marked_only=True)
            sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths]
            differ_ov = compared = 0
            differ_ort = [0, 0]
            for seed in range(3):
                x = np.random.default_rng(seed).standard_normal(Q.input_shape(original)).astype(np.float32)
                a, b = ov_original(x)[0], ov_rewritten(x)[0]
                differ_ov += int(np.sum(a != b))
                for i, (ov_out, session) in enumerate(zip((a, b), sessions)):
                    differ_ort[i] += int(np.sum(ov_out != session.run(None, {"x": x})[0]))
                compared += a.size
            failures += bool(floats) + bool(differ_ov) + (not ours)
            shown = ", ".join(f"{k} x{v}" for k, v in sorted(ours.items()))
            print(f"| {name} | {activation} | {shown} | {len(floats)} | {differ_ov} of {compared} differ | {differ_ort[0]}, {differ_ort[1]} of {compared} differ |")
            for layer in floats:
                print(f"    float: {layer}")
    island = float_island(Q.quantized("resnet_stem", Q.Quantization("uint8", True, False)))
    onnx.save(island, work / "island.onnx")
    caught = float_layers(runtime_layers(core, work / "island.onnx")[0], marked_only=True)
    print(f"\ncontrol (a float depthwise conv between the stem's DQ and Q): {len(caught)} float layer(s) found"
          + (f", e.g. {caught[0][0]} {caught[0][1]}" if caught else " -- the check did not catch it"))
    failures += not caught
    print("ok" if not failures else f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
