"""Run the CPU-sensitive tests as on another x86-64 CPU (optional; not in CI).

onnxruntime picks its kernels by CPUID: the NCHWc block (8 floats with AVX2, 16
with AVX-512) and the int8 paths (VNNI or not) differ between machines of the same
kind, and so do ORT_ENABLE_ALL results. The suite must assert nothing that holds on
one of them only. This script runs the tests that touch those paths under
``qemu-x86_64 -cpu MODEL`` (user-mode emulation: the same Python and wheels, another
CPUID), by default an AMD EPYC Rome (AVX2, no AVX-512), a CPU the issue measured on.

Setup, once (Debian's QEMU 7.2 emulates AVX2): ``apt-get install qemu-user``.

    python scripts/check_other_cpu.py                 # EPYC-Rome (AVX2 only)
    python scripts/check_other_cpu.py --cpu Haswell   # another AVX2 CPU
    python scripts/check_other_cpu.py --probe         # only show what the emulated CPU changes

Emulation is slow (about 30x): the default selection takes 10 to 20 minutes on 2 cores.
``--probe`` runs the Paddle-style detector with -1 dims at both onnxruntime levels: its
NCHWc fault shows at 8 channels on AVX2 and at 16 on AVX-512, so it tells which kernels
the emulated CPU gets.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tests whose assertions meet CPU-specific kernels: stale value_info and NCHWc, the levels
# of quantized models, int8 node checks at ORT_ENABLE_ALL.
SELECTION = [
    "tests/test_realistic.py::test_builder_model_is_valid_and_runs",
    "tests/test_exact_truth.py",
    "tests/test_quantized_validation.py",
    "tests/test_quantized_models.py",
]

PROBE = """
import sys; sys.path.insert(0, "tests")
import numpy as np, onnxruntime as ort, realistic
def run(m, feeds, level):
    o = ort.SessionOptions(); o.graph_optimization_level = level
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
for width in (8, 16):
    m = realistic.paddle_det(dynamic=True, width=width)
    f = realistic.example_feeds(m)
    a, b = run(m, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), run(m, f, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    print(f"paddle_det dynamic, {width} channels: levels differ by {float(np.abs(a - b).max() / np.abs(a).max()):.3g} of max |output|")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", default="EPYC-Rome", help="a qemu CPU model (qemu-x86_64 -cpu help lists them)")
    parser.add_argument("--probe", action="store_true", help="only show which NCHWc block the emulated CPU gets")
    parser.add_argument("pytest_args", nargs="*", help="tests to run instead of the default selection")
    args = parser.parse_args()
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("check_other_cpu: qemu-x86_64 not found (apt-get install qemu-user)", file=sys.stderr)
        return 2
    base = [qemu, "-cpu", args.cpu, sys.executable]
    if args.probe:
        return subprocess.run(base + ["-c", PROBE], cwd=REPO, stderr=subprocess.DEVNULL).returncode
    tests = args.pytest_args or SELECTION
    return subprocess.run(base + ["-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
