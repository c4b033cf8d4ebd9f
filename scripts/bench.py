"""Benchmark onnx-poolrewrite: subgraph speed, rewrite scaling and CLI start-up.

Part A -- pool subgraph speed. Each case is a one-pool ONNX model (opset 17,
float32, static shape, input ``x``), optionally preceded by a Relu. It is
rewritten with :func:`rewriter.rewrite_model` and both models are timed on
onnxruntime's CPU provider with one intra-op and one inter-op thread and
sequential execution. After a warm-up, runs are interleaved (native,
rewritten, native, rewritten, ...) for ``--repeats`` rounds (more for fast
cases, until each model has run for 0.25 s) and the median of each is taken.
That is done for three fresh session pairs; ratio = the median over the pairs
of rewritten median / native median. Both models get the same signed random
input, and the rewritten output is checked against the native one (shape and
max abs error). Also reported: nodes added, the conv
MACs of the rewritten subgraph, and its weight bytes.

Part B -- rewrite time against model size: chains of N pool nodes (alternating
MaxPool 3x3 s1 p1 and AveragePool 3x3 s1 p1 count_include_pad=0 on
1x16x32x32), median of 3 ``rewrite_model`` calls each, plus a ResNet-50-shaped
model with random weights built in memory.

Part D -- what each MaxPool lowering step bought: the signed target shapes
rewritten with earlier versions of the lowering, each timed against native as
in part A. "chain" grows each window by one tap per pairwise max (k-1 per
axis) over a padded copy; "doubling" is the doubling ladder over the padded
copy; "anchored" drops the padded copy for the anchored ladder; "border-fix"
adds the border fix on large strided pools; "default" is what the rewriter does
now: the nested relu chain (one fused conv per tap at the output positions) on
short windows with padding on one side, the rest as in "border-fix". Rows
``_after_relu`` in part A show the last step: no padding work at all when the
input is provably >= 0, and ``spp_block_unshared`` the ladder sharing.

Part E -- the pool inside a network: ``x -> Conv 1x1 -> [Relu ->] pool -> Conv
1x1``, each model profiled by onnxruntime (three fresh sessions each, median): the
kernel time of the pool, or of its subgraph, without the two convs and the
model's own layout conversions at its input and output.

Part F -- speed under each target profile (``--profiles``, default every
built-in one): the issue-15 acceptance pool shapes (part A's cases where it has
them, plus SqueezeNet's ceil_mode pool and the 40x40 / 20x20 global pools) are
rewritten with ``PoolRewritePass(target=profile)``. Per case: what happened to
each pool (native: kept, the target runs it; cascade: split into pools the
target runs; rewritten into convs; kept, with the reason), the nodes added by
op, the conv MACs of the added convs, and the ratio of the rewritten model's
time to the original's, timed side by side as in part A. A model the pass left
unchanged is not timed: its ratio is 1.00.

Part C -- CLI start-up: ``onnx-poolrewrite --help`` and
``python -c "import rewriter.cli"`` wall time, and whether importing the CLI
pulls in onnxruntime.

Usage:
    python scripts/bench.py                       # everything, tables
    python scripts/bench.py --quick --json        # fast smoke run, one JSON object
    python scripts/bench.py --only sppf,gap --skip-scaling --repeats 200
    python scripts/bench.py --skip-steps          # no part D
    python scripts/bench.py --skip-network        # no part E
    python scripts/bench.py --profiles rknn,my.json   # part F under these profiles (--skip-profiles: none)
    python scripts/bench.py --write-docs docs/performance.md   # also regenerate that file's tables
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from rewriter import NodeResult, PoolRewritePass, Profile, ProfileError, load_profile, rewrite_model  # noqa: E402
from rewriter.ops import POOL_OPS  # noqa: E402
from rewriter.profiles import BUILTIN_NAMES  # noqa: E402
from rewriter.report import REWRITTEN  # noqa: E402
from rewriter.selection import NATIVE  # noqa: E402
from rewriter.lower import max_ladders, max_strategies  # noqa: E402

OPSET = 17
SEED = 0
MIN_TIMED_SECONDS = 0.25  # per session and case, unless --quick
MAX_ROUNDS = 2000
SESSION_PAIRS = 3  # fresh native/rewritten session pairs per case (1 with --quick)
OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


# ----------------------------------------------------------------------------
# Part A: pool subgraph speed
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolCase:
    """One single-pool benchmark model."""

    name: str
    op: str
    shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    after_relu: bool = False
    pools: tuple[dict[str, Any], ...] = ()  # several pools on one input, concatenated (op "SPP")
    share_ladders: bool = True
    chained: bool = False  # SPPF: each of ``pools`` reads the one before, not the input


def _pool(k: int, s: int = 1, p: int = 0, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s]}
    if p:
        attrs["pads"] = [p, p, p, p]
    attrs.update(extra)
    return attrs


BASE_CASES: list[PoolCase] = [
    PoolCase("resnet_stem", "MaxPool", (1, 64, 112, 112), _pool(3, 2, 1)),
    PoolCase("vgg", "MaxPool", (1, 128, 56, 56), _pool(2, 2)),
    PoolCase("sppf", "MaxPool", (1, 256, 20, 20), _pool(5, 1, 2)),
    PoolCase("spp13", "MaxPool", (1, 128, 20, 20), _pool(13, 1, 6)),
    PoolCase("inception_max", "MaxPool", (1, 192, 28, 28), _pool(3, 1, 1)),
    PoolCase("inception_avg", "AveragePool", (1, 64, 56, 56), _pool(3, 1, 1, count_include_pad=0)),
    PoolCase("densenet_avg", "AveragePool", (1, 128, 56, 56), _pool(2, 2)),
    PoolCase("gap", "GlobalAveragePool", (1, 512, 7, 7)),
    # Not a target shape: the stem on an odd extent pads both sides (the general case).
    PoolCase("resnet_stem_odd", "MaxPool", (1, 64, 113, 113), _pool(3, 2, 1)),
    # YOLOv3's SPP block: three pools of one input, concatenated with it.
    PoolCase("spp_block", "SPP", (1, 128, 20, 20), pools=(_pool(5, 1, 2), _pool(9, 1, 4), _pool(13, 1, 6))),
    PoolCase(
        "spp_block_unshared", "SPP", (1, 128, 20, 20), pools=(_pool(5, 1, 2), _pool(9, 1, 4), _pool(13, 1, 6)),
        share_ladders=False,
    ),
    # YOLOv5's SPPF block: three 5x5 pools in a chain, concatenated with the input.
    PoolCase("sppf_block", "SPP", (1, 256, 20, 20), pools=(_pool(5, 1, 2),) * 3, chained=True),
]
RELU_VARIANTS = ("resnet_stem", "vgg", "sppf", "inception_max")
# In the real networks these pools read a Relu output (ResNet, VGG and Inception
# blocks end in Relu); SPPF and SPP read SiLU / LeakyReLU outputs, which are signed.
RELU_IN_REAL_NETWORK = frozenset(("resnet_stem", "vgg", "inception_max"))
TARGET_CASES = frozenset(
    ("resnet_stem", "vgg", "sppf", "spp13", "inception_max", "inception_avg", "densenet_avg", "gap")
)
# The same shapes with the input their networks give them.
IN_CONTEXT_CASES = frozenset(n + "_after_relu" if n in RELU_IN_REAL_NETWORK else n for n in TARGET_CASES)


def all_cases() -> list[PoolCase]:
    """The base cases, each followed by its ``_after_relu`` variant where there is one."""
    cases: list[PoolCase] = []
    for case in BASE_CASES:
        cases.append(case)
        if case.name in RELU_VARIANTS:
            cases.append(PoolCase(case.name + "_after_relu", case.op, case.shape, case.attrs, after_relu=True))
    return cases


def build_pool_model(case: PoolCase) -> onnx.ModelProto:
    """``x -> [Relu ->] pool -> y`` with a static float32 input."""
    nodes = []
    pool_in = "x"
    if case.after_relu:
        nodes.append(helper.make_node("Relu", ["x"], ["x_relu"], name="relu"))
        pool_in = "x_relu"
    if case.pools:
        names = [f"p{i}" for i in range(len(case.pools))]
        for i, (name, attrs) in enumerate(zip(names, case.pools)):
            source = names[i - 1] if case.chained and i else pool_in
            nodes.append(helper.make_node("MaxPool", [source], [name], name=name, **attrs))
        nodes.append(helper.make_node("Concat", [pool_in, *names], ["y"], name="concat", axis=1))
    else:
        nodes.append(helper.make_node(case.op, [pool_in], ["y"], name="pool", **case.attrs))
    graph = helper.make_graph(
        nodes,
        case.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(case.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def make_session(model: onnx.ModelProto, opt_level: str) -> ort.InferenceSession:
    """A single-threaded, sequential CPU session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPT_LEVELS[opt_level]
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def time_interleaved(
    sessions: Sequence[ort.InferenceSession], feed: dict[str, np.ndarray], warmup: int, repeats: int
) -> list[float]:
    """Median seconds per run of each session, runs interleaved round by round: at
    least ``repeats`` rounds, more for fast models until each session has run for
    MIN_TIMED_SECONDS (at most MAX_ROUNDS), so that sub-millisecond cases are not
    left to a handful of noisy samples."""
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, feed)
    samples: list[list[float]] = [[] for _ in sessions]
    rounds = 0
    while rounds < repeats or (rounds < MAX_ROUNDS and min(sum(t) for t in samples) < MIN_TIMED_SECONDS):
        rounds += 1
        for sess, times in zip(sessions, samples):
            start = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - start)
    return [statistics.median(t) for t in samples]


