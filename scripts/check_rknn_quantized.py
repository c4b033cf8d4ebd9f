#!/usr/bin/env python3
"""Build the quantized (QDQ) acceptance models and their rewrites with rknn-toolkit2 and compare them.

**Optional developer script: it needs rknn-toolkit2** in its own venv (see
``scripts/check_rknn.py`` for the install recipe); never run in CI. rknn-toolkit2
imports a QDQ model as a quantization-aware-trained one: ``build(do_quantization=False)``
keeps the model's own scales and runs it in int8. For each model of
``tests/quantized.py`` (quantize_static, per-channel int8 weights, int8 and uint8
activations), the project's environment (``--python``) builds and rewrites it
(``--target`` optional), then this script builds original and rewrite for rk3588,
runs both in the toolkit's simulator on the same inputs and counts the values where
the rewrite differs from the original there (it must be 0: the rewrite computes the
same integers, except where it holds averages whose window sums reach rounding ties:
there the toolkit rounds as it rounds, and the rewrite may move an output by up to 2x
what the toolkit's own arithmetic moves the original away from onnxruntime), and where
each differs from onnxruntime (the toolkit's own int8 arithmetic may differ from
onnxruntime's, on the original too).

    /tmp/rknnvenv/bin/python scripts/check_rknn_quantized.py [--python /work/main/.venv/bin/python] [--target rknn]

Exit status 1 if a rewrite differs from its original in the simulator beyond that, or fails to build.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

# Run by the project's environment: build, quantize and rewrite the models, and record onnxruntime's outputs.
PREPARE = r"""
import json, sys
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
import quantized as Q
from rewriter import rewrite_model
work, target, cases = Path({work!r}), {target!r}, []
for name in Q.BUILDERS:
    for activation in Q.ACTIVATIONS:
        original = Q.quantized(name, Q.Quantization(activation, True, False))
        written, report = rewrite_model(original, target=target)
        stem = f"{{name}}-{{activation}}"
        onnx.save(original, work / f"{{stem}}.onnx")
        onnx.save(written, work / f"{{stem}}-rewritten.onnx")
        shape = list(Q.input_shape(original))
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.save(work / f"{{stem}}-x.npy", x)
        for suffix in ("", "-rewritten"):
            y = ort.InferenceSession(str(work / f"{{stem}}{{suffix}}.onnx"), providers=["CPUExecutionProvider"]).run(None, {{"x": x}})[0]
            np.save(work / f"{{stem}}{{suffix}}-ort.npy", y)
        ties = sum("reach QuantizeLinear rounding ties" in (n.note or "") for n in report.nodes)
        cases.append(dict(stem=stem, rewritten=sum(n.status == "rewritten" for n in report.nodes), kept=sum(n.status != "rewritten" for n in report.nodes), ties=ties))
print(json.dumps(cases))
"""

# Run in a process of its own per model: a compiler "Fatal Error" can abort it.
RUN = r"""
import sys, numpy as np
from rknn.api import RKNN
model, x_path, out_path = sys.argv[1:4]
rknn = RKNN(verbose=False)
rknn.config(target_platform="rk3588")
assert rknn.load_onnx(model=model) == 0, "load_onnx failed"
assert rknn.build(do_quantization=False) == 0, "build failed"
assert rknn.init_runtime() == 0, "init_runtime failed"
np.save(out_path, rknn.inference(inputs=[np.load(x_path)], data_format="nchw")[0])
rknn.release()
"""


def simulate(model: Path, x: Path, out: Path) -> str:
    """Build and run ``model`` in the simulator; "" or the error's last line."""
    proc = subprocess.run([sys.executable, "-c", RUN, str(model), str(x), str(out)], capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
        return lines[-1] if lines else f"exit {proc.returncode}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(REPO_ROOT / ".venv" / "bin" / "python"), help="the project's environment")
    parser.add_argument("--target", default=None, help="a --target profile for the rewrite (default: none)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rknnq-"))
    work.mkdir(parents=True, exist_ok=True)
    prepared = subprocess.run([args.python, "-c", PREPARE.format(repo=str(REPO_ROOT), work=str(work), target=args.target)],
                              capture_output=True, text=True)
    if prepared.returncode != 0:
        print(prepared.stderr[-2000:], file=sys.stderr)
        return 1
    cases = json.loads(prepared.stdout.strip().splitlines()[-1])
    print("| model | pools rewritten / kept | rknn: rewrite vs original | rknn vs onnxruntime: original, rewrite |")
    print("|---|---|---|---|")
    failures = 0
    for case in cases:
        stem = case["stem"]
        results = {}
        for suffix in ("", "-rewritten"):
            out = work / f"{stem}{suffix}-rknn.npy"
            error = simulate(work / f"{stem}{suffix}.onnx", work / f"{stem}-x.npy", out)
            results[suffix] = error or np.load(out)
        if any(isinstance(r, str) for r in results.values()):
            failures += 1
            print(f"| {stem} | {case['rewritten']} / {case['kept']} | FAILED: {results[''] if isinstance(results[''], str) else results['-rewritten']} | |")
            continue
        original, rewrite = results[""], results["-rewritten"]
        differ = int(np.sum(original != rewrite))
        ort_original, ort_rewrite = (np.load(work / f"{stem}{s}-ort.npy") for s in ("", "-rewritten"))
        moved = float(np.max(np.abs(original.astype(np.float64) - rewrite), initial=0.0))
        own = float(np.max(np.abs(original.astype(np.float64) - ort_original), initial=0.0))
        # Averages at rounding ties round as the toolkit rounds them: as right as the original,
        # within 2x what the toolkit's own arithmetic moves the original away from onnxruntime.
        failures += bool(differ) and not (case["ties"] and moved <= 2 * own)
        tie = f" (ties: by {moved:.3g}, original vs onnxruntime {own:.3g})" if case["ties"] and differ else ""
        print(f"| {stem} | {case['rewritten']} / {case['kept']} | {differ} of {original.size} differ{tie} | "
              f"{int(np.sum(original != ort_original))}, {int(np.sum(rewrite != ort_rewrite))} of {original.size} differ |")
    print("ok" if not failures else f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
