"""The onnx_ir pass (rewriter/ir.py) in PassManagers, on the real-model stand-ins.

Needs the ``pipelines`` extra (onnx-ir, onnxscript); skipped with the reason without it.
Each pipeline's result is validated against the original on onnxruntime, every pool
must be gone and the report must say each was rewritten.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from compat import TEST_OPSET
from helpers import ZERO_PADDING_BUG, pool_model
from onnx import TensorProto, helper

ir = pytest.importorskip("onnx_ir", reason="the onnx_ir pass needs the [ir] extra: pip install 'onnx-poolrewrite[ir]'")
import onnx_ir.passes.common as common  # noqa: E402
import realistic  # noqa: E402

from rewriter import PoolRewritePass, cli, overwrite_input_shapes  # noqa: E402
from rewriter.ir import IRValidationError, PoolRewriteIRPass  # noqa: E402
from rewriter.ops import POOL_OPS  # noqa: E402
from rewriter.report import REWRITTEN  # noqa: E402
from rewriter.selection import EXCLUDED, NOT_SELECTED, SelectionError  # noqa: E402
from rewriter.validate import validate_models  # noqa: E402

STAND_INS = realistic.BUILDERS  # the real-model stand-ins, by name


def deployed(name: str, dynamic: bool) -> onnx.ModelProto:
    """A stand-in at its deploy shapes (a dynamic export fixed first, as a user would)."""
    model = STAND_INS[name](dynamic=dynamic)
    return overwrite_input_shapes(model, realistic.deploy_shapes(model)) if dynamic else model


def pools_in(model: ir.Model) -> list[str]:
    return [n.op_type for g in model.graphs() for n in g if n.op_type in POOL_OPS and n.domain in ("", "ai.onnx")]


def proto_pool_count(model: onnx.ModelProto) -> int:
    return sum(realistic.pool_counts(model).values())


def assert_all_rewritten_and_valid(original: onnx.ModelProto, model: ir.Model, rewrite: PoolRewriteIRPass) -> None:
    assert pools_in(model) == []
    assert len(rewrite.report.rewritten) == proto_pool_count(original) > 0
    assert rewrite.report.kept == []
    result = validate_models(original, ir.serde.serialize_model(model))
    assert result.passed, result.summary()


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", list(STAND_INS))
def test_pass_manager_with_onnx_ir_common_passes(name, dynamic):
    original = deployed(name, dynamic)
    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass()
    manager = ir.passes.PassManager([
        common.ShapeInferencePass(),
        rewrite,
        common.RemoveUnusedNodesPass(),
        common.CommonSubexpressionEliminationPass(),
        common.LiftConstantsToInitializersPass(),
        common.DeduplicateInitializersPass(),
        common.TopologicalSortPass(),
        common.ShapeInferencePass(),
        common.CheckerPass(full_check=True),
    ])
    result = manager(model)
    assert result.model is model and result.modified
    assert_all_rewritten_and_valid(original, model, rewrite)


@pytest.mark.parametrize("name", list(STAND_INS))
def test_pass_manager_with_onnxscript_optimizer(name, tmp_path):
    optimizer = pytest.importorskip("onnxscript.optimizer", reason="onnxscript's optimizer: pip install onnxscript")
    from onnxscript.optimizer._constant_folding import FoldConstantsPass

    original = deployed(name, dynamic=True)
    model = optimizer.optimize(ir.serde.deserialize_model(original))  # the exporter's own clean-up first
    rewrite = PoolRewriteIRPass()
    ir.passes.PassManager([
        rewrite,
        FoldConstantsPass(shape_inference=True, input_size_limit=1024, output_size_limit=1024 * 1024),
        common.RemoveUnusedNodesPass(),
    ])(model)
    optimizer.optimize(model)  # and the whole optimizer after the rewrite: it must leave the rewrite exact
    assert_all_rewritten_and_valid(original, model, rewrite)
    # As a user checks it: the CLI's --compare against the export as it was.
    exported = STAND_INS[name](dynamic=True)
    onnx.save(exported, tmp_path / "original.onnx")
    ir.save(model, tmp_path / "pipeline.onnx")
    args = ["--compare", str(tmp_path / "original.onnx"), str(tmp_path / "pipeline.onnx"), *realistic.overwrite_input_shape_args(exported), "-q"]
    assert cli.main(args) == 0


@pytest.mark.parametrize("target", [None, "rknn", "nvidia-dla", "tidl"])
@pytest.mark.parametrize("name", ["yolo_sppf_detector", "ocr_se_recognizer", "paddle_det"])
def test_same_report_and_nodes_as_the_proto_pass(name, target):
    original = deployed(name, dynamic=False)
    expected = PoolRewritePass(target=target).run(original)
    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass(target=target)
    result = rewrite(model)
    assert result.report is rewrite.report
    assert rewrite.report.to_dict() == expected.report.to_dict()
    assert result.modified == bool(expected.report.rewritten)
    written = ir.serde.serialize_model(model)
    assert sorted((n.op_type, n.name) for n in written.graph.node) == sorted((n.op_type, n.name) for n in expected.model.graph.node)
    check = validate_models(original, written)
    assert check.passed, check.summary()


def test_only_and_exclude_keep_the_pools_they_leave_out():
    original = deployed("ocr_se_recognizer", dynamic=False)
    pools = [n for n in original.graph.node if n.op_type in POOL_OPS]
    excluded, only = pools[0].name, "GlobalAveragePool"
    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass(exclude=[excluded])
    rewrite(model)
    kept = {n.name: n.reason for n in rewrite.report.kept}
    assert kept == {excluded: EXCLUDED}
    assert [n.name for g in model.graphs() for n in g if n.op_type in POOL_OPS] == [excluded]

    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass(only=[only])
    rewrite(model)
    assert {n.op_type for n in rewrite.report.rewritten} == {only}
    assert all(n.reason == NOT_SELECTED for n in rewrite.report.kept) and rewrite.report.kept
    assert only not in pools_in(model) and set(pools_in(model)) == {n.op_type for n in rewrite.report.kept}
    check = validate_models(original, ir.serde.serialize_model(model))
    assert check.passed, check.summary()


def test_a_misspelt_selection_changes_nothing():
    original = deployed("yolo_sppf_detector", dynamic=False)
    model = ir.serde.deserialize_model(original)
    with pytest.raises(SelectionError):
        PoolRewriteIRPass(exclude=["no-such-pool"])(model)
    assert ir.serde.serialize_model(model).SerializeToString() == ir.serde.serialize_model(ir.serde.deserialize_model(original)).SerializeToString()
    with pytest.raises(SelectionError):
        PoolRewriteIRPass(strategies=["no-such-strategy"])  # at construction, before any model


def test_nodes_and_values_the_pass_does_not_replace_stay_the_same_objects():
    original = deployed("yolo_sppf_detector", dynamic=False)
    model = ir.serde.deserialize_model(original)
    others = [n for n in model.graph if n.op_type not in POOL_OPS]
    inputs = {id(v) for n in others for v in n.inputs if v is not None}
    weights = {name: v.const_value for name, v in model.graph.initializers.items()}
    PoolRewriteIRPass()(model)
    after = list(model.graph)
    assert all(any(n is m for m in after) for n in others)
    assert {id(v) for n in others for v in n.inputs if v is not None} <= inputs | {id(v) for n in after for v in n.outputs}
    assert all(model.graph.initializers[k].const_value is t for k, t in weights.items())


def test_validation_both_halves():
    # A correct rewrite validates; a broken one (MaxPool's -inf padding taken as zeros,
    # on a signed input) is refused and the IR model is left as it was.
    original = deployed("text_1d_classifier", dynamic=False)
    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass(validate=True)
    result = rewrite(model)
    assert result.validation.passed and rewrite.report.validation["passed"]
    assert pools_in(model) == []

    model = ir.serde.deserialize_model(original)
    before = ir.serde.serialize_model(model).SerializeToString()
    broken = PoolRewriteIRPass(validate=True, strategies=ZERO_PADDING_BUG)
    with pytest.raises(IRValidationError) as failure:
        broken(model)
    assert not failure.value.validation.passed
    assert ir.serde.serialize_model(model).SerializeToString() == before
    # In a PassManager, onnx_ir raises its PassError from ours; the pass keeps the verdict.
    in_manager = PoolRewriteIRPass(validate=True, strategies=ZERO_PADDING_BUG)
    with pytest.raises(ir.passes.PassError):
        ir.passes.PassManager([common.RemoveUnusedNodesPass(), in_manager])(model)
    assert in_manager.validation is not None and not in_manager.validation.passed
    assert ir.serde.serialize_model(model).SerializeToString() == before
    # Without validation the same broken rewrite goes through, and validation catches it.
    PoolRewriteIRPass(strategies=ZERO_PADDING_BUG)(model)
    assert not validate_models(original, ir.serde.serialize_model(model)).passed


def _if_model() -> onnx.ModelProto:
    """x -> If(c) { then: MaxPool 3x3/p1 (signed), else: AveragePool 2x2/s1 } -> Relu -> y."""
    def branch(name, op, **attrs):
        return helper.make_graph(
            [helper.make_node(op, ["x"], [f"{name}_out"], name=f"{name}/pool", **attrs)], name, [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 2, 9, 9])],
        )
    nodes = [
        helper.make_node("If", ["c"], ["p"], name="if", then_branch=branch("then", "MaxPool", kernel_shape=[3, 3], pads=[1] * 4),
                         else_branch=branch("else", "AveragePool", kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=1)),
        helper.make_node("Relu", ["p"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 9]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 9, 9])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)], ir_version=8 if TEST_OPSET < 21 else 10)


def _function_model() -> onnx.ModelProto:
    """A model-local function holding a MaxPool (the pass inlines it first)."""
    body = [helper.make_node("MaxPool", ["a"], ["b"], name="fpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)]
    function = helper.make_function("local", "Pooled", ["a"], ["b"], body, [helper.make_opsetid("", TEST_OPSET)])
    graph = helper.make_graph(
        [helper.make_node("Pooled", ["x"], ["y"], name="call", domain="local")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])],
    )
    return helper.make_model(graph, functions=[function], ir_version=8 if TEST_OPSET < 21 else 10,
                             opset_imports=[helper.make_opsetid("", TEST_OPSET), helper.make_opsetid("local", 1)])


@pytest.mark.parametrize("build", [_if_model, _function_model, lambda: pool_model("MaxPool", [1, 3, 8, 8], dict(kernel_shape=[2, 2], strides=[2, 2]))],
                         ids=["if_bodies", "local_function", "one_pool"])
def test_bodies_and_functions(build):
    original = build()
    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass()
    assert rewrite(model).modified
    assert pools_in(model) == [] and rewrite.report.rewritten and not rewrite.report.kept
    written = ir.serde.serialize_model(model)
    onnx.checker.check_model(written, full_check=True)
    if "c" not in {i.name for i in original.graph.input}:
        check = validate_models(original, written)
        assert check.passed, check.summary()
        return
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9)).astype(np.float32)
    for c in (True, False):  # both branches, by hand: the suites draw no booleans
        feed = {"x": x, "c": np.array(c)}
        got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0] for m in (written, original))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_nothing_to_rewrite_is_not_modified():
    original = deployed("mtcnn_pnet", dynamic=False)
    model = ir.serde.deserialize_model(original)
    rewrite = PoolRewriteIRPass(exclude=["MaxPool"])
    assert not rewrite(model).modified
    assert all(n.status != REWRITTEN for n in rewrite.report.nodes) and pools_in(model) == ["MaxPool"]