def value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor onnx shape inference can resolve."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(d.dim_value for d in dims)
    return shapes


def runtime_shapes(model: onnx.ModelProto, names: Sequence[str], feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``names`` measured by running onnxruntime with them exposed as outputs."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    sess = make_session(exposed, "disable")
    outs = sess.run(list(names), feed)
    return {n: tuple(a.shape) for n, a in zip(names, outs)}


def conv_macs(model: onnx.ModelProto, feed: dict[str, np.ndarray], only: Optional[set[str]] = None) -> int:
    """Multiply-accumulates of every Conv (of those named in ``only``, if given):
    prod(output shape) x (C_in / group) x prod(kernel).

    The weight is ``[C_out, C_in / group, *k]``, so for a depthwise conv
    (``[C, 1, *k]``) this is prod(output shape) x prod(k).
    """
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and (only is None or n.name in only)]
    shapes = value_shapes(model)
    missing = [n.output[0] for n in convs if n.output[0] not in shapes]
    if missing:
        shapes.update(runtime_shapes(model, missing, feed))
    total = 0
    for node in convs:
        w = weights[node.input[1]]
        total += math.prod(shapes[node.output[0]]) * math.prod(w[1:])
    return total


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers, as numpy arrays."""
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def signed_input(shape: Sequence[int]) -> dict[str, np.ndarray]:
    """The feed every timed model gets: signed standard-normal ``x``, seeded."""
    return {"x": np.random.default_rng(SEED).standard_normal(tuple(shape), dtype=np.float32)}


def time_against_native(
    native: onnx.ModelProto, rewritten: onnx.ModelProto, feed: dict[str, np.ndarray], opt_level: str, warmup: int, repeats: int
) -> dict[str, Any]:
    """Check ``rewritten``'s output against ``native``'s on ``feed`` and time the two
    side by side: interleaved runs (:func:`time_interleaved`) in SESSION_PAIRS fresh
    session pairs; ratio = the median over the pairs of rewritten / native median.

    Returns the row fields (``output_shape``, ``max_abs_err``, ``native_ms``,
    ``rewritten_ms``, ``ratio``, ``session_pairs``), or ``{"error": ...}``.
    """
    try:
        s_native, s_rewritten = make_session(native, opt_level), make_session(rewritten, opt_level)
        (y_native,), (y_rewritten,) = s_native.run(None, feed), s_rewritten.run(None, feed)
    except Exception as exc:
        return {"error": f"onnxruntime raised {type(exc).__name__}: {exc}"}
    row: dict[str, Any] = {"output_shape": list(y_native.shape)}
    if y_native.shape != y_rewritten.shape:
        return {**row, "error": f"shape mismatch: native {y_native.shape}, rewritten {y_rewritten.shape}"}
    row["max_abs_err"] = float(np.max(np.abs(y_native.astype(np.float64) - y_rewritten)))
    # Fresh session pairs: a pair can carry its own bias (where its buffers landed),
    # which the median over pairs removes.
    timings = [time_interleaved([s_native, s_rewritten], feed, warmup, repeats)]
    for _ in range(SESSION_PAIRS - 1):
        timings.append(time_interleaved([make_session(native, opt_level), make_session(rewritten, opt_level)], feed, warmup, repeats))
    t_native, t_rewritten = (statistics.median(t[i] for t in timings) for i in (0, 1))
    ratio = statistics.median(r / n for n, r in timings)
    row.update(native_ms=t_native * 1e3, rewritten_ms=t_rewritten * 1e3, ratio=ratio, session_pairs=len(timings))
    return row


def bench_case(case: PoolCase, opt_level: str, warmup: int, repeats: int, options: Optional[dict] = None) -> dict[str, Any]:
    """Rewrite one case (``options``: more rewrite options), check it, time it against the native model."""
    row: dict[str, Any] = {"name": case.name, "op": case.op, "shape": list(case.shape), "attrs": case.attrs}
    native = build_pool_model(case)
    try:
        rewritten, report = rewrite_model(native, share_ladders=case.share_ladders, **(options or {}))
    except Exception as exc:  # report the rewriter's failure verbatim, go on with the other cases
        row["error"] = f"rewrite_model raised {type(exc).__name__}: {exc}"
        return row
    pool_row = report.nodes[0]
    row.update(status=pool_row.status, reason=pool_row.reason, nodes_added=report.totals()["nodes_added"], op_counts=pool_row.op_counts)
    if pool_row.status != "rewritten":
        row["error"] = f"pool node kept: {pool_row.reason}"
        return row
    feed = signed_input(case.shape)
    row.update(time_against_native(native, rewritten, feed, opt_level, warmup, repeats))
    if "error" not in row:
        row["conv_macs"] = conv_macs(rewritten, feed)
        row["weight_bytes"] = weight_bytes(rewritten)
    return row


def _ratio_summary(rows: Sequence[dict[str, Any]], names: set[str]) -> dict[str, Any]:
    """Geometric mean and worst ratio over the named rows (None when one of them is missing)."""
    timed = [r for r in rows if "ratio" in r and r["name"] in names]
    if len(timed) != len(names):
        return {"geomean_ratio": None, "worst": None}
    worst = max(timed, key=lambda r: r["ratio"])
    return {
        "geomean_ratio": math.exp(statistics.fmean(math.log(r["ratio"]) for r in timed)),
        "worst": {"name": worst["name"], "ratio": worst["ratio"]},
    }


def run_part_a(cases: Sequence[PoolCase], opt_level: str, warmup: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    for case in cases:
        log(f"part A: {case.name}")
        rows.append(bench_case(case, opt_level, warmup, repeats))
    # The targets are stated over the issue's eight shapes (no Relu variants, no SPP block).
    summary: dict[str, Any] = {"cases": rows, "target_cases": sorted(TARGET_CASES)}
    summary.update(_ratio_summary(rows, set(TARGET_CASES)))
    summary["in_context"] = _ratio_summary(rows, set(IN_CONTEXT_CASES))
    summary["errors"] = {r["name"]: r["error"] for r in rows if "error" in r}
    return summary


# ----------------------------------------------------------------------------
# Part D: what each MaxPool lowering step bought
# ----------------------------------------------------------------------------

STEP_CASES = ("resnet_stem", "vgg", "sppf", "spp13", "inception_max")


def _chain_ladder(b: Any, x: Any, axis: int, a: Any, *, conv_pads: tuple[int, int]) -> Any:
    """The pre-doubling lowering: each pairwise max grows the window by one tap."""
    m, width = x, 1
    while width + 1 < a.kernel:
        m = max_ladders.pairwise_max(b, m, axis, shift=a.dilation, stride=1, pads=conv_pads)
        conv_pads, width = (0, 0), width + 1
    return max_ladders.pairwise_max(b, m, axis, shift=(a.kernel - width) * a.dilation, stride=a.stride, pads=conv_pads)


class ChainLadder:
    """A MaxPool strategy: the chain ladder, zero-padded where that is exact, else on a padded copy."""

    name = "chain-ladder"

    def plan(self, a: Any, context: Any) -> Any:
        conv_pads = max_strategies.Ladder().plan(a, context)
        return None if isinstance(conv_pads, str) else conv_pads  # None: on a padded copy

    def build(self, b: Any, x: Any, axis: int, a: Any, plan: Any) -> Any:
        if plan is None:
            return _chain_ladder(b, max_ladders.replicate_pad(b, x, axis, a), axis, a, conv_pads=(0, 0))
        return _chain_ladder(b, x, axis, a, conv_pads=plan)


_NO_NESTED = ["nested-chain", "nested-border-fix"]
# The rewrite options that turn the MaxPool lowering back into each of its earlier versions.
STEP_OPTIONS: dict[str, dict[str, Any]] = {
    "chain": dict(strategies=["single-tap", "grow-from-reach", ChainLadder()]),
    "doubling": dict(exclude_strategies=_NO_NESTED + ["ladder-border-fix", "anchored-ladder"]),
    "anchored": dict(exclude_strategies=_NO_NESTED + ["ladder-border-fix"]),
    "border-fix": dict(exclude_strategies=_NO_NESTED),
    "default": {},
}


LOWERING_STEPS = ("chain", "doubling", "anchored", "border-fix", "default")


def run_part_d(cases: Sequence[PoolCase], opt_level: str, warmup: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    for case in cases:
        if case.name not in STEP_CASES:
            continue
        row: dict[str, Any] = {"name": case.name}
        for step in LOWERING_STEPS:
            log(f"part D: {case.name} {step}")
            result = bench_case(case, opt_level, warmup, repeats, STEP_OPTIONS[step])
            row[step] = {k: result.get(k) for k in ("ratio", "nodes_added", "error")}
        rows.append(row)
    return {"steps": list(LOWERING_STEPS), "cases": rows}


# ----------------------------------------------------------------------------
# Part E: the pool inside a network, kernel time from onnxruntime's profiler
# ----------------------------------------------------------------------------

NETWORK_TENSORS = ("net_pre", "net_post")  # the convs around the pool, as onnxruntime names them


def build_network_model(case: PoolCase) -> onnx.ModelProto:
    """``x -> Conv 1x1 -> [Relu ->] pool -> Conv 1x1 -> y``: the pool reads a conv
    output and feeds a conv, as in a CNN, so onnxruntime keeps it in its blocked
    layout with no reorder of its own."""
    channels = case.shape[1]
    rng = np.random.default_rng(SEED)
    weights = [
        numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) / math.sqrt(channels)).astype(np.float32), name)
        for name in ("net_pre_w", "net_post_w")
    ]
    nodes = [helper.make_node("Conv", ["x", "net_pre_w"], ["net_pre"], name="net_pre")]
    pool_in = "net_pre"
    if case.after_relu:
        nodes.append(helper.make_node("Relu", [pool_in], ["net_pre_relu"], name="net_pre_relu"))
        pool_in = "net_pre_relu"
    nodes.append(helper.make_node(case.op, [pool_in], ["pool_out"], name="pool", **case.attrs))
    nodes.append(helper.make_node("Conv", ["pool_out", "net_post_w"], ["net_post"], name="net_post"))
    graph = helper.make_graph(
        nodes,
        case.name + "_in_network",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(case.shape))],
        [helper.make_tensor_value_info("net_post", TensorProto.FLOAT, None)],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def kernel_times(model: onnx.ModelProto, feed: dict[str, np.ndarray], opt_level: str, warmup: int, repeats: int) -> dict[str, float]:
    """Median kernel time in seconds of every node onnxruntime runs, from its profiler,
    in the order the nodes run."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = OPT_LEVELS[opt_level]
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + repeats):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    runs: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            runs.setdefault(event["name"].removesuffix("_kernel_time"), []).append(event["dur"] * 1e-6)
    return {name: statistics.median(times[warmup:] or times) for name, times in runs.items()}


