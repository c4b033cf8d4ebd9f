"""Peak memory of ``onnx-poolrewrite`` against model size.

Builds the ResNet-50-shaped model of ``scripts/bench.py``'s part B (random
weights, about 100 MB of float32), saves it once with the weights inside the
.onnx file and once as external data, and runs the CLI on each in a child process, with and without
validation. Peak memory is the child's maximum resident set size
(``getrusage``). The baseline is a child that only imports the CLI's
dependencies (Python, onnx, onnx-graphsurgeon, numpy, onnxruntime).

A second case measures validation against the size of the activations, not of
the weights: one GlobalAveragePool on a 1x2048x300x300 float32 input (737 MB,
no weights), validated by the CLI; its peak is shown over the largest
activation (the input), beside the same baseline.

Usage:
    python scripts/measure_memory.py              # table
    python scripts/measure_memory.py --json
    python scripts/measure_memory.py --gap-size 150   # a smaller GlobalAveragePool (0 skips it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import onnx
from onnx import TensorProto, helper

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT))
from bench import build_resnet50  # noqa: E402


def peak_rss_of(cmd: Sequence[str]) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of one child process run on its own."""
    code = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]) * 1024  # Linux reports KiB


def global_average_pool_model(channels: int, size: int) -> onnx.ModelProto:
    """x[1, channels, size, size] -> GlobalAveragePool: the input is the largest activation."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")], "gap",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure_gap(folder: Path, size: int, baseline: int) -> dict[str, Any]:
    """Peak RSS and wall time of the CLI validating one big GlobalAveragePool."""
    channels = 2048
    src = folder / "gap.onnx"
    onnx.save(global_average_pool_model(channels, size), str(src))
    activation = channels * size * size * 4
    started = time.perf_counter()
    rc, peak = peak_rss_of([sys.executable, "-m", "rewriter", str(src), str(folder / "gap-out.onnx"), "-q"])
    return {
        "input_shape": [1, channels, size, size], "largest_activation_bytes": activation, "exit_code": rc,
        "seconds": round(time.perf_counter() - started, 1), "peak_rss_bytes": peak,
        "peak_over_activation": peak / activation, "peak_minus_baseline_over_activation": (peak - baseline) / activation,
    }


def measure(gap_size: int = 300) -> dict[str, Any]:
    model, _ = build_resnet50()
    cli = [sys.executable, "-m", "rewriter"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="poolrewrite-mem-") as tmp:
        folder = Path(tmp)
        onnx.save(model, str(folder / "embedded.onnx"))
        (folder / "ext").mkdir()
        onnx.save(model, str(folder / "ext" / "external.onnx"), save_as_external_data=True, location="external.onnx.data")
        del model
        size = (folder / "embedded.onnx").stat().st_size
        _, baseline = peak_rss_of([sys.executable, "-c", "import onnx, onnx_graphsurgeon, numpy, onnxruntime, rewriter.cli"])
        for kind, src in (("embedded", folder / "embedded.onnx"), ("external data", folder / "ext" / "external.onnx")):
            for validate in (False, True):
                out = src.with_name("out.onnx")
                rc, peak = peak_rss_of([*cli, str(src), str(out), "-q", *([] if validate else ["--no-validate"])])
                rows.append({
                    "weights": kind, "validation": validate, "exit_code": rc, "peak_rss_bytes": peak,
                    "peak_over_model": peak / size, "peak_minus_baseline_over_model": (peak - baseline) / size,
                })
        gap = measure_gap(folder, gap_size, baseline) if gap_size else None
    return {"model_bytes": size, "baseline_rss_bytes": baseline, "runs": rows, "global_average_pool": gap}


def render(result: dict[str, Any]) -> str:
    mb = 1e6
    lines = [
        f"model: ResNet-50-shaped, {result['model_bytes'] / mb:.0f} MB; baseline (interpreter + imports): "
        f"{result['baseline_rss_bytes'] / mb:.0f} MB",
        f"{'weights':<14} {'validation':<10} {'peak RSS MB':>11} {'peak / model':>12} {'(peak - baseline) / model':>26}",
    ]
    for r in result["runs"]:
        lines.append(
            f"{r['weights']:<14} {'yes' if r['validation'] else 'no':<10} {r['peak_rss_bytes'] / mb:>11.0f} "
            f"{r['peak_over_model']:>12.2f} {r['peak_minus_baseline_over_model']:>26.2f}"
        )
    gap = result.get("global_average_pool")
    if gap:
        lines += [
            "",
            f"GlobalAveragePool on {'x'.join(map(str, gap['input_shape']))} float32 "
            f"(largest activation {gap['largest_activation_bytes'] / mb:.0f} MB), validated:",
            f"{'peak RSS MB':>11} {'baseline MB':>11} {'peak / activation':>17} {'(peak - baseline) / activation':>30} {'seconds':>7}",
            f"{gap['peak_rss_bytes'] / mb:>11.0f} {result['baseline_rss_bytes'] / mb:>11.0f} {gap['peak_over_activation']:>17.2f} "
            f"{gap['peak_minus_baseline_over_activation']:>30.2f} {gap['seconds']:>7.1f}",
        ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--gap-size", type=int, default=300, metavar="N", help="H and W of the GlobalAveragePool case (default 300; 0 skips it)")
    args = p.parse_args(argv)
    result = measure(args.gap_size)
    print(json.dumps(result, indent=2) if args.json else render(result))
    gap_ok = result["global_average_pool"] is None or result["global_average_pool"]["exit_code"] == 0
    return 0 if gap_ok and all(r["exit_code"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
