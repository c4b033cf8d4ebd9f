"""Every ONNX backend node test case for the pooling ops, through the rewriter.

The cases come from ``onnx.backend.test.case.node.collect_testcases``: one
model per case plus the case's own input/output data. For each case:

* the rewrite (Python API) must either replace a pool node by a subgraph of
  Conv/Relu/Add/Concat that passes ``onnx.checker`` (full check) and matches
  onnxruntime on the ORIGINAL model on the case's inputs and on random signed,
  all-negative and integer inputs, or keep it with a non-empty reason;
* nodes that cannot be rewritten exactly (a used Indices output, uint8/int8,
  LpPool/GlobalLpPool) must be kept with a reason; every other float pool node
  whose original model onnxruntime can run must be rewritten;
* when onnxruntime cannot even load the original model, keeping is allowed and a
  rewritten model is skipped for numerics (there is nothing to compare with).

A few representative cases also go through the command line (``python -m
rewriter IN OUT --report R.json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Optional

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from rewriter import rewrite_model
from compat import TEST_OPSET

POOL_OPS = ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "LpPool", "GlobalLpPool")
NEVER_REWRITTEN_OPS = {"LpPool", "GlobalLpPool"}
STRICT_OPS = {"Conv", "Relu", "Add", "Concat"}
INT_TYPES = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8}
REL_TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2, np.dtype(np.float64): 1e-5}


# -- the cases -----------------------------------------------------------------


def _collect_pool_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    # collect_testcases imports every case module once per process and the
    # op_type filter applies only to that first import, so collect everything
    # (a few seconds) and filter here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)  # onnx < 1.17 requires the argument; None is every op
    picked = [c for c in cases if any(n.op_type in POOL_OPS for n in c.model.graph.node)]
    return sorted(picked, key=lambda c: c.name)


CASES = _collect_pool_cases()
CASES_BY_NAME = {c.name: c for c in CASES}

# Representative cases for the command line: a padded max pool, a ceil-mode
# average pool with count_include_pad, a global pool, and two that must be kept.
CLI_CASES = [
    "test_maxpool_2d_pads",
    "test_averagepool_2d_ceil_last_window_starts_on_pad",
    "test_globalaveragepool",
    "test_maxpool_with_argmax_2d_precomputed_pads",
    "test_lppool_2d_default",
]


def test_cases_were_collected():
    """Guard against an empty/partial collection making the suite pass vacuously."""
    per_op = {op: 0 for op in POOL_OPS}
    for case in CASES:
        for node in case.model.graph.node:
            if node.op_type in per_op:
                per_op[node.op_type] += 1
    for op in ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "LpPool"):
        assert per_op[op] > 0, f"no backend cases collected for {op}: {per_op}"
    for name in CLI_CASES:
        assert name in CASES_BY_NAME, f"CLI case {name} not among the collected cases"


# -- helpers ---------------------------------------------------------------------


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _elem_type(model: onnx.ModelProto, name: str) -> Optional[int]:
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.name == name and vi.type.HasField("tensor_type"):
            return vi.type.tensor_type.elem_type
    for t in model.graph.initializer:
        if t.name == name:
            return t.data_type
    return None


def _pool_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in POOL_OPS and n.domain in ("", "ai.onnx")]


def _indices_used(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    if node.op_type != "MaxPool" or len(node.output) < 2 or not node.output[1]:
        return False
    idx = node.output[1]
    return idx in {o.name for o in model.graph.output} or any(idx in n.input for n in model.graph.node)


def _must_keep(model: onnx.ModelProto, node: onnx.NodeProto) -> Optional[str]:
    """Why ``node`` cannot be rewritten exactly, or None."""
    if node.op_type in NEVER_REWRITTEN_OPS:
        return node.op_type
    if _indices_used(model, node):
        return "used Indices output"
    if _elem_type(model, node.input[0]) in INT_TYPES:
        return "integer (uint8/int8) input"
    return None


def _describe(model: onnx.ModelProto, node: onnx.NodeProto, inputs: list[np.ndarray]) -> str:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    shapes = [tuple(x.shape) for x in inputs]
    return f"{node.op_type} opset={opset} input_shapes={shapes} attrs={attrs}"


def _original_session(model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
    """(session, None) if onnxruntime can build and run the original, else (None, why)."""
    try:
        sess = _session(model)
        sess.run(None, feeds)
    except Exception as err:  # onnxruntime rejects the model (opset, attribute combination, ...)
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return sess, None


def _input_suites(case, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The case's own inputs plus signed-normal, all-negative and integer inputs of the same shapes."""
    model = case.model
    names = [vi.name for vi in _graph_inputs(model)]
    own = list(case.data_sets[0][0])
    assert len(own) == len(names), f"{case.name}: {len(own)} data inputs for graph inputs {names}"
    suites = {"case": dict(zip(names, own))}
    rng = np.random.default_rng(seed)
    normal, negative, ints = {}, {}, {}
    for name, arr in zip(names, own):
        shape, dtype = arr.shape, arr.dtype
        normal[name] = rng.standard_normal(shape).astype(dtype)
        negative[name] = (-np.abs(rng.standard_normal(shape)) - 0.25).astype(dtype)
        ints[name] = rng.integers(-10, 11, shape).astype(dtype)
    suites.update(normal=normal, negative=negative, integers=ints)
    return suites


