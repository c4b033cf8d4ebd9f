"""Optional check: the rewrites survive onnx2tf's TFLite conversion (issue 23).

Not a project dependency and never run in CI. For each one-pool CNN of the issue's
table (Conv 3x3 -> Relu -> pool -> Conv 1x1, 16 channels) and the deep stand-ins of
YOLO's SPPF and PP-OCR's SE blocks (``tests/realistic.py``), this script rewrites the
original with no target, ``--target tflite`` and ``--target ethos-u``, converts each
with onnx2tf's tf_converter backend to int8 TFLite (calibration data of its own, given
with ``-cind``: nothing is downloaded) and reports, per model: converted or not (the
converter's error line), the TFLite operators, and whether SPACE_TO_BATCH_ND /
BATCH_TO_SPACE_ND appear (the dilated convs TFLite could not fuse back).

Install (a separate venv; Python 3.12; the versions this was run with):

    python3.12 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 onnx2tf==2.6.9 ethos-u-vela==5.2.0 \
        onnx onnxruntime onnx-graphsurgeon sng4onnx psutil tf_keras ai-edge-litert
    /tmp/tfvenv/bin/python scripts/check_tflite.py [--cases gap-20,sppf-5] [--variants original,tflite]
    /tmp/tfvenv/bin/python scripts/check_tflite.py --probes   # what makes onnx2tf emit SPACE_TO_BATCH_ND

``--probes`` converts (float32, tf_converter) small graphs of dilated depthwise convs on
a 16-channel input, one conv or two reading the same tensor, and prints their TFLite
operators: the measurement behind the ``tflite`` profile's "no dilation" (docs/targets.md).

Exit status 0 when every ``tflite`` and ``ethos-u`` rewrite converts without
SPACE_TO_BATCH_ND; 1 otherwise (the originals and the default rewrites are reported only).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rewriter import PoolRewritePass  # noqa: E402

CHANNELS = 16


def cnn(op: str, attrs: dict, size: int, channels: int = CHANNELS) -> onnx.ModelProto:
    """Conv 3x3 -> Relu -> the pool -> Conv 1x1 on a 1x3xSIZExSIZE input (random weights)."""
    r = np.random.RandomState(0)
    w1 = numpy_helper.from_array((r.randn(channels, 3, 3, 3) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((r.randn(channels, channels, 1, 1) * 0.3).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node(op, ["r"], ["p"], name="pool", **attrs),
        helper.make_node("Conv", ["p", "w2"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what onnx2tf's onnx reads
    return model


# The table.
CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "gap-20": lambda: cnn("GlobalAveragePool", {}, 20),
    "gap-40": lambda: cnn("GlobalAveragePool", {}, 40),
    "sppf-5": lambda: cnn("MaxPool", dict(kernel_shape=[5, 5], pads=[2] * 4), 20),
    "spp-13": lambda: cnn("MaxPool", dict(kernel_shape=[13, 13], pads=[6] * 4), 20),
    "avg-3-cip0": lambda: cnn("AveragePool", dict(kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=0), 20),
    "max-3-s2-p1": lambda: cnn("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4), 40),
    "avg-9-p4-cip0": lambda: cnn("AveragePool", dict(kernel_shape=[9, 9], pads=[4] * 4, count_include_pad=0), 20),
    "max-5-s4-p2": lambda: cnn("MaxPool", dict(kernel_shape=[5, 5], strides=[4, 4], pads=[2] * 4), 40),
}


def stand_in(name: str) -> onnx.ModelProto:
    """A deep stand-in of ``tests/realistic.py`` at its deployment size (static shapes)."""
    from tests import realistic  # the repository's, on sys.path above

    model = realistic.BUILDERS[name](dynamic=False)
    model.ir_version = min(model.ir_version, 8)
    return model


# The real-model stand-ins of the acceptance: YOLO's SPPF, PP-OCR's SE blocks.
CASES["yolo-sppf"] = lambda: stand_in("yolo_sppf_detector")
CASES["ppocr-se"] = lambda: stand_in("ocr_se_recognizer")
VARIANTS = ("original", "default", "tflite", "ethos-u")
CHECKED = ("tflite", "ethos-u")  # the variants that must convert cleanly


def variant(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The original, or its rewrite with no target (``default``) or ``--target name``."""
    if name == "original":
        return model
    result = PoolRewritePass(target=None if name == "default" else name)(model)
    return result.model


def calibration(model: onnx.ModelProto, path: Path, samples: int = 8) -> Path:
    """Calibration data for ``-cind``: NHWC, uniform in [0, 1), our own (nothing downloaded)."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    np.save(path, np.random.RandomState(1).rand(samples, dims[2], dims[3], dims[1]).astype(np.float32))
    return path


def to_int8_tflite(model: onnx.ModelProto, work: Path) -> tuple[Optional[Path], str]:
    """onnx2tf tf_converter, int8 (full_integer_quant): the .tflite, or None and the error line."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "model.onnx"
    onnx.save(model, src)
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    zeros, ones = str([[[[0.0] * channels]]]), str([[[[1.0] * channels]]])
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(src), "-o", str(work), "-tb", "tf_converter", "-oiqt",
           "-cind", model.graph.input[0].name, str(calibration(model, work / "calib.npy")), zeros, ones]
    run = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(work.glob("*_full_integer_quant.tflite"))
    if run.returncode or not found:
        errors = [line.strip() for line in (run.stdout + run.stderr).splitlines() if "rror" in line or "not supported" in line]
        return None, (errors[-1] if errors else f"exit {run.returncode}")[:200]
    return found[0], ""


