#!/usr/bin/env python3
"""How much the stand-in models of ``tests/realistic.py`` amplify rounding.

For each builder (static, at its default size) and each input suite, prints
per output:

* ``opt-noise``: max |ORT_ENABLE_ALL - ORT_DISABLE_ALL| / max |ref|, the
  network's own optimizer noise (real deployed nets show 2e-5..3e-4);
* ``rewrite``: the same measure for the model rewritten by
  ``rewriter.rewrite_model`` against the original (both without
  optimizations), so the two columns can be set side by side as in issue 13.

Suites: ``signed-normal``, ``tie-heavy-int`` (integers in -10..10) and
``wide-range`` (signed, magnitudes 1e-6..1e6); an integer input gets ids in
[0, 8) under every suite, as the validator does. Usage::

    python scripts/measure_noise.py [--only NAME[,NAME]] [--seed N] [--no-rewrite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import realistic  # noqa: E402
from helpers import run  # noqa: E402  (one onnxruntime run, optimized or not)


def _wide(rng: np.random.Generator, shape) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0) * 10.0 ** rng.uniform(-6, 6, shape)


SUITES = {
    "signed-normal": lambda rng, shape: rng.standard_normal(shape),
    "tie-heavy-int": lambda rng, shape: rng.integers(-10, 11, shape).astype(np.float64),
    "wide-range": _wide,
}


def feeds_for(model: onnx.ModelProto, suite: str, seed: int) -> dict[str, np.ndarray]:
    """One suite's inputs at the model's deploy shapes."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = tuple(realistic.deploy_shapes(model)[vi.name])
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[vi.name] = rng.integers(0, 8, shape).astype(np.int64)
        else:
            feeds[vi.name] = SUITES[suite](rng, shape).astype(np.float32)
    return feeds


def relative_error(ref: np.ndarray, other: np.ndarray) -> float:
    """max |other - ref| / max |ref| (inf when either is not finite)."""
    ref64, other64 = ref.astype(np.float64), other.astype(np.float64)
    if not (np.isfinite(ref64).all() and np.isfinite(other64).all()):
        return float("inf")
    scale = np.abs(ref64).max()
    return float(np.abs(other64 - ref64).max() / scale) if scale else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma list of builders (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rewrite", action="store_true", help="skip the rewritten-vs-original column")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(realistic.BUILDERS)
    print(f"{'model':22s} {'output':16s} {'suite':14s} {'opt-noise':>10s} {'rewrite':>10s}")
    for name in names:
        model = realistic.BUILDERS[name]()
        rewritten = None
        if not args.no_rewrite:
            from rewriter import rewrite_model

            rewritten, _ = rewrite_model(model)
        for suite in SUITES:
            feeds = feeds_for(model, suite, args.seed)
            ref = run(model, feeds, optimize=False)
            opt = run(model, feeds, optimize=True)
            new = run(rewritten, feeds, optimize=False) if rewritten is not None else [None] * len(ref)
            for out, r, o, n in zip(model.graph.output, ref, opt, new):
                rw = f"{relative_error(r, n):10.2e}" if n is not None else f"{'-':>10s}"
                print(f"{name:22s} {out.name:16s} {suite:14s} {relative_error(r, o):10.2e} {rw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
