"""Deployment models end to end (issue 13's acceptance): dynamic exports fixed with
--overwrite-input-shape go through with every pool rewritten and validation passed,
the outputs stay within the original's own optimizer noise (measured here
independently), and subtly wrong candidates are refused by --compare."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import bugs
import realistic
from rewriter import cli, rewrite_model
from rewriter.validate import validate_models

NOISE_FACTOR = 4.0  # an independent encoding of the allowance: 4x the optimizer noise


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (its exit code and what it printed): the same code path as the
    console script, without a Python start-up per call."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _session(model: onnx.ModelProto | str, optimize: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _outputs(session: ort.InferenceSession, feeds: dict) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _feeds(model: onnx.ModelProto, suite: str, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    feeds = {}
    for value in model.graph.input:
        dims = shapes[value.name]
        elem = value.type.tensor_type.elem_type
        if elem == onnx.TensorProto.INT64:
            feeds[value.name] = rng.integers(0, 200, dims).astype(np.int64)
        elif suite == "ties":
            feeds[value.name] = rng.integers(-10, 11, dims).astype(np.float32)
        else:
            feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


@pytest.fixture(scope="module", params=sorted(realistic.BUILDERS))
def deployed(request, tmp_path_factory):
    """(name, dynamic original path, rewritten path, report) for one builder, via the CLI."""
    name = request.param
    model = realistic.BUILDERS[name](dynamic=True)
    folder = tmp_path_factory.mktemp(name)
    src, out, report = folder / "model.onnx", folder / "model.conv.onnx", folder / "report.json"
    onnx.save(model, src)
    run = _cli(str(src), str(out), "--report", str(report), *realistic.overwrite_input_shape_args(model))
    assert run.returncode == 0, run.stderr
    return name, model, src, out, json.loads(report.read_text())


def test_every_pool_is_rewritten_and_validation_passed(deployed):
    name, model, _, out, report = deployed
    assert report["totals"]["kept"] == 0, report["nodes"]
    assert report["totals"]["rewritten"] == sum(realistic.POOLS[name].values())
    assert report["validation"]["passed"] is True
    assert all(n["passed"] for n in report["validation"]["nodes"])
    assert len(report["validation"]["nodes"]) == report["totals"]["rewritten"]  # every rewritten node checked alone


def test_written_inputs_have_exactly_the_given_dims(deployed):
    _, model, _, out, _ = deployed
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim] for v in written.graph.input}
    assert dims == realistic.deploy_shapes(model)


@pytest.mark.parametrize("suite", ["signed-normal", "ties"])
def test_outputs_within_the_originals_own_optimizer_noise(deployed, suite):
    _, model, src, out, _ = deployed
    feeds = _feeds(model, suite, realistic.deploy_shapes(model))
    plain, optimized = _outputs(_session(str(src), False), feeds), _outputs(_session(str(src), True), feeds)
    rewritten = _outputs(_session(str(out), False), feeds)
    for name, ref in plain.items():
        if not np.issubdtype(ref.dtype, np.floating):
            np.testing.assert_array_equal(rewritten[name], ref)
            continue
        noise = float(np.max(np.abs(optimized[name].astype(np.float64) - ref)))
        error = float(np.max(np.abs(rewritten[name].astype(np.float64) - ref)))
        assert error <= max(NOISE_FACTOR * noise, 1e-5 * float(np.max(np.abs(ref)))), (name, error, noise)


def test_the_tools_own_output_passes_compare(deployed):
    _, model, src, out, _ = deployed
    run = _cli("--compare", str(src), str(out), *realistic.overwrite_input_shape_args(model))
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("case", bugs.CASES, ids=[c.id for c in bugs.CASES])
def test_subtly_wrong_candidates_are_refused_naming_the_node(case, tmp_path):
    original, candidate = case.build()
    src, cand = tmp_path / "original.onnx", tmp_path / "candidate.onnx"
    onnx.save(original, src)
    onnx.save(candidate, cand)
    run = _cli("--compare", str(src), str(cand))
    assert run.returncode == 1, run.stderr
    line = run.stderr.strip()
    assert len(line.splitlines()) == 1 and f"'{case.node}'" in line, line


@pytest.mark.parametrize("case", [c for c in bugs.CASES if c.mutator is bugs.pool_on_wrong_tensor], ids=lambda c: c.id)
def test_a_rewritten_pool_fed_from_the_wrong_tensor_is_refused(case, tmp_path):
    """The same bug inside our own output: the subgraph of a rewritten pool reads another tensor."""
    original = realistic.BUILDERS[case.builder](**case.kwargs)
    rewritten, _ = rewrite_model(original)
    wrong = bugs.pool_on_wrong_tensor(original, case.node)
    source = next(n for n in wrong.graph.node if n.name == case.node).input[0]
    candidate = bugs.rewire_rewritten_pool(rewritten, case.node, source)
    result = validate_models(original, candidate)
    assert not result.passed and f"'{case.node}'" in result.summary(), result.summary()


def test_without_static_shapes_the_tool_says_which_flag_to_add(tmp_path):
    model = realistic.paddle_det(dynamic=True)
    src, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    run = _cli(str(src), "--dry-run")
    assert run.returncode == 0, run.stderr
    hint = " ".join(run.stdout[run.stdout.index("note: pools kept for dynamic dims"):].split())
    flag = hint.split("--overwrite-input-shape ")[1].split()[0]
    assert flag == "x:1,3,<H>,<W>"
    side = str(realistic.deploy_shapes(model)["x"][2])
    again = _cli(str(src), str(out), "--overwrite-input-shape", flag.replace("<H>", side).replace("<W>", side), "--fail-on-kept")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("dim_style", ["minus_one", "question"])
def test_intermediate_shapes_computed_from_minus_one_are_not_trusted(dim_style):
    """An export's value_info computed with -1 taken literally looks static (sizes 0 and 1):
    a global pool lowered for it would be silently wrong at any real size."""
    model = realistic.paddle_det(dynamic=True, dim_style=dim_style)
    _, report = rewrite_model(model)
    rows = {n.name: n for n in report.nodes}
    assert all(rows[n].status == "kept" and "dynamic" in rows[n].reason for n in ("se_pool_1", "se_pool_2"))
    assert all("empty output" not in (n.reason or "") for n in report.nodes)