def _compare(name: str, ref: np.ndarray, got: np.ndarray, where: str) -> None:
    assert got.shape == ref.shape, f"{where} output {name}: shape {got.shape} != onnxruntime's {ref.shape}"
    assert got.dtype == ref.dtype, f"{where} output {name}: dtype {got.dtype} != onnxruntime's {ref.dtype}"
    if ref.size == 0:
        return
    if np.issubdtype(ref.dtype, np.floating):
        ref_nan, got_nan = np.isnan(ref), np.isnan(got)
        assert np.array_equal(ref_nan, got_nan), (
            f"{where} output {name}: NaN at {int(got_nan.sum())} place(s) in the rewrite vs {int(ref_nan.sum())} in onnxruntime's"
        )
        ok = ~ref_nan
        r, g = ref[ok].astype(np.float64), got[ok].astype(np.float64)
        inf_r = np.isinf(r)
        assert np.array_equal(r[inf_r], g[inf_r]) and not np.isinf(g[~inf_r]).any(), f"{where} output {name}: infinities differ"
        r, g = r[~inf_r], g[~inf_r]
        if r.size == 0:
            return
        diff = float(np.max(np.abs(g - r)))
        tol = REL_TOL.get(ref.dtype, 1e-5) * float(np.max(np.abs(r)))
        if diff > tol:
            worst = int(np.argmax(np.abs(g - r)))
            pytest.fail(
                f"{where} output {name}: max abs diff {diff:.3g} > tol {tol:.3g} "
                f"(e.g. rewrite {g[worst]!r} vs onnxruntime {r[worst]!r}, max|ref|={np.max(np.abs(r)):.3g})"
            )
    else:
        assert np.array_equal(ref, got), f"{where} output {name}: values differ"


def _check_rewritten_structure(original: onnx.ModelProto, new: onnx.ModelProto, where: str) -> None:
    allowed = STRICT_OPS | {n.op_type for n in original.graph.node if n.op_type not in POOL_OPS}
    extra = sorted({n.op_type for n in new.graph.node} - allowed)
    assert not extra, f"{where}: the rewritten model has op types {extra} (allowed: {sorted(allowed)})"
    try:
        onnx.checker.check_model(new, full_check=True)
    except Exception as err:
        pytest.fail(f"{where}: onnx.checker.check_model(full_check=True) failed: {err}")
    assert [o.name for o in new.graph.output] == [o.name for o in original.graph.output], f"{where}: graph outputs changed"
    assert [i.name for i in _graph_inputs(new)] == [i.name for i in _graph_inputs(original)], f"{where}: graph inputs changed"


def _check_report(case, report) -> list:
    """Check the report rows against the expectations; return the rewritten rows."""
    pools = _pool_nodes(case.model)
    rows = list(report.nodes)
    assert len(rows) == len(pools), f"{case.name}: report has {len(rows)} row(s) for {len(pools)} pool node(s)"
    for row in rows:
        assert row.status in ("rewritten", "kept"), f"{case.name}: bad status {row.status!r}"
        if row.status == "kept":
            assert isinstance(row.reason, str) and row.reason.strip(), f"{case.name}: {row.op_type} kept without a reason"
    return rows