def tflite_ops(path: Path) -> collections.Counter:
    """The operators of a .tflite file, counted."""
    import tensorflow as tf  # the venv's, only here

    return collections.Counter(o["op_name"] for o in tf.lite.Interpreter(model_path=str(path))._get_ops_details())


# (extent, [(kernel, dilations, strides, pads), ...]): each conv reads the input, the results are added.
PROBES: dict[str, tuple[int, list[tuple[list[int], list[int], list[int], list[int]]]]] = {
    "one 2x1 d2 VALID, odd extent": (31, [([2, 1], [2, 1], [1, 1], [0, 0, 0, 0])]),
    "one 2x1 d4 VALID": (29, [([2, 1], [4, 1], [1, 1], [0, 0, 0, 0])]),
    "one 2x2 d2 VALID, odd extent": (21, [([2, 2], [2, 2], [1, 1], [0, 0, 0, 0])]),
    "one 2x1 d2 padded": (31, [([2, 1], [2, 1], [1, 1], [1, 0, 1, 0])]),
    "one 3x3 d2 s2 padded": (40, [([3, 3], [2, 2], [2, 2], [2, 2, 2, 2])]),
    "one 2x1 d2x1 s2x1 padded": (40, [([2, 1], [2, 1], [2, 1], [1, 0, 1, 0])]),
    "two 2x1 d2 VALID, one input": (24, [([2, 1], [2, 1], [1, 1], [0, 0, 0, 0])] * 2),
    "two 2x1 d2 padded alike, one input": (24, [([2, 1], [2, 1], [1, 1], [1, 0, 1, 0])] * 2),
    "two d2, VALID and padded": (24, [([2, 1], [2, 1], [1, 1], [0, 0, 0, 0]), ([3, 1], [2, 1], [1, 1], [1, 0, 1, 0])]),
}


def probe_model(size: int, convs: list, channels: int = CHANNELS) -> onnx.ModelProto:
    """The input, each depthwise conv of ``convs`` on it, their sum."""
    weights, nodes, outs = [], [], []
    for i, (kernel, dilations, strides, pads) in enumerate(convs):
        weights.append(numpy_helper.from_array(np.random.RandomState(i).randn(channels, 1, *kernel).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], group=channels, kernel_shape=kernel, dilations=dilations, strides=strides, pads=pads))
        outs.append(f"c{i}")
    nodes.append(helper.make_node("Sum", outs, ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def probes(work: Path) -> None:
    """Convert each probe to float32 TFLite and print its operators."""
    for name, (size, convs) in PROBES.items():
        out = work / f"probe{len(list(work.glob('probe*')))}"
        out.mkdir(parents=True)
        onnx.save(probe_model(size, convs), out / "model.onnx")
        run = subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(out / "model.onnx"), "-o", str(out), "-tb", "tf_converter"], capture_output=True, text=True)
        found = sorted(out.glob("*_float32.tflite"))
        print(f"{name:38} {dict(sorted(tflite_ops(found[0]).items())) if found and not run.returncode else 'DOES NOT CONVERT'}", flush=True)


def int8_error(model: onnx.ModelProto, tflite: Path, samples: int = 4) -> float:
    """The int8 TFLite's largest error against onnxruntime on ``model`` (the original),
    relative to the largest reference value, over a few calibration-like inputs
    (the TFLite model reads NHWC; a 4-D output is NHWC too, other ranks are compared as
    they are or transposed when only that matches)."""
    import onnxruntime as ort
    import tensorflow as tf

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    interpreter = tf.lite.Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    (inp,), out = interpreter.get_input_details(), interpreter.get_output_details()[0]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    worst = 0.0
    for seed in range(samples):
        x = np.random.RandomState(100 + seed).rand(*dims).astype(np.float32)
        want = session.run(None, {model.graph.input[0].name: x})[0]
        scale, zero = inp["quantization"]
        q = np.clip(np.round(x.transpose(0, 2, 3, 1) / scale + zero), -128, 127).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        scale, zero = out["quantization"]
        got = (interpreter.get_tensor(out["index"]).astype(np.float32) - zero) * scale
        if got.ndim == 4:
            got = got.transpose(0, 3, 1, 2)
        elif got.shape != want.shape and got.ndim == 3:
            got = got.transpose(0, 2, 1)
        if got.shape != want.shape:
            return float("nan")
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)))
    return worst


def main(argv: Optional[list[str]] = None) -> int:
    """Convert every case's variants and print one line each; exit 1 if a checked one fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--probes", action="store_true", help="only the dilated-conv probes")
    args = parser.parse_args(argv)
    if args.probes:
        with tempfile.TemporaryDirectory() as tmp:
            probes(Path(tmp))
        return 0
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            for name in args.variants.split(","):
                path, error = to_int8_tflite(variant(CASES[case](), name), Path(tmp) / case / name)
                if path is None:
                    print(f"{case:14} {name:9} DOES NOT CONVERT: {error}", flush=True)
                    failed += [f"{case}/{name}"] if name in CHECKED else []
                    continue
                ops = tflite_ops(path)
                s2b = ops["SPACE_TO_BATCH_ND"] + ops["BATCH_TO_SPACE_ND"]
                print(f"{case:14} {name:9} ok{'  SPACE_TO_BATCH' if s2b else ''}  {dict(sorted(ops.items()))}", flush=True)
                failed += [f"{case}/{name}"] if s2b and name in CHECKED else []
    print("FAILED: " + ", ".join(failed) if failed else "every tflite and ethos-u rewrite converts without SPACE_TO_BATCH_ND")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
