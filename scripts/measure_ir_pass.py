"""What the onnx_ir pass costs on a ResNet-50-sized model (needs the ``[ir]`` extra).

:class:`rewriter.ir.PoolRewriteIRPass` analyses a serialized view of the IR model
(``ir.serde.serialize_model``: one copy of the weights while the pass runs) and
splices the replacements into the IR graph. This script measures that against the
same model loaded and saved with no pass, and against the ModelProto pass
(``PoolRewritePass.run(in_place=True)``): each case runs in its own child process;
peak memory is the child's maximum resident set size (``getrusage``), time is the
pass's own wall time (load and save excluded) in the child.

The model is ``scripts/bench.py``'s ResNet-50 (random weights, about 100 MB of float32,
its stem MaxPool and head GlobalAveragePool rewritten).

Usage:
    python scripts/measure_ir_pass.py            # table
    python scripts/measure_ir_pass.py --json
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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT))

CASES = {
    "ir-load-save": "onnx_ir: load and save, no pass",
    "ir-pass": "onnx_ir: load, PoolRewriteIRPass, save",
    "ir-pass-serialize-only": "onnx_ir: load, serialize_model (the pass's view), save",
    "proto-pass": "onnx: load, PoolRewritePass.run(in_place=True), save",
}


def child(case: str, path: str, out: str) -> None:
    """Run one case; print the pass's seconds."""
    if case == "proto-pass":
        from rewriter import PoolRewritePass

        model = onnx.load(path)
        start = time.perf_counter()
        result = PoolRewritePass().run(model, in_place=True)
        seconds = time.perf_counter() - start
        onnx.save(result.model, out)
    else:
        import onnx_ir as ir

        model = ir.load(path)
        start = time.perf_counter()
        if case == "ir-pass":
            from rewriter.ir import PoolRewriteIRPass

            result = PoolRewriteIRPass()(model)
            assert len(result.report.rewritten) == 2, result.report.table()
        elif case == "ir-pass-serialize-only":
            ir.serde.serialize_model(model)
        seconds = time.perf_counter() - start
        ir.save(model, out)
    print(f"{seconds:.3f}")


def run_case(case: str, path: str, out: str) -> tuple[int, float]:
    """(peak RSS in bytes, pass seconds) of one case in a child process."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True, check=True)\n"
        "print(p.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    cmd = [sys.executable, __file__, "--child", case, path, out]
    seconds, rss = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True).stdout.split()
    return int(rss) * 1024, float(seconds)  # Linux reports KiB


def measure() -> dict[str, Any]:
    from bench import build_resnet50

    model, _ = build_resnet50()
    with tempfile.TemporaryDirectory() as tmp:
        path, out = str(Path(tmp) / "resnet50.onnx"), str(Path(tmp) / "out.onnx")
        onnx.save(model, path)
        size = Path(path).stat().st_size
        runs = []
        for case in CASES:
            rss, seconds = run_case(case, path, out)
            runs.append({"case": case, "what": CASES[case], "peak_rss_bytes": rss, "pass_seconds": seconds})
    return {"model_bytes": size, "runs": runs}


def render(result: dict[str, Any]) -> str:
    mb = 1 << 20
    lines = [f"model: ResNet-50-shaped, {result['model_bytes'] / mb:.0f} MB",
             f"{'case':<24} {'peak RSS MB':>11} {'peak / model':>12} {'pass s':>7}  what"]
    for r in result["runs"]:
        lines.append(f"{r['case']:<24} {r['peak_rss_bytes'] / mb:>11.0f} {r['peak_rss_bytes'] / result['model_bytes']:>12.2f} "
                     f"{r['pass_seconds']:>7.2f}  {r['what']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        child(*argv[1:4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    result = measure()
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