# -- the Python API ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backend_case(case):
    model = case.model
    pools = _pool_nodes(model)
    assert pools, f"{case.name}: no pool node"
    suites = _input_suites(case)
    session, ort_error = _original_session(model, suites["case"])

    new_model, report = rewrite_model(model)
    rows = _check_report(case, report)
    inputs = list(case.data_sets[0][0])

    for node, row in zip(pools, rows):
        assert row.op_type == node.op_type, f"{case.name}: report row {row.op_type} for node {node.op_type}"
        desc = _describe(model, node, inputs)
        must_keep = _must_keep(model, node)
        if must_keep is not None:
            assert row.status == "kept", f"{case.name}: {desc} must be kept ({must_keep}) but was rewritten"
        elif session is not None:
            assert row.status == "rewritten", (
                f"{case.name}: {desc} was kept (reason: {row.reason!r}) but is expected to be rewritten"
            )
        # else: onnxruntime cannot run the original; kept-with-reason or rewritten are both fine.

    if not any(r.status == "rewritten" for r in rows):
        assert [n.op_type for n in new_model.graph.node] == [n.op_type for n in model.graph.node], (
            f"{case.name}: nothing was rewritten, yet the graph's nodes changed"
        )
        return

    _check_rewritten_structure(model, new_model, case.name)
    if session is None:
        pytest.skip(f"onnxruntime cannot run the original model of {case.name} ({ort_error}); numerics not compared")
    new_session = _session(new_model)
    out_names = [o.name for o in model.graph.output]
    for suite, feeds in suites.items():
        refs = session.run(out_names, feeds)
        gots = new_session.run(out_names, feeds)
        for name, ref, got in zip(out_names, refs, gots):
            _compare(name, ref, got, f"{case.name} [{suite} inputs] ({_describe(model, pools[0], inputs)})")


def test_global_lp_pool_is_kept():
    """onnx 1.23 ships no backend case for GlobalLpPool; check it is kept with a reason on a small model."""
    node = helper.make_node("GlobalLpPool", ["x"], ["y"], p=2)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])
    model.ir_version = 10
    new_model, report = rewrite_model(model)
    assert len(report.nodes) == 1
    row = report.nodes[0]
    assert row.op_type == "GlobalLpPool" and row.status == "kept" and row.reason and row.reason.strip()
    assert [n.op_type for n in new_model.graph.node] == ["GlobalLpPool"]


# -- the command line -------------------------------------------------------------


@pytest.mark.parametrize("name", CLI_CASES)
def test_backend_case_cli(name, tmp_path):
    case = CASES_BY_NAME[name]
    model = case.model
    in_path, out_path, json_path = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, str(in_path))
    proc = subprocess.run(
        [sys.executable, "-m", "rewriter", str(in_path), str(out_path), "--report", str(json_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"{name}: exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert out_path.exists(), f"{name}: {out_path} not written"
    data = json.loads(json_path.read_text())

    pools = _pool_nodes(model)
    rows = data["nodes"]
    assert len(rows) == len(pools), f"{name}: JSON report has {len(rows)} row(s) for {len(pools)} pool node(s)"
    _, api_report = rewrite_model(model)
    for node, row, api_row in zip(pools, rows, api_report.nodes):
        assert {"name", "op_type", "status", "reason"} <= set(row), f"{name}: report row keys {sorted(row)}"
        assert row["op_type"] == node.op_type
        assert row["status"] == api_row.status, f"{name}: CLI says {row['status']}, the API says {api_row.status}"
        if _must_keep(model, node) is not None:
            assert row["status"] == "kept", f"{name}: {node.op_type} must be kept"
        else:
            assert row["status"] == "rewritten", f"{name}: {node.op_type} kept ({row['reason']!r})"
        if row["status"] == "kept":
            assert isinstance(row["reason"], str) and row["reason"].strip(), f"{name}: kept without a reason"
    assert data["validation"]["passed"] is True, f"{name}: validation {data['validation']}"

    written = onnx.load(str(out_path))
    if any(r["status"] == "rewritten" for r in rows):
        _check_rewritten_structure(model, written, f"{name} (CLI)")
        suites = _input_suites(case, seed=1)
        ref_s, new_s = _session(model), _session(written)
        out_names = [o.name for o in model.graph.output]
        for suite, feeds in suites.items():
            for o, ref, got in zip(out_names, ref_s.run(out_names, feeds), new_s.run(out_names, feeds)):
                _compare(o, ref, got, f"{name} (CLI) [{suite} inputs]")
    else:
        assert [n.op_type for n in written.graph.node] == [n.op_type for n in model.graph.node]
