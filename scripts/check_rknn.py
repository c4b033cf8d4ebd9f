#!/usr/bin/env python3
"""Build ``--target rknn`` rewrites with Rockchip's rknn-toolkit2 2.5.0 and run them in its simulator.

**Optional developer script: it needs rknn-toolkit2** (about 6 GB with its
torch), which the package, its tests and CI do not depend on. Never import it
from the tests. Use a separate Python 3.11 environment::

    python3.11 -m venv /tmp/rknnvenv
    /tmp/rknnvenv/bin/pip install rknn-toolkit2==2.5.0

rknn-toolkit2 2.5.0 asks for ``torch<=2.4.0``, which from the index is a CUDA
build of several GB. Only ``torch`` being importable matters for the ONNX path,
so where a CPU wheel is at hand this also works (pip warns about the pin)::

    /tmp/rknnvenv/bin/pip install --no-deps rknn-toolkit2==2.5.0
    /tmp/rknnvenv/bin/pip install 'protobuf>=4.21.6,<=4.25.4' psutil ruamel.yaml scipy tqdm \\
        opencv-python fast-histogram 'numpy<=1.26.4' 'onnx>=1.16.1,<=1.18.0' onnxruntime \\
        'setuptools<70'   # setuptools<70: the toolkit imports pkg_resources
    # torch 2.13 asks for setuptools>=77: install the local CPU wheel without its deps, and those by hand
    /tmp/rknnvenv/bin/pip install --no-deps torch==2.13.0
    /tmp/rknnvenv/bin/pip install filelock typing_extensions sympy networkx jinja2 fsspec

Run it with that environment's python; the rewriter runs as a subprocess in
the project's own environment (``--python``, default ``<repo>/.venv/bin/python``)
from ``--repo`` (default: the checkout this script is in)::

    /tmp/rknnvenv/bin/python scripts/check_rknn.py [--repo /work/main] [--python /work/main/.venv/bin/python]
        [--only NAME[,NAME]] [--list] [--workdir DIR] [-v]

For each case the original model is built in code (no downloads) or read from
``tests/data/torch/``, rewritten with ``python -m rewriter IN OUT --target rknn``
(plus ``--overwrite-input-shape`` for dynamic dims), and then both the original
and the rewrite go through ``RKNN.config(target_platform='rk3588')``,
``load_onnx``, ``build(do_quantization=False)``, ``init_runtime()`` (the
simulator) and ``inference(data_format='nchw')``, each in its own process (a
"Fatal Error" in the compiler can abort it) with the toolkit's verbose log kept
in ``--workdir``. Both are compared with onnxruntime on the ORIGINAL model.
The original's own simulator error is the toolkit's float16 noise (unless it
exceeds ``WRONG_REL * max|ref|``: then the toolkit computes the original
wrongly, ``orig WRONG``, and only the float16 tolerance applies). The rewrite
passes when it builds and runs with no error line in its log that the
original's log lacks, no compiler warning that the original's build lacks (a
``Failed to config layer ... fallback to single core mode`` block and its
``Please help report this bug!``, read from the toolkit's standard output, where
librknnc prints them, as well as its log file; compared without layer names, by
count), its error is within ``max(NOISE_FACTOR * noise,
FP16_REL * max|ref|)``, and the rewriter kept no pool other than those rknn
runs natively (``KEPT`` otherwise).

The table, per case: the verdict; the rewriter's pools rewritten/native/kept;
whether the rewrite built and ran in the simulator; the original's state in
the toolkit; the layers the toolkit placed on the CPU (from its layer table,
Input/OutputOperator left out), for the rewrite and the original; the
rewrite's and the original's max abs error against onnxruntime; the
tolerance. Below it: kept pools with their reasons, the toolkit's error lines
and CPU-fallback warnings. A case whose original the toolkit cannot build or
run either is ``n/a`` when the rewrite does not build either. Exit status 1
if any case is FAIL or KEPT, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, version_converter

REPO = Path(__file__).resolve().parent.parent
NOISE_FACTOR = 2.0  # the rewrite may add some float16 roundings of its own (cascades, Adds)
FP16_REL = 2.0**-8  # a few float16 ulps at the output's magnitude
WRONG_REL = 2.0**-5  # an original simulator error beyond this (relative to max|ref|) is a toolkit bug, not noise
CHANNELS = 4
STEPS = ("config", "load_onnx", "build", "init_runtime", "inference")  # the worker's, in order
MAX_OPSET = 19  # rknn-toolkit2 2.5.0: "Unsupport onnx opset 20, need <= 19!"
# An error line of the toolkit (its own "E" level, the compiler's fatal messages).
ERROR_RE = re.compile(r"(^E |\bE RKNN\b|Fatal|\bfailed\b|Error|REGTASK|Traceback)", re.IGNORECASE)
# The compiler's warnings about a layer it could not place as planned (issue 22): on rk3588,
# "W RKNN: Failed to config layer: 'Conv:NAME' using 3Core fallback to single core mode,",
# the layer's geometry on the next lines, then "Please help report this bug!". librknnc
# prints them on standard output only: the toolkit's own log file (verbose_file) lacks them.
COMPILER_RE = re.compile(r"Failed to config layer|fallback|Please help report", re.IGNORECASE)
LAYER_NAME_RE = re.compile(r"'(\w+):[^']*'")  # 'Conv:pool/poolrewrite/avg_stage_3' -> 'Conv:<layer>'
# One row of the toolkit's layer table: "ID OpType DataType Target InputShape ...".
WARN_RE = re.compile(r"^W .*(fallback|cpu|not support)", re.IGNORECASE)
LAYER_RE = re.compile(r"^D RKNN: \[[\d:.]+\]\s+(\d+)\s+(\S+)\s+(FLOAT16|FLOAT|INT8|INT16|INT32|INT64|UINT8|BOOL)\s+(CPU|NPU)\s")


# -- the cases ------------------------------------------------------------------------


def _model(nodes: list, shape: list, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(shape))]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _pool(op: str, shape: list, **attrs) -> onnx.ModelProto:
    return _model([helper.make_node(op, ["x"], ["y"], name="pool", **attrs)], shape)


def _same_max(src: str, dst: str, k: int) -> onnx.NodeProto:
    return helper.make_node("MaxPool", [src], [dst], name=f"{dst}_pool", kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)


def _sppf(side: int) -> onnx.ModelProto:
    """YOLOv5 SPPF: three chained MaxPool 5/s1/p2 on a SiLU output (signed), Concat."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["silu"])]
    nodes += [_same_max("silu", "p1", 5), _same_max("p1", "p2", 5), _same_max("p2", "p3", 5)]
    nodes.append(helper.make_node("Concat", ["silu", "p1", "p2", "p3"], ["y"], axis=1))
    return _model(nodes, [1, CHANNELS, side, side])


