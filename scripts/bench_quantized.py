"""Benchmark the quantized (QDQ) rewrite: the issue-16 acceptance models, timed side by side.

Each model of ``tests/quantized.py`` (ResNet stem, SPPF on SiLU, VGG with a DenseNet
2x2 average and a global average, Inception with a global average) is quantized by
onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, int8 or uint8
activations), rewritten with :func:`rewriter.rewrite_model`, and both models are
timed as in ``scripts/bench.py`` part A (one thread, interleaved runs, the median
over fresh session pairs) at ``ORT_DISABLE_ALL`` (every Q/DQ and float op on its
own) and ``ORT_ENABLE_ALL`` (onnxruntime's integer kernels). The ratio is rewritten
time / original time, measured in the same run; the outputs are compared too (the
max abs error is 0 for a bit-exact rewrite). onnxruntime on a CPU is a proxy for an
int8 accelerator, not its time.

Usage:
    python scripts/bench_quantized.py            # table
    python scripts/bench_quantized.py --quick    # fewer rounds
    python scripts/bench_quantized.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
import quantized as Q  # noqa: E402  (tests/quantized.py: the acceptance models)
from bench import time_against_native  # noqa: E402
from rewriter import rewrite_model  # noqa: E402
from rewriter.report import REWRITTEN  # noqa: E402

LEVELS = {"disable": "ORT_DISABLE_ALL", "all": "ORT_ENABLE_ALL"}


def bench_model(name: str, activation: str, warmup: int, repeats: int) -> dict[str, Any]:
    """One acceptance model: what the rewrite did, and its time against the original's at both levels."""
    original = Q.quantized(name, Q.Quantization(activation, True, False))
    rewritten, report = rewrite_model(original)
    feed = {"x": np.random.default_rng(0).standard_normal(Q.input_shape(original)).astype(np.float32)}
    row: dict[str, Any] = {
        "model": name,
        "activation": activation,
        "rewritten": sum(n.status == REWRITTEN for n in report.nodes),
        "kept": sum(n.status != REWRITTEN for n in report.nodes),
        "nodes_added": sum(n.nodes_added for n in report.nodes),
        "strategies": sorted({n.strategy for n in report.nodes if n.strategy}),
    }
    for level in LEVELS:
        row[level] = time_against_native(original, rewritten, feed, level, warmup, repeats)
    return row


def render(rows: list[dict[str, Any]]) -> str:
    header = "| model | activations | pools rewritten | kept | nodes added | ratio, no optimizations | ratio, all (integer kernels) | max abs error |"
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        ratios = [f"{r[level]['ratio']:.2f}" if "ratio" in r[level] else r[level].get("error", "?") for level in LEVELS]
        error = max(r[level].get("max_abs_err", float("nan")) for level in LEVELS)
        lines.append(f"| {r['model']} | {r['activation']} | {r['rewritten']} | {r['kept']} | {r['nodes_added']} | {ratios[0]} | {ratios[1]} | {error:.3g} |")
    geo = {level: statistics.geometric_mean([r[level]["ratio"] for r in rows if "ratio" in r[level]]) for level in LEVELS}
    lines.append(f"\ngeometric mean ratio: {geo['disable']:.2f} without optimizations, {geo['all']:.2f} with all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    warmup, repeats = (1, 5) if args.quick else (5, 50)
    rows = []
    for name in Q.BUILDERS:
        for activation in Q.ACTIVATIONS:
            print(f"timing {name} ({activation})", file=sys.stderr, flush=True)
            rows.append(bench_model(name, activation, warmup, repeats))
    print(json.dumps(rows, indent=2) if args.json else render(rows))
    return 1 if any("error" in r[level] for r in rows for level in LEVELS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
