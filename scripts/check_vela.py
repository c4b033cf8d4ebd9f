"""Optional check: Vela compiles the ``--target ethos-u`` rewrites for the NPU, and what they cost (issue 23).

Not a project dependency and never run in CI; the venv of ``scripts/check_tflite.py``
(Python 3.12, tensorflow-cpu 2.21.0, onnx2tf 2.6.9, ethos-u-vela 5.2.0; see its
docstring). For each case of the issue's table and the two real-model stand-ins (YOLO-SPPF,
PP-OCR with SE blocks; ``check_tflite.CASES``), the original,
the default rewrite and the ``--target ethos-u`` rewrite are converted to int8 TFLite
with onnx2tf (tf_converter, calibration data of its own through ``-cind``) and compiled
with Vela for ethos-u55-128 and ethos-u65-256 (Vela's default vela.ini system
configurations). Per model and accelerator it prints the NPU and CPU operator counts
and Vela's ``cycles_total`` estimate, and the rewrite's cycles as a multiple of the
original's, and the int8 TFLite's error against onnxruntime on the original (largest
absolute error over the largest output value, four inputs in [0, 1); only meaningful for
4-D outputs: the stand-ins' 3-D outputs are not mapped from onnx2tf's layout yet).

    /tmp/tfvenv/bin/python scripts/check_vela.py [--cases gap-20,gap-40] [--accelerators ethos-u55-128]

Exit status 0 when every ethos-u rewrite converts, runs with no CPU operator, and where
the original ran wholly on the NPU costs at most 1.05x its cycles (the issue's
acceptance); 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_tflite import CASES, int8_error, to_int8_tflite, variant  # noqa: E402

ACCELERATORS = ("ethos-u55-128", "ethos-u65-256")
VARIANTS = ("original", "default", "ethos-u")
LIMIT = 1.05


def vela(tflite: Path, accelerator: str, out: Path) -> dict:
    """Vela's NPU / CPU operator counts and cycles_total for one model."""
    run = subprocess.run([sys.executable, "-m", "ethosu.vela", str(tflite), "--accelerator-config", accelerator, "--output-dir", str(out)],
                         capture_output=True, text=True)
    if run.returncode:
        return {"error": (run.stdout + run.stderr).strip().splitlines()[-1][:200]}
    text = run.stdout
    counts = {kind: int(m.group(1)) for kind in ("CPU", "NPU") if (m := re.search(rf"{kind} operators = (\d+)", text))}
    summary = next(out.glob("*_summary_*.csv"))
    row = next(csv.DictReader(summary.open()))
    return {"cpu": counts.get("CPU", 0), "npu": counts.get("NPU", 0), "cycles": int(float(row["cycles_total"]))}


def main(argv: Optional[list[str]] = None) -> int:
    """Compile every case's variants; one line per case, variant and accelerator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--accelerators", default=",".join(ACCELERATORS))
    args = parser.parse_args(argv)
    failed = []
    print(f"{'case':14} {'variant':9} {'accelerator':14} {'NPU':>4} {'CPU':>4} {'cycles':>9} {'x original':>10} {'int8 err':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            original = CASES[case]()
            models = {name: to_int8_tflite(variant(CASES[case](), name), Path(tmp) / case / name) for name in VARIANTS}
            errors = {name: int8_error(original, path) if path else float("nan") for name, (path, _) in models.items()}
            for accelerator in args.accelerators.split(","):
                base = None
                for name, (path, error) in models.items():
                    got = vela(path, accelerator, Path(tmp) / case / name / accelerator) if path else {"error": f"does not convert: {error}"}
                    if "error" in got:
                        print(f"{case:14} {name:9} {accelerator:14} {got['error']}")
                        failed += [f"{case}/{accelerator}"] if name == "ethos-u" else []
                        continue
                    if name == "original":
                        base = got
                    ratio = got["cycles"] / base["cycles"] if base else float("nan")
                    print(f"{case:14} {name:9} {accelerator:14} {got['npu']:4} {got['cpu']:4} {got['cycles']:9} {ratio:10.2f} {errors[name]:9.4f}", flush=True)
                    if name == "ethos-u" and (got["cpu"] or (base and base["cpu"] == 0 and ratio > LIMIT)):
                        failed.append(f"{case}/{accelerator}")
    print("FAILED: " + ", ".join(failed) if failed else f"every ethos-u rewrite runs wholly on the NPU, within {LIMIT}x where the original did")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