def _spp(side: int) -> onnx.ModelProto:
    """YOLOv3 SPP: parallel MaxPool 5/9/13, s1, p k//2, Concat."""
    nodes = [_same_max("x", f"p{k}", k) for k in (5, 9, 13)]
    nodes.append(helper.make_node("Concat", ["x", "p5", "p9", "p13"], ["y"], axis=1))
    return _model(nodes, [1, CHANNELS, side, side])


def _sq(c: int, h: int, w: Optional[int] = None) -> list:
    return [1, c, h, h if w is None else w]


POOL_CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet_stem": lambda: _pool("MaxPool", _sq(CHANNELS, 112), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "vgg_2x2": lambda: _pool("MaxPool", _sq(CHANNELS, 28), kernel_shape=[2, 2], strides=[2, 2]),
    "squeeze_ceil": lambda: _pool("MaxPool", _sq(CHANNELS, 111), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "squeeze_ceil_7x8": lambda: _pool("MaxPool", _sq(CHANNELS, 7, 8), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "incep_max_same": lambda: _pool("MaxPool", _sq(CHANNELS, 35), kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "incep_max_s2": lambda: _pool("MaxPool", _sq(CHANNELS, 35), kernel_shape=[3, 3], strides=[2, 2]),
    "incep_avg_cip0": lambda: _pool("AveragePool", _sq(CHANNELS, 35), kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
    "dense_avg_2x2": lambda: _pool("AveragePool", _sq(CHANNELS, 28), kernel_shape=[2, 2], strides=[2, 2]),
    "sppf_8": lambda: _sppf(8),
    "sppf_20": lambda: _sppf(20),
    "spp_8": lambda: _spp(8),
    "spp_20": lambda: _spp(20),
    "gap_7": lambda: _pool("GlobalAveragePool", _sq(CHANNELS, 7)),
    "gap_40": lambda: _pool("GlobalAveragePool", _sq(CHANNELS, 40)),
    "gmp_20": lambda: _pool("GlobalMaxPool", _sq(CHANNELS, 20)),
    # issue 22: auto_pad pools rknn runs natively (judged on their resolved pads) ...
    "crnn_valid_2x2": lambda: _pool("MaxPool", _sq(CHANNELS, 225, 30), kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID"),
    "same_upper_1x2": lambda: _pool("MaxPool", _sq(CHANNELS, 8, 25), kernel_shape=[1, 2], strides=[1, 2], auto_pad="SAME_UPPER"),
    # ... and a PP-OCRv4-detector-like 160x160 average at 96 channels, as an AveragePool
    # (not native: kernel 160) and as the GlobalAveragePool rknn runs itself
    "avg_160_c96": lambda: _pool("AveragePool", _sq(96, 160), kernel_shape=[160, 160], strides=[160, 160]),
    "avg_160_c256": lambda: _pool("AveragePool", _sq(256, 160), kernel_shape=[160, 160], strides=[160, 160]),
    "max_160_c96": lambda: _pool("MaxPool", _sq(96, 160), kernel_shape=[160, 160], strides=[160, 160]),
    "gap_160_c96": lambda: _pool("GlobalAveragePool", _sq(96, 160)),
}
# tests/realistic.py builders (deep random-weight stand-ins), built dynamic and deployed static.
REALISTIC = ("yolo_sppf_detector", "ocr_se_recognizer", "paddle_det", "mtcnn_pnet", "keras_nhwc_classifier", "text_1d_classifier")
# tests/data/torch exports -> the deploy shape of each input whose dims are dynamic
TORCH = {
    "resnet18.ts13.onnx": {"x": [1, 3, 32, 32]},
    "resnet18.ts15_funcs.onnx": {"x": [1, 3, 32, 32]},
    "sppf.dynamo.onnx": {},
    "inception.ts9.onnx": {"x": [1, 3, 35, 35]},
    "squeezenet.ts13.onnx": {"x": [1, 3, 33, 33]},
    "adaptive_max.dynamo.onnx": {},
    "dilated.dynamo_dyn.onnx": {"x": [1, 3, 17, 18]},
    "ocr_se.ts13_dynhw.onnx": {"x": [1, 3, 32, 96]},
    "ocr_se.dynamo_dynhw.onnx": {"x": [1, 3, 32, 96]},
    "yolo_sppf.ts13_dynhw.onnx": {"x": [1, 3, 64, 64]},
    "yolo_sppf.dynamo_dynhw.onnx": {"x": [1, 3, 64, 64]},
    "avg_ceil_nocip.ts13_fp16.onnx": {"x": [1, 3, 14, 15]},
    "pool3d.ts13.onnx": {"x": [1, 2, 8, 9, 10]},
    # segnet.dynamo.onnx left out: the toolkit's fuse_ops never ends on its unpool (ScatterElements), original included
    "scripted_if.ts13.onnx": {"x": [1, 3, 16, 16]},
}


@dataclass
class Case:
    """One model to check: where the original is, and the static shape of every input."""

    name: str
    source: Path
    shapes: dict[str, list[int]]
    dynamic: bool  # the original declares dynamic dims: rewrite with --overwrite-input-shape
    note: str = ""
    options: tuple[str, ...] = ()  # more options for the rewrite (e.g. --allow Reshape)


def _declared(model: onnx.ModelProto) -> dict[str, list]:
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim] for v in model.graph.input}


def make_cases(repo: Path, workdir: Path) -> list[Case]:
    """Every case, its original written under ``workdir`` (or read from the repo's test data)."""
    cases = []
    for name, build in POOL_CASES.items():
        path = workdir / f"{name}.onnx"
        model = build()
        onnx.checker.check_model(model)
        onnx.save(model, path)
        cases.append(Case(name, path, {k: list(v) for k, v in _declared(model).items()}, False))
    sys.path.insert(0, str(repo / "tests"))
    try:
        import realistic  # the repo's own builders: numpy, onnx and onnxruntime only
    except Exception as exc:  # an older checkout, or a builder this onnx cannot run
        print(f"note: tests/realistic.py not usable ({exc!r}); its cases are skipped", file=sys.stderr)
        realistic = None
    for name in REALISTIC if realistic is not None else ():
        path = workdir / f"{name}.onnx"
        model = realistic.BUILDERS[name](dynamic=True)
        onnx.save(model, path)
        cases.append(Case(name, path, realistic.deploy_shapes(model), True))
    for name in getattr(realistic, "REDUCTION_BUILDERS", {}) if realistic is not None else ():
        # global pools written as reductions; keepdims 0 and channels-last need Reshape
        path = workdir / f"{name}.onnx"
        model = realistic.REDUCTION_BUILDERS[name]()
        onnx.save(model, path)
        cases.append(Case(f"{name}+reshape", path, {k: list(v) for k, v in _declared(model).items()}, False,
                          "rewritten with --allow Reshape", ("--allow", "Reshape")))
    data = repo / "tests" / "data" / "torch"
    for file, fixed in TORCH.items():
        if not (data / file).exists():
            continue
        model = onnx.load(str(data / file), load_external_data=False)
        declared = _declared(model)
        shapes = {k: fixed.get(k, v) for k, v in declared.items()}
        name, path, note = "torch:" + file.removesuffix(".onnx"), data / file, ""
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset > MAX_OPSET:
            # the dynamo exporter writes opset 20 and the toolkit loads <= 19: convert as a user would
            path = workdir / f"{name.replace(':', '_')}.opset{MAX_OPSET}.onnx"
            onnx.save(version_converter.convert_version(onnx.load(str(data / file)), MAX_OPSET), path)
            note = f"opset {opset} converted to {MAX_OPSET} (onnx.version_converter) for the toolkit"
        cases.append(Case(name, path, shapes, any(None in v for v in declared.values()), note))
    return cases


# -- the rewriter, the reference, the toolkit -------------------------------------------


def rewrite(case: Case, python: str, repo: Path, out: Path, report: Path) -> tuple[int, str]:
    """``python -m rewriter IN OUT --target rknn`` from ``repo``: (exit code, its last stderr line)."""
    args = [python, "-m", "rewriter", str(case.source), str(out), "--target", "rknn", "-q", "--report", str(report), *case.options]
    if case.dynamic:
        for name, dims in case.shapes.items():
            args += ["--overwrite-input-shape", f"{name}:{','.join(map(str, dims))}"]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    lines = proc.stderr.strip().splitlines()
    return proc.returncode, (lines[-1] if lines else "")


def feeds_for(case: Case) -> dict[str, np.ndarray]:
    """Signed-normal inputs (ids in [0, 8) for integer ones) at the case's static shapes."""
    model = onnx.load(str(case.source), load_external_data=False)
    rng = np.random.default_rng(0)
    feeds = {}
    for value in model.graph.input:
        elem = value.type.tensor_type.elem_type
        shape = case.shapes[value.name]
        if elem == TensorProto.INT64:
            feeds[value.name] = rng.integers(0, 8, shape).astype(np.int64)
        elif elem == TensorProto.FLOAT16:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float16)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def reference(case: Case, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime (no graph optimization) on the original."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(case.source), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@dataclass
class Toolkit:
    """What one toolkit run gave: the step that failed (None: all ran), error lines, CPU layers, outputs."""

    failed_step: Optional[str]
    errors: list[str]
    warnings: list[str]  # the toolkit's notes on CPU fallbacks
    cpu_layers: list[str]
    outputs: list[np.ndarray] = field(default_factory=list)
    log: Optional[Path] = None
    # The compiler's layer warnings (COMPILER_RE), one entry per warning: its lines joined,
    # the layer's name left out (the rewrite's layers have names of their own), so that
    # the same warning for the same geometry compares equal to the original's.
    compiler: list[str] = field(default_factory=list)


def _clean(line: str) -> str:
    """A log line without colours or times."""
    return re.sub(r"\[\d\d:\d\d:\d\d\.\d+\] ", "", re.sub(r"\x1b\[[0-9;]*m", "", line)).strip()


def compiler_warnings(lines: list[str]) -> tuple[list[str], set[int]]:
    """The compiler's layer warnings in ``lines`` (cleaned), and the indices they took: a
    "Failed to config layer" line with the geometry lines after it up to "Please help
    report this bug!", or a lone line that says fallback or "Please help report"."""
    found, used, i = [], set(), 0
    while i < len(lines):
        if not COMPILER_RE.search(lines[i]):
            i += 1
            continue
        block, j = [lines[i]], i + 1
        if "failed to config layer" in lines[i].lower():
            # the geometry lines ("core_num ...", "ori_Kh ...") up to the plea, at most 6
            while j < len(lines) and j - i <= 6 and lines[j].startswith("W ") and "failed to config layer" not in lines[j].lower():
                block.append(lines[j])
                j += 1
                if "please help report" in block[-1].lower():
                    break
        used.update(range(i, j))
        found.append(" / ".join(LAYER_NAME_RE.sub(r"'\1:<layer>'", line) for line in block))
        i = j
    return found, used


def run_toolkit(model: Path, feeds: dict[str, np.ndarray], stem: Path, timeout: float) -> Toolkit:
    """Build and simulate ``model`` in a child process (``--worker``); parse what it printed
    (standard output and error: the compiler's own lines) and the toolkit's log file."""
    feeds_path, outs_path, log_path, toolkit_log = (
        stem.with_name(stem.name + suffix) for suffix in (".feeds.npz", ".rknn_out.npz", ".rknn.log", ".toolkit.log")
    )
    np.savez(feeds_path, **{f"i{n}": v for n, v in enumerate(feeds.values())})
    spec = json.dumps({"model": str(model), "names": list(feeds), "shapes": [list(v.shape) for v in feeds.values()], "log": str(toolkit_log)})
    with open(log_path, "w") as log:
        try:
            returncode = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--worker", spec, str(feeds_path), str(outs_path)],
                stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=stem.parent,  # the toolkit dumps check*.onnx into its cwd
            ).returncode
        except subprocess.TimeoutExpired:  # the child is killed
            returncode = None
    text = log_path.read_text(errors="replace")
    steps = re.findall(r"^@@step (\S+) (-?\d+)$", text, re.MULTILINE)
    failed = next((s for s, rc in steps if rc != "0"), None)
    if failed is None and (returncode != 0 or len(steps) < len(STEPS)):
        failed = STEPS[len(steps)] if len(steps) < len(STEPS) else f"exit {returncode}"  # it raised in that step
        if returncode is None:
            failed += f":timeout {timeout:g}s"
    errors, warnings = [], []
    printed = [_clean(line) for line in text.splitlines()]
    compiler, taken = compiler_warnings(printed)
    logged = [_clean(line) for line in toolkit_log.read_text(errors="replace").splitlines()] if toolkit_log.exists() else []
    logged_compiler, logged_taken = compiler_warnings(logged)
    # The log file repeats what the toolkit printed through its logger; count each warning once.
    compiler += [w for w in logged_compiler if w not in compiler]
    lines = [line for n, line in enumerate(printed) if n not in taken] + [line for n, line in enumerate(logged) if n not in logged_taken]
    for line in lines:
        if line.startswith("@@"):
            continue
        found = errors if ERROR_RE.search(line) else warnings if WARN_RE.search(line) else None
        if found is not None and line not in found:
            found.append(line)
    layers = (LAYER_RE.match(line) for line in text.replace("\r", "\n").splitlines())
    cpu = [m.group(2) for m in layers if m and m.group(4) == "CPU" and m.group(2) not in ("InputOperator", "OutputOperator")]
    outputs = []
    if failed is None and outs_path.exists():
        with np.load(outs_path) as data:
            outputs = [data[f"o{n}"] for n in range(len(data.files))]
    return Toolkit(failed, errors, warnings, cpu, outputs, log_path, compiler)


def worker(spec_json: str, feeds_path: str, outs_path: str) -> int:
    """The child: one model through the toolkit, each step's return code printed as ``@@step NAME RC``."""
    from rknn.api import RKNN

    spec = json.loads(spec_json)
    with np.load(feeds_path) as data:
        inputs = [data[f"i{n}"] for n in range(len(spec["names"]))]
    rknn = RKNN(verbose=True, verbose_file=spec.get("log"))

    def step(name: str, rc) -> bool:
        code = rc if isinstance(rc, int) else (0 if rc is not None else -1)
        print(f"\n@@step {name} {code}", flush=True)
        return code == 0

    if not step("config", rknn.config(target_platform="rk3588")):
        return 1
    if not step("load_onnx", rknn.load_onnx(model=spec["model"], inputs=spec["names"], input_size_list=spec["shapes"])):
        return 1
    if not step("build", rknn.build(do_quantization=False)):
        return 1
    if not step("init_runtime", rknn.init_runtime()):
        return 1
    outputs = rknn.inference(inputs=inputs, data_format="nchw")
    if not step("inference", 0 if outputs is not None else -1):
        return 1
    np.savez(outs_path, **{f"o{n}": np.asarray(o) for n, o in enumerate(outputs)})
    rknn.release()
    return 0


# -- comparing and reporting -------------------------------------------------------------


def max_error(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Max abs difference over all outputs (inf when counts or sizes differ)."""
    if len(got) != len(ref):
        return float("inf")
    worst = 0.0
    for g, r in zip(got, ref):
        if g.size != r.size:
            return float("inf")
        g = g.reshape(r.shape).astype(np.float64)
        worst = max(worst, float(np.max(np.abs(g - r.astype(np.float64)))) if r.size else 0.0)
    return worst


@dataclass
class Row:
    """One line of the table."""

    name: str
    verdict: str  # ok | FAIL | KEPT (built and matched, but a pool the target cannot run was kept) | n/a
    pools: str  # the rewriter's report: rewritten/native/kept pools, or its exit code
    built: str  # did the rewrite build and run in the simulator
    orig: str  # the original in the toolkit: ok | WRONG (beyond float16 noise) | the step that failed
    cpu_new: str
    cpu_orig: str
    err: float
    noise: float
    tol: float
    notes: list[str]


def _cpu(layers: list[str]) -> str:
    if not layers:
        return "-"
    counts: dict[str, int] = {}
    for op in layers:
        counts[op] = counts.get(op, 0) + 1
    return ",".join(f"{op}x{n}" if n > 1 else op for op, n in counts.items())


def _cause(errors: list[str]) -> str:
    """The telling line of a failed step's log: the last error that is no traceback frame or banner."""
    boring = re.compile(r"Traceback \(most recent|^(E (\S+: )?)?(File \"|rknn-toolkit2 version|\^)")
    telling = [line for line in errors if not boring.search(line)]
    return (telling or errors or ["(no error line)"])[-1][:400]


def _pools(report: Path) -> tuple[str, list[str]]:
    """'rewritten/native/kept' from the rewriter's JSON report, and each kept node with its reason."""
    nodes = json.loads(report.read_text()).get("nodes", []) if report.exists() else []
    native = [n for n in nodes if n.get("status") == "kept" and "natively" in (n.get("reason") or "")]
    kept = [n for n in nodes if n.get("status") == "kept" and n not in native]
    rewritten = [n for n in nodes if n.get("status") != "kept"]
    return f"{len(rewritten)}/{len(native)}/{len(kept)}", [f"kept {n.get('name')}: {n.get('reason')}" for n in kept]


def check(case: Case, python: str, repo: Path, workdir: Path, verbose: bool, timeout: float) -> Row:
    """Rewrite ``case``, run original and rewrite through the toolkit, judge the rewrite."""
    stem = workdir / case.name.replace(":", "_")
    out, report = stem.with_name(stem.name + ".rknn_target.onnx"), stem.with_name(stem.name + ".report.json")
    code, last = rewrite(case, python, repo, out, report)
    feeds = feeds_for(case)
    ref = reference(case, feeds)
    floats = [r.astype(np.float64) for r in ref if r.size and np.issubdtype(r.dtype, np.floating)]
    scale = max(max((float(np.max(np.abs(r))) for r in floats), default=1.0), 1.0)
    orig = run_toolkit(case.source, feeds, stem.with_name(stem.name + ".orig"), timeout)
    noise = max_error(orig.outputs, ref) if orig.failed_step is None else float("nan")
    notes = [case.note] if case.note else []
    if orig.failed_step is not None:
        orig_state = f"NO({orig.failed_step})"
        notes.append(f"original: {orig.failed_step} failed: {_cause(orig.errors)}")
    elif not noise <= WRONG_REL * scale:
        # the toolkit computes the original wrongly: that is no float16 noise to allow the rewrite
        orig_state = "WRONG"
        notes.append(f"original: simulator error {noise:.3g} > {WRONG_REL:g} * max|ref| {scale:.3g}: the toolkit's own pools are wrong here")
    else:
        orig_state = "ok"
    notes += [f"original log: {line}" for line in (orig.errors if verbose else []) + orig.warnings]
    tol = max(NOISE_FACTOR * noise if orig_state == "ok" else 0.0, FP16_REL * scale)
    if code != 0:
        notes.append(f"rewriter: exit {code}: {last}")
        return Row(case.name, "FAIL", f"exit {code}", "-", orig_state, "-", _cpu(orig.cpu_layers), float("nan"), noise, tol, notes)
    pools, kept = _pools(report)
    notes += kept
    new = run_toolkit(out, feeds, stem.with_name(stem.name + ".new"), timeout)
    err = max_error(new.outputs, ref) if new.failed_step is None else float("nan")
    fresh = [line for line in new.errors if line not in orig.errors]  # the original's own error lines do not count
    # Compiler warnings the original's build lacks, counted: a second copy of one is new too.
    unmatched = list(orig.compiler)
    warned = []
    for warning in new.compiler:
        if warning in unmatched:
            unmatched.remove(warning)
        else:
            warned.append(warning)
    if new.failed_step is not None:
        built = f"NO({new.failed_step})"
        notes.append(f"rewrite: {new.failed_step} failed: {_cause(new.errors)}")
        verdict = "n/a" if orig.failed_step is not None else "FAIL"
    elif fresh:
        built, verdict = "errors", "FAIL"
    elif warned:
        built, verdict = "warnings", "FAIL"
    elif not err <= tol:
        built, verdict = "yes", "FAIL"
    else:
        built, verdict = "yes", "KEPT" if kept else "ok"
    notes += [f"rewrite log: {line}" for line in (fresh if verbose else fresh[:6]) + new.warnings]
    notes += [f"rewrite compiler warning the original lacks: {w}" for w in warned]
    notes += [f"original compiler warning: {w}" for w in orig.compiler]
    if verbose:
        notes.append(f"logs: {new.log} {orig.log}")
    return Row(case.name, verdict, pools, built, orig_state, _cpu(new.cpu_layers), _cpu(orig.cpu_layers), err, noise, tol, notes)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose rewriter and tests/ to use (default: this one)")
    parser.add_argument("--python", help="the project's python, with onnx-poolrewrite's dependencies (default: <repo>/.venv/bin/python)")
    parser.add_argument("--only", help="comma-separated case names (see --list)")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--workdir", type=Path, help="keep models and toolkit logs here (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one toolkit build and run (default: 300)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every error line and the log paths")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    repo = args.repo.resolve()
    python = args.python or str(repo / ".venv" / "bin" / "python")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="check_rknn."))
    workdir.mkdir(parents=True, exist_ok=True)
    cases = make_cases(repo, workdir)
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {c.name for c in cases}
        if unknown:
            parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.name in wanted]
    git = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
    print(f"repo {repo} ({git}); rewriter python {python}; workdir {workdir}", flush=True)
    head = (
        f"{'case':34s} {'verdict':7s} {'pools r/n/k':11s} {'built':14s} {'orig':12s} {'CPU layers (rewrite)':22s} "
        f"{'CPU layers (orig)':22s} {'err':>9s} {'orig err':>9s} {'tol':>9s}"
    )
    print(head + "\n" + "-" * len(head), flush=True)
    rows = []
    for case in cases:
        try:
            row = check(case, python, repo, workdir, args.verbose, args.timeout)
        except Exception as exc:  # one broken case does not hide the others
            row = Row(case.name, "FAIL", "crash", "-", "-", "-", "-", float("nan"), float("nan"), float("nan"), [repr(exc)])
        rows.append(row)
        print(
            f"{row.name:34s} {row.verdict:7s} {row.pools:11s} {row.built:14s} {row.orig[:12]:12s} {row.cpu_new[:22]:22s} "
            f"{row.cpu_orig[:22]:22s} {row.err:9.2e} {row.noise:9.2e} {row.tol:9.2e}",
            flush=True,
        )
    noted = [r for r in rows if r.notes]
    if noted:
        print("\nnotes:")
        for row in noted:
            for note in row.notes:
                print(f"  {row.name}: {note}")
    failed = [r.name for r in rows if r.verdict in ("FAIL", "KEPT")]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cases pass" + (f"; failing: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