def _pool_share(times: dict[str, float]) -> float:
    """Kernel time of everything but the surrounding convs and the model's own layout
    reorders: the first node run (into the blocked layout) and the last (out of it).
    ``times`` is in execution order; reorders inside the pool's subgraph count."""
    names = list(times)
    boundary = {names[0]} if names[0].startswith("ReorderInput") else set()
    if names[-1].startswith("ReorderOutput"):
        boundary.add(names[-1])
    return sum(t for name, t in times.items() if name not in boundary and not name.startswith(NETWORK_TENSORS))


def bench_in_network(case: PoolCase, opt_level: str, warmup: int, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {"name": case.name}
    native = build_network_model(case)
    rewritten, report = rewrite_model(native)
    if report.nodes[0].status != "rewritten":
        row["error"] = f"pool node kept: {report.nodes[0].reason}"
        return row
    feed = signed_input(case.shape)
    # As in part A, the median over fresh session pairs, one pair profiled at a time.
    pairs = [(kernel_times(native, feed, opt_level, warmup, repeats), kernel_times(rewritten, feed, opt_level, warmup, repeats))
             for _ in range(SESSION_PAIRS)]
    row.update(
        native_pool_us=statistics.median(_pool_share(n) for n, _ in pairs) * 1e6,
        subgraph_us=statistics.median(_pool_share(r) for _, r in pairs) * 1e6,
        network_native_us=statistics.median(sum(n.values()) for n, _ in pairs) * 1e6,
        network_rewritten_us=statistics.median(sum(r.values()) for _, r in pairs) * 1e6,
        ratio=statistics.median(_pool_share(r) / _pool_share(n) for n, r in pairs),
        network_ratio=statistics.median(sum(r.values()) / sum(n.values()) for n, r in pairs),
    )
    return row


def run_part_e(cases: Sequence[PoolCase], opt_level: str, warmup: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    for case in cases:
        if case.pools:
            continue
        log(f"part E: {case.name}")
        rows.append(bench_in_network(case, opt_level, warmup, repeats))
    return {
        "cases": rows,
        "signed": _ratio_summary(rows, set(TARGET_CASES)),
        "in_context": _ratio_summary(rows, set(IN_CONTEXT_CASES)),
    }


# ----------------------------------------------------------------------------
# Part F: speed under each target profile
# ----------------------------------------------------------------------------

# The acceptance pool shapes that part A has no case for.
PROFILE_ONLY_CASES: list[PoolCase] = [
    # SqueezeNet 1.0's second pool: ceil_mode adds an output row and column on 54x54.
    PoolCase("squeezenet_ceil", "MaxPool", (1, 256, 54, 54), _pool(3, 2, ceil_mode=1)),
    PoolCase("gap40", "GlobalAveragePool", (1, 256, 40, 40)),
    PoolCase("gmp20", "GlobalMaxPool", (1, 256, 20, 20)),
]
# The issue's acceptance shapes, in its order ("gap" is the 7x7 one).
PROFILE_CASES = (
    "resnet_stem", "vgg", "squeezenet_ceil", "inception_max", "inception_avg", "densenet_avg",
    "sppf_block", "spp_block", "gap", "gap40", "gmp20",
)
OUTCOMES = ("native", "cascade", "rewritten", "kept")


def profile_cases() -> list[PoolCase]:
    """Part F's cases: :data:`PROFILE_CASES` from part A's cases and :data:`PROFILE_ONLY_CASES`."""
    known = {c.name: c for c in [*all_cases(), *PROFILE_ONLY_CASES]}
    return [known[name] for name in PROFILE_CASES]


def pool_outcome(node: NodeResult) -> tuple[str, str]:
    """What the pass did to one pool, one of :data:`OUTCOMES`, and its detail: the
    strategy of a cascade or a rewrite, the reason a pool was kept."""
    if node.status == REWRITTEN:
        # Only pool ops added: the pool became the target's own pools.
        kind = "cascade" if node.op_counts and set(node.op_counts) <= POOL_OPS else "rewritten"
        return kind, node.strategy or node.became
    if (node.reason or "").startswith(NATIVE):
        return "native", ""
    return "kept", node.reason or ""


def added_nodes(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of ``rewritten`` that ``original`` does not have (by name: the pass
    keeps the names of the nodes it leaves and names each node it adds afresh)."""
    before = {n.name for n in original.graph.node}
    return [n for n in rewritten.graph.node if n.name not in before]


def bench_profile_case(
    case: PoolCase, profile: Any, opt_level: str, warmup: int, repeats: int
) -> dict[str, Any]:
    """Rewrite one case with ``PoolRewritePass(target=profile)`` and report per pool what
    happened; then the added nodes, their conv MACs, and (when the model changed) the
    rewritten model's time against the original's, measured as in part A. A model the
    pass left unchanged has ratio 1.00 by definition, and is not timed."""
    row: dict[str, Any] = {"name": case.name, "op": case.op, "shape": list(case.shape)}
    original = build_pool_model(case)
    try:
        result = PoolRewritePass(target=profile, share_ladders=case.share_ladders)(original)
    except Exception as exc:  # e.g. FitError: report it verbatim, go on with the other cases
        row["error"] = f"PoolRewritePass raised {type(exc).__name__}: {exc}"
        return row
    pools = []
    for node in result.report.nodes:
        outcome, detail = pool_outcome(node)
        pools.append({"name": node.name, "outcome": outcome, "detail": detail})
    row["pools"] = pools
    added = added_nodes(original, result.model)
    op_counts: dict[str, int] = {}
    for node in added:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    feed = signed_input(case.shape)
    row.update(
        nodes_added=len(added),
        op_counts=dict(sorted(op_counts.items())),
        convs=op_counts.get("Conv", 0),
        conv_macs=conv_macs(result.model, feed, only={n.name for n in added}),
    )
    if not result.report.rewritten:
        row.update(ratio=1.0, timed=False)
        return row
    row.update(time_against_native(original, result.model, feed, opt_level, warmup, repeats), timed=True)
    return row


def run_part_f(
    profiles: Sequence[Profile], cases: Sequence[PoolCase], opt_level: str, warmup: int, repeats: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Part F for each profile over ``cases``."""
    sections = []
    for profile in profiles:
        rows = []
        for case in cases:
            log(f"part F: {profile.name} {case.name}")
            rows.append(bench_profile_case(case, profile, opt_level, warmup, repeats))
        timed = [r for r in rows if r.get("timed")]
        sections.append(
            {
                "profile": profile.name,
                "source": profile.source,
                "cases": rows,
                "outcomes": {o: sum(p["outcome"] == o for r in rows for p in r.get("pools", ())) for o in OUTCOMES},
                "geomean_ratio_changed": math.exp(statistics.fmean(math.log(r["ratio"]) for r in timed)) if timed else None,
                "errors": {r["name"]: r["error"] for r in rows if "error" in r},
            }
        )
    return {"profiles": sections}


# ----------------------------------------------------------------------------
# Part B: rewrite time against model size
# ----------------------------------------------------------------------------


def build_pool_chain(n_pools: int, shape: tuple[int, ...] = (1, 16, 32, 32)) -> onnx.ModelProto:
    """A chain of ``n_pools`` shape-preserving pools, alternating MaxPool and AveragePool."""
    nodes = []
    prev = "x"
    for i in range(n_pools):
        out = "y" if i == n_pools - 1 else f"t{i}"
        if i % 2 == 0:
            nodes.append(helper.make_node("MaxPool", [prev], [out], name=f"max{i}", **_pool(3, 1, 1)))
        else:
            nodes.append(helper.make_node("AveragePool", [prev], [out], name=f"avg{i}", **_pool(3, 1, 1, count_include_pad=0)))
        prev = out
    graph = helper.make_graph(
        nodes,
        f"chain{n_pools}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


class _ResNetBuilder:
    """Accumulates nodes and random initializers for :func:`build_resnet50`."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.params = 0

    def _const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        self.params += array.size
        return name

    def conv(self, x: str, name: str, c_in: int, c_out: int, k: int, stride: int = 1, relu: bool = True) -> str:
        """Conv with bias (batch norm folded in), optionally followed by Relu."""
        w = self.rng.standard_normal((c_out, c_in, k, k), dtype=np.float32) * np.float32(math.sqrt(2.0 / (c_in * k * k)))
        b = np.zeros(c_out, dtype=np.float32)
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self._const(f"{name}.weight", w), self._const(f"{name}.bias", b)],
                [f"{name}.out"],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return self.relu(f"{name}.out", f"{name}.relu") if relu else f"{name}.out"

    def relu(self, x: str, name: str) -> str:
        self.nodes.append(helper.make_node("Relu", [x], [f"{name}.out"], name=name))
        return f"{name}.out"

    def bottleneck(self, x: str, name: str, c_in: int, c_mid: int, c_out: int, stride: int) -> str:
        h = self.conv(x, f"{name}.conv1", c_in, c_mid, 1)
        h = self.conv(h, f"{name}.conv2", c_mid, c_mid, 3, stride)
        h = self.conv(h, f"{name}.conv3", c_mid, c_out, 1, relu=False)
        skip = x
        if stride != 1 or c_in != c_out:
            skip = self.conv(x, f"{name}.downsample", c_in, c_out, 1, stride, relu=False)
        self.nodes.append(helper.make_node("Add", [h, skip], [f"{name}.add.out"], name=f"{name}.add"))
        return self.relu(f"{name}.add.out", f"{name}.relu")


def build_resnet50(seed: int = SEED) -> tuple[onnx.ModelProto, int]:
    """A ResNet-50 (v1.5 strides, batch norm folded into conv biases), random weights; and its parameter count."""
    b = _ResNetBuilder(seed)
    h = b.conv("x", "stem", 3, 64, 7, 2)
    b.nodes.append(helper.make_node("MaxPool", [h], ["stem.pool.out"], name="stem.pool", **_pool(3, 2, 1)))
    h, c_in = "stem.pool.out", 64
    stages = [(3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 2)]
    for s, (blocks, c_mid, c_out, stride) in enumerate(stages, start=1):
        for i in range(blocks):
            h = b.bottleneck(h, f"layer{s}.{i}", c_in, c_mid, c_out, stride if i == 0 else 1)
            c_in = c_out
    b.nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap.out"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap.out"], ["flat.out"], name="flatten", axis=1))
    fc_w = b.rng.standard_normal((1000, 2048), dtype=np.float32) * np.float32(math.sqrt(1.0 / 2048))
    inputs = ["flat.out", b._const("fc.weight", fc_w), b._const("fc.bias", np.zeros(1000, dtype=np.float32))]
    b.nodes.append(helper.make_node("Gemm", inputs, ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes,
        "resnet50",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        initializer=b.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), b.params


def time_rewrite(model: onnx.ModelProto, runs: int) -> tuple[float, Any]:
    """Median seconds of ``rewrite_model(model)`` over ``runs`` calls, and the last report."""
    times, report = [], None
    for _ in range(runs):
        start = time.perf_counter()
        _, report = rewrite_model(model)
        times.append(time.perf_counter() - start)
    return statistics.median(times), report


def run_part_b(sizes: Sequence[int], runs: int, resnet: bool, log: Callable[[str], None]) -> dict[str, Any]:
    rewrite_model(build_pool_chain(2))  # warm caches and lazy imports
    rows = []
    for n in sizes:
        log(f"part B: chain of {n} pools")
        model = build_pool_chain(n)
        seconds, report = time_rewrite(model, runs)
        totals = report.totals()
        rows.append(
            {
                "pool_nodes": n,
                "rewritten": totals["rewritten"],
                "nodes_added": totals["nodes_added"],
                "seconds": seconds,
                "ms_per_node": seconds * 1e3 / n,
            }
        )
    result: dict[str, Any] = {"runs": runs, "chain": rows, "per_node_ratio_largest_vs_smallest": None, "resnet50": None}
    if len(rows) >= 2:
        result["per_node_ratio_largest_vs_smallest"] = rows[-1]["ms_per_node"] / rows[0]["ms_per_node"]
    if resnet:
        log("part B: building ResNet-50")
        start = time.perf_counter()
        model, params = build_resnet50()
        build_s = time.perf_counter() - start
        log("part B: rewriting ResNet-50")
        seconds, report = time_rewrite(model, runs)
        totals = report.totals()
        result["resnet50"] = {
            "params": params,
            "model_bytes": model.ByteSize(),
            "graph_nodes": len(model.graph.node),
            "build_seconds": build_s,
            "pool_nodes": totals["pool_nodes"],
            "rewritten": totals["rewritten"],
            "nodes_added": totals["nodes_added"],
            "seconds": seconds,
        }
    return result


# ----------------------------------------------------------------------------
# Part C: CLI start-up
# ----------------------------------------------------------------------------


def cli_command() -> list[str]:
    """The installed ``onnx-poolrewrite`` entry point, or ``python -m rewriter`` without one."""
    script = Path(sys.executable).with_name("onnx-poolrewrite")
    if script.exists():
        return [str(script)]
    found = shutil.which("onnx-poolrewrite")
    return [found] if found else [sys.executable, "-m", "rewriter"]


def time_subprocess(cmd: Sequence[str], runs: int) -> float:
    """Median wall seconds of running ``cmd`` to completion (output discarded, must exit 0)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def modules_after_import(module: str, watch: Sequence[str]) -> dict[str, bool]:
    """Which of ``watch`` are in ``sys.modules`` after a fresh interpreter imports ``module``."""
    code = f"import json, sys, {module}; print(json.dumps({{m: m in sys.modules for m in {list(watch)!r}}}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return json.loads(out.stdout)


def run_part_c(runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    log("part C: CLI start-up")
    cmd = cli_command()
    return {
        "runs": runs,
        "help_command": " ".join([Path(cmd[0]).name, *cmd[1:], "--help"]),
        "help_seconds": time_subprocess([*cmd, "--help"], runs),
        "import_cli_seconds": time_subprocess([sys.executable, "-c", "import rewriter.cli"], runs),
        "bare_python_seconds": time_subprocess([sys.executable, "-c", "pass"], runs),
        "imported_by_rewriter_cli": modules_after_import(
            "rewriter.cli", ["onnxruntime", "onnx", "onnx_graphsurgeon", "numpy"]
        ),
    }


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Fixed-width table; the first column left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def render_part_a(a: dict[str, Any], opt_level: str, repeats: int) -> str:
    headers = ["case", "native ms", "rewritten ms", "ratio", "nodes added", "conv MACs", "weight bytes", "max abs err"]
    rows = []
    for r in a["cases"]:
        if "ratio" not in r:
            rows.append([r["name"], "-", "-", "-", str(r.get("nodes_added", "-")), "-", "-", "-"])
            continue
        rows.append(
            [
                r["name"],
                f"{r['native_ms']:.3f}",
                f"{r['rewritten_ms']:.3f}",
                f"{r['ratio']:.2f}",
                str(r["nodes_added"]),
                _si(r["conv_macs"]),
                str(r["weight_bytes"]),
                f"{r['max_abs_err']:.2g}",
            ]
        )
    out = [f"Part A: pool subgraph speed (ORT CPU, 1 thread, opt level {opt_level}, median of {repeats} interleaved runs)"]
    out.append(format_table(headers, rows))
    if a["geomean_ratio"] is not None:
        out.append(
            f"over the {len(a['target_cases'])} target shapes, signed input: geometric mean ratio {a['geomean_ratio']:.2f}, "
            f"worst {a['worst']['name']} {a['worst']['ratio']:.2f}"
        )
    if a["in_context"]["geomean_ratio"] is not None:
        c = a["in_context"]
        out.append(
            f"the same shapes after the Relu their networks put there ({', '.join(sorted(RELU_IN_REAL_NETWORK))}): "
            f"geometric mean ratio {c['geomean_ratio']:.2f}, worst {c['worst']['name']} {c['worst']['ratio']:.2f}"
        )
    for name, err in a["errors"].items():
        out.append(f"ERROR {name}: {err}")
    return "\n".join(out)


def render_part_d(d: dict[str, Any]) -> str:
    headers = ["case"] + [f"{step} ratio (nodes)" for step in d["steps"]]
    rows = []
    for r in d["cases"]:
        cells = [r["name"]]
        for step in d["steps"]:
            v = r[step]
            cells.append("error" if v.get("ratio") is None else f"{v['ratio']:.2f} ({v['nodes_added']})")
        rows.append(cells)
    return "Part D: what each MaxPool lowering step bought (signed input; ratio = rewritten / native)\n" + format_table(headers, rows)


def render_part_e(e: dict[str, Any]) -> str:
    headers = ["case", "native pool us", "subgraph us", "ratio", "network native us", "network rewritten us", "network ratio"]
    rows = []
    for r in e["cases"]:
        if "ratio" not in r:
            rows.append([r["name"], "-", "-", "-", "-", "-", r.get("error", "-")])
            continue
        rows.append(
            [
                r["name"],
                f"{r['native_pool_us']:.0f}",
                f"{r['subgraph_us']:.0f}",
                f"{r['ratio']:.2f}",
                f"{r['network_native_us']:.0f}",
                f"{r['network_rewritten_us']:.0f}",
                f"{r['network_ratio']:.2f}",
            ]
        )
    out = [
        "Part E: the pool between two 1x1 convs (no reorders of its own); kernel times from onnxruntime's profiler",
        format_table(headers, rows),
    ]
    for label, summary in (("signed input", e["signed"]), ("in context", e["in_context"])):
        if summary["geomean_ratio"] is not None:
            out.append(
                f"over the target shapes, {label}: geometric mean subgraph/pool {summary['geomean_ratio']:.2f}, "
                f"worst {summary['worst']['name']} {summary['worst']['ratio']:.2f}"
            )
    return "\n".join(out)


def _pool_note(pool: dict[str, Any]) -> str:
    """``cascade of native MaxPool 3x3 + 3x3``, ``kept: <reason>``, ``native``."""
    if pool["outcome"] == "cascade" and pool["detail"].startswith("cascade"):
        return pool["detail"]
    if pool["outcome"] in ("cascade", "kept") and pool["detail"]:
        return f"{pool['outcome']}: {pool['detail']}"
    return pool["outcome"]


def _outcome_cell(row: dict[str, Any], notes: list[str]) -> str:
    """What happened to the case's pools, in a table cell; the details (a cascade's
    stages, a kept pool's reason, each pool of a mixed block) go to ``notes``, numbered."""
    if "error" in row and "pools" not in row:
        notes.append(f"[{len(notes) + 1}] {row['name']}: ERROR {row['error']}")
        return f"error [{len(notes)}]"
    pools = row["pools"]
    counts = {o: sum(p["outcome"] == o for p in pools) for o in OUTCOMES}
    present = [o for o in OUTCOMES if counts[o]]
    cell = present[0] if len(pools) == 1 else ", ".join(f"{counts[o]} {o}" for o in present)
    detailed = [p for p in pools if p["outcome"] in ("cascade", "kept")]
    if len(present) > 1 or detailed or "error" in row:
        described = [_pool_note(p) for p in pools]
        if len(pools) == 1:
            text = pools[0]["detail"]
        elif len({(p["outcome"], p["detail"]) for p in pools}) == 1:
            text = f"each pool {described[0]}"
        else:
            text = "; ".join(f"{p['name']} {d}" for p, d in zip(pools, described))
        if "error" in row:
            text = f"{text}; ERROR {row['error']}" if text else f"ERROR {row['error']}"
        notes.append(f"[{len(notes) + 1}] {row['name']}: {text}")
        cell += f" [{len(notes)}]"
    return cell


def render_part_f(f: dict[str, Any], opt_level: str, repeats: int) -> list[str]:
    """One section per profile."""
    headers = ["case", "what happened", "original ms", "rewritten ms", "ratio", "convs", "other added", "conv MACs", "max abs err"]
    sections = []
    for section in f["profiles"]:
        rows, notes = [], []
        for r in section["cases"]:
            cell = _outcome_cell(r, notes)
            if "op_counts" not in r:
                rows.append([r["name"], cell] + ["-"] * (len(headers) - 2))
                continue
            others = ", ".join(f"{n} {op}" for op, n in r["op_counts"].items() if op != "Conv") or "-"
            timed = r.get("timed") and "native_ms" in r
            rows.append(
                [
                    r["name"],
                    cell,
                    f"{r['native_ms']:.3f}" if timed else "-",
                    f"{r['rewritten_ms']:.3f}" if timed else "-",
                    f"{r['ratio']:.2f}" if "ratio" in r else "-",
                    str(r["convs"]),
                    others,
                    _si(r["conv_macs"]),
                    f"{r['max_abs_err']:.2g}" if timed else "-",
                ]
            )
        out = [
            f"Part F: under --target {section['profile']} (ORT CPU as in part A, opt level {opt_level}, "
            f"median of {repeats} interleaved runs; ratio = rewritten / original, 1.00 untimed where nothing changed)",
            format_table(headers, rows),
        ]
        o = section["outcomes"]
        summary = f"pools: {o['native']} native, {o['cascade']} cascaded into native pools, {o['rewritten']} rewritten, {o['kept']} kept"
        if section["geomean_ratio_changed"] is not None:
            summary += f"; geometric mean ratio over the changed cases {section['geomean_ratio_changed']:.2f}"
        out.append(summary)
        out.extend(notes)
        if section["source"]:
            out.append(f"profile source: {section['source']}")
        sections.append("\n".join(out))
    return sections


def render_part_b(b: dict[str, Any]) -> str:
    rows = [
        [str(r["pool_nodes"]), str(r["nodes_added"]), f"{r['seconds']:.3f}", f"{r['ms_per_node']:.3f}"] for r in b["chain"]
    ]
    out = [f"Part B: rewrite_model time vs model size (median of {b['runs']})"]
    out.append(format_table(["pool nodes", "nodes added", "rewrite s", "ms / pool node"], rows))
    if b["per_node_ratio_largest_vs_smallest"] is not None:
        first, last = b["chain"][0]["pool_nodes"], b["chain"][-1]["pool_nodes"]
        out.append(f"per-node time at {last} / at {first}: {b['per_node_ratio_largest_vs_smallest']:.2f}")
    r50 = b["resnet50"]
    if r50:
        out.append(
            f"resnet50: {r50['params'] / 1e6:.2f}M params, {r50['model_bytes'] / 1e6:.1f} MB, {r50['graph_nodes']} nodes, "
            f"{r50['rewritten']}/{r50['pool_nodes']} pools rewritten (+{r50['nodes_added']} nodes): "
            f"rewrite_model {r50['seconds']:.3f} s (model built in {r50['build_seconds']:.2f} s, not counted)"
        )
    return "\n".join(out)


def render_part_c(c: dict[str, Any]) -> str:
    imported = ", ".join(f"{m}={'yes' if v else 'no'}" for m, v in c["imported_by_rewriter_cli"].items())
    return "\n".join(
        [
            f"Part C: CLI start-up (median of {c['runs']})",
            f"{c['help_command']}: {c['help_seconds'] * 1e3:.0f} ms",
            f"python -c 'import rewriter.cli': {c['import_cli_seconds'] * 1e3:.0f} ms",
            f"python -c 'pass' (baseline): {c['bare_python_seconds'] * 1e3:.0f} ms",
            f"modules loaded by 'import rewriter.cli': {imported}",
        ]
    )


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quick", action="store_true", help="few repeats, small sizes, no ResNet-50: a smoke run of seconds")
    p.add_argument("--only", metavar="NAME,...", help="cases to run in parts A, D, E and F (comma-separated)")
    p.add_argument("--skip-scaling", action="store_true", help="skip part B")
    p.add_argument("--skip-steps", action="store_true", help="skip part D")
    p.add_argument("--skip-network", action="store_true", help="skip part E")
    p.add_argument("--skip-profiles", action="store_true", help="skip part F")
    p.add_argument(
        "--profiles", metavar="NAME|FILE,...", default=",".join(BUILTIN_NAMES),
        help=f"part F's target profiles: built-in names or profile files (default {','.join(BUILTIN_NAMES)})",
    )
    p.add_argument("--opt-level", choices=list(OPT_LEVELS), default="all", help="onnxruntime graph optimization level")
    p.add_argument("--repeats", type=int, default=None, help="interleaved timing rounds per case (default 50; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per session (default 5; 1 with --quick)")
    p.add_argument("--write-docs", metavar="PATH", help="also write the tables into PATH (docs/performance.md), stamped")
    return p.parse_args(argv)


def select_cases(only: Optional[str]) -> tuple[list[PoolCase], list[PoolCase]]:
    """Part A's cases and part F's, both restricted to the names in ``only``."""
    cases, f_cases = all_cases(), profile_cases()
    if not only:
        return cases, f_cases
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    known = {c.name for c in cases} | {c.name for c in f_cases}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"bench.py: unknown case(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [c for c in cases if c.name in wanted], [c for c in f_cases if c.name in wanted]


def load_profiles(names: str) -> list[Profile]:
    """The profiles named in ``names`` (comma-separated built-in names or files), loaded
    before anything is measured: a typo must not cost the run of parts A to E."""
    try:
        return [load_profile(n.strip()) for n in names.split(",") if n.strip()]
    except ProfileError as err:
        raise SystemExit(f"bench.py: --profiles: {err}") from err


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }


# Text above this line in the --write-docs file is hand-written and kept; the tables below are replaced.
DOCS_MARKER = "<!-- scripts/bench.py --write-docs replaces everything below this line -->"


def write_docs(path: Path, sections: Sequence[str], env: dict[str, Any], argv: Sequence[str]) -> None:
    """Put the rendered tables below :data:`DOCS_MARKER` in ``path``, stamped with
    the date, the machine and the command that measured them."""
    old = path.read_text() if path.exists() else ""
    head = old.split(DOCS_MARKER)[0] if DOCS_MARKER in old else "# Performance\n\n"
    stamp = (
        f"Measured on {time.strftime('%Y-%m-%d')} with `{shlex.join(['python', 'scripts/bench.py', *argv])}` on "
        f"{env['platform']}, {env['cpu_count']} CPUs: Python {env['python']}, onnxruntime {env['onnxruntime']}, "
        f"onnx {env['onnx']}, numpy {env['numpy']}."
    )
    tables = "\n\n".join(f"```\n{section}\n```" for section in sections)
    path.write_text(f"{head}{DOCS_MARKER}\n\n## Latest run\n\n{stamp}\n\n{tables}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 50)
    if args.quick:
        global MIN_TIMED_SECONDS, SESSION_PAIRS
        MIN_TIMED_SECONDS, SESSION_PAIRS = 0.0, 1
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    sizes = [10, 20, 40] if args.quick else [100, 200, 400, 1000, 2000]
    rewrite_runs = 1 if args.quick else 3
    cli_runs = 1 if args.quick else 5
    cases, f_cases = select_cases(args.only)
    profiles = [] if args.skip_profiles else load_profiles(args.profiles)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    results: dict[str, Any] = {
        "config": {"quick": args.quick, "opt_level": args.opt_level, "repeats": repeats, "warmup": warmup, "opset": OPSET},
        "environment": environment(),
    }
    results["part_a"] = run_part_a(cases, args.opt_level, warmup, repeats, log)
    results["part_b"] = None if args.skip_scaling else run_part_b(sizes, rewrite_runs, not args.quick, log)
    results["part_d"] = None if args.skip_steps else run_part_d(cases, args.opt_level, warmup, repeats, log)
    results["part_e"] = None if args.skip_network else run_part_e(cases, args.opt_level, warmup, max(repeats, 100), log)
    results["part_f"] = run_part_f(profiles, f_cases, args.opt_level, warmup, repeats, log) if profiles else None
    results["part_c"] = run_part_c(cli_runs, log)
    results["total_seconds"] = time.perf_counter() - start

    sections = [render_part_a(results["part_a"], args.opt_level, repeats)]
    if results["part_b"] is not None:
        sections.append(render_part_b(results["part_b"]))
    if results["part_d"] is not None:
        sections.append(render_part_d(results["part_d"]))
    if results["part_e"] is not None:
        sections.append(render_part_e(results["part_e"]))
    if results["part_f"] is not None:
        sections.extend(render_part_f(results["part_f"], args.opt_level, repeats))
    sections.append(render_part_c(results["part_c"]))
    sections.append(f"total: {results['total_seconds']:.1f} s")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n\n".join(sections))
    if args.write_docs:
        write_docs(Path(args.write_docs), sections, results["environment"], argv)
    f_errors = results["part_f"] and any(section["errors"] for section in results["part_f"]["profiles"])
    return 1 if results["part_a"]["errors"] or f_errors else 0


if __name__ == "__main__":
    sys.exit(main())
