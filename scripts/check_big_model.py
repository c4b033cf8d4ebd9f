"""A real model past protobuf's 2 GiB limit, end to end (not part of the test suite:
it needs about 7 GB of disk and 5 GB of memory).

Builds ``x[1, 65536] @ W[65536, 8704]`` (2.28 GB of float32 weights, written
straight to external data: protobuf cannot hold such a tensor in one message),
reshaped to one channel and fed to a MaxPool and an AveragePool. Runs the CLI
on it with validation, reports exit code, wall time and peak RSS, then checks
the output independently: onnx.checker (full), no pool left, both outputs equal
to the original's on onnxruntime, and a second run byte-identical.

Usage:
    python scripts/check_big_model.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROWS, COLS = 65536, 8704


def build(folder: Path) -> Path:
    """Write the model and its data file into ``folder``; returns the model path."""
    rng = np.random.default_rng(0)
    with open(folder / "big.onnx.data", "wb") as f:
        for start in range(0, ROWS, 4096):  # in slices: never the whole matrix in memory
            f.write((rng.standard_normal((4096, COLS), dtype=np.float32) / np.float32(256)).tobytes())
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[ROWS, COLS], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(ROWS * COLS * 4))):
        weight.external_data.add(key=key, value=value)
    shape = numpy_helper.from_array(np.array([1, 1, COLS], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
        helper.make_node("Reshape", ["mm", "shape"], ["r"], name="reshape"),
        helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[3], pads=[1, 1]),
        helper.make_node("AveragePool", ["r"], ["z"], name="avg", kernel_shape=[4], strides=[2], pads=[1, 2], count_include_pad=0),
    ]
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ROWS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, COLS]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, COLS // 2])],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def run_cli(src: Path, dst: Path) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS bytes) of ``onnx-poolrewrite src dst -q``."""
    probe = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "rewriter", str(src), str(dst), "-q"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return int(out[0]), time.perf_counter() - started, int(out[1]) * 1024


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", metavar="DIR", help="build in DIR and keep the files (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="poolrewrite-big-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        src = build(folder)
        size = (folder / "big.onnx.data").stat().st_size
        rc, seconds, peak = run_cli(src, folder / "out.onnx")
        print(f"model: {size / 1e9:.2f} GB of external data; onnx-poolrewrite exit {rc} in {seconds:.1f} s, "
              f"peak RSS {peak / 1e9:.2f} GB ({peak / size:.2f}x the weights)")
        if rc != 0:
            return 1
        onnx.checker.check_model(str(folder / "out.onnx"), full_check=True)
        light = onnx.load(str(folder / "out.onnx"), load_external_data=False)
        assert not {n.op_type for n in light.graph.node} & {"MaxPool", "AveragePool"}, "pools left"
        import onnxruntime as ort

        x = np.random.default_rng(1).standard_normal((1, ROWS)).astype(np.float32)
        ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        got = ort.InferenceSession(str(folder / "out.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        errors = [float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ref, got)]
        print(f"checker (full) ok; outputs y, z relative error {errors[0]:.2g}, {errors[1]:.2g}")
        rc2, _, _ = run_cli(src, folder / "again.onnx")
        same = rc2 == 0 and filecmp.cmp(folder / "out.onnx.data", folder / "again.onnx.data", shallow=False)
        print(f"second run: data file byte-identical: {same}")
        return 0 if max(errors) < 1e-5 and same else 1


if __name__ == "__main__":
    sys.exit(main())
