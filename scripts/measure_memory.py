"""Peak memory of ``onnx-poolrewrite`` against model size.

Builds the ResNet-50-shaped model of ``scripts/bench.py``'s part B (random
weights, about 100 MB of float32), saves it once with the weights inside the
.onnx file and once as external data, and runs the CLI on each in a child process, with and without
validation. Peak memory is the child's maximum resident set size
(``getrusage``). The baseline is a child that only imports the CLI's
dependencies (Python, onnx, onnx-graphsurgeon, numpy, onnxruntime).

Usage:
    python scripts/measure_memory.py              # table
    python scripts/measure_memory.py --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import onnx

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


def measure() -> dict[str, Any]:
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
    return {"model_bytes": size, "baseline_rss_bytes": baseline, "runs": rows}


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
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    result = measure()
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if all(r["exit_code"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
