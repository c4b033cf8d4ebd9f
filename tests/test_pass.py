"""The pass as a whole: what is kept and why, what is preserved, the graphsurgeon API."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import STRICT_OPS, op_types, pool_model, run
from onnx import TensorProto, helper

from rewriter import PoolRewritePass, rewrite_model


def kept_reason(model: onnx.ModelProto, **options) -> str:
    new, report = rewrite_model(model, **options)
    (node,) = report.nodes
    assert node.status == "kept" and node.reason
    assert [n.op_type for n in new.graph.node] == [n.op_type for n in model.graph.node]
    return node.reason


@pytest.mark.parametrize(
    "dtype,needle",
    [(TensorProto.INT8, "int8"), (TensorProto.UINT8, "uint8"), (TensorProto.DOUBLE, "double")],
)
def test_unsupported_dtypes_are_kept(dtype, needle):
    model = pool_model("MaxPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2]), opset=12, dtype=dtype)
    assert needle in kept_reason(model)


def test_lp_pool_is_kept():
    model = pool_model("LpPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2], p=2))
    assert "piecewise-linear" in kept_reason(model)


def test_dynamic_spatial_dims_are_kept():
    model = pool_model("GlobalAveragePool", [1, 2, "H", "W"])
    assert "dynamic spatial" in kept_reason(model)


def test_dynamic_channels_are_kept():
    model = pool_model("MaxPool", [1, "C", 6, 6], dict(kernel_shape=[2, 2]))
    assert "channel" in kept_reason(model)


def indices_model(indices_is_output: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])]
    if indices_is_output:
        outputs.append(helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 2, 3, 3]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)


def test_used_indices_output_is_kept():
    assert "Indices" in kept_reason(indices_model(indices_is_output=True))


def test_declared_but_unused_indices_output_is_rewritten():
    model = indices_model(indices_is_output=False)
    new, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten"
    assert op_types(new) <= STRICT_OPS


def test_only_and_exclude_select_by_name_and_op_type():
    model = pool_model("MaxPool", [1, 2, 6, 6], dict(kernel_shape=[2, 2]), name="head/pool")
    assert kept_reason(model, exclude=["head/pool"]) == "excluded by --exclude"
    _, report = rewrite_model(model, only=["MaxPool"])
    assert report.nodes[0].status == "rewritten"
    _, report = rewrite_model(cnn_model(), only=["GlobalAveragePool"])
    assert [(n.name, n.status, n.reason) for n in report.nodes] == [
        ("pool", "kept", "not selected by --only"), ("gap", "rewritten", None)
    ]


def cnn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    unused = helper.make_tensor("unused_init", TensorProto.FLOAT, [2], [1.0, 2.0])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["p"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, ["N", 4, 1, 1]), helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4, 6, 6])],
        initializer=[w, unused], doc_string="graph doc",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="test")
    helper.set_model_props(model, {"author": "tests"})
    return model


def test_everything_else_is_preserved():
    model = cnn_model()
    before = model.SerializeToString()
    new, report = rewrite_model(model)
    assert model.SerializeToString() == before, "the input model was modified"
    assert [n.status for n in report.nodes] == ["rewritten", "rewritten"]
    assert op_types(new) <= STRICT_OPS
    assert [i.name for i in new.graph.input] == ["x"] and [o.name for o in new.graph.output] == ["g", "p"]
    assert new.graph.output == model.graph.output and new.graph.input == model.graph.input
    assert {t.name for t in model.graph.initializer} <= {t.name for t in new.graph.initializer}
    assert new.metadata_props == model.metadata_props and new.opset_import == model.opset_import
    assert new.ir_version == model.ir_version and new.graph.doc_string == "graph doc"
    assert [n for n in new.graph.node if n.name in ("conv", "relu")] == [model.graph.node[0], model.graph.node[2]]
    onnx.checker.check_model(new, full_check=True)
    x = np.random.default_rng(1).integers(-10, 11, (2, 3, 12, 12)).astype(np.float32)
    for a, b in zip(run(model, {"x": x}), run(new, {"x": x})):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


def test_nothing_to_rewrite_returns_an_equal_model():
    model = cnn_model()
    new, report = rewrite_model(model, exclude=["MaxPool", "gap"])
    assert new.SerializeToString() == model.SerializeToString()
    assert all(n.status == "kept" for n in report.nodes)


def test_rewrite_is_deterministic_and_idempotent():
    model = cnn_model()
    first, _ = rewrite_model(model)
    second, _ = rewrite_model(model)
    assert first.SerializeToString() == second.SerializeToString()
    again, report = rewrite_model(first)
    assert report.nodes == [] and again.SerializeToString() == first.SerializeToString()


def test_graphsurgeon_graph_api():
    model = onnx.shape_inference.infer_shapes(cnn_model())
    graph = gs.import_onnx(model)
    report = PoolRewritePass().run_graph(graph)
    assert [n.status for n in report.nodes] == ["rewritten", "rewritten"]
    assert {n.op for n in graph.nodes} <= STRICT_OPS
    new = gs.export_onnx(graph)
    onnx.checker.check_model(new)
    x = np.random.default_rng(2).standard_normal((1, 3, 12, 12)).astype(np.float32)
    for a, b in zip(run(cnn_model(), {"x": x}), run(new, {"x": x})):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pass_objects_compose():
    """A pipeline can chain passes: rewrite max pools first, then the rest."""
    only_max = PoolRewritePass(only=["MaxPool"])
    rest = PoolRewritePass()
    first = only_max(cnn_model())
    second = rest(first.model)
    assert [n.status for n in first.report.nodes] == ["rewritten", "kept"]
    assert [n.op_type for n in second.report.nodes] == ["GlobalAveragePool"]
    assert op_types(second.model) <= STRICT_OPS


@pytest.mark.parametrize(
    "downstream,attrs",
    [("GlobalAveragePool", {}), ("GlobalMaxPool", {}), ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))],
)
def test_pool_after_ceil_mode_pool_gets_runtime_shape(downstream, attrs):
    """Before opset 22 shape inference keeps a ceil_mode window that starts in the
    padding (9x9 here); onnxruntime drops it (8x8). Downstream pools must see 8x8."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node(downstream, ["p1"], ["y"], name="p2", **attrs),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 15, 15])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = rewrite_model(model)
    assert [n.status for n in report.nodes] == ["rewritten", "rewritten"]
    x = np.random.default_rng(3).standard_normal((1, 2, 15, 15)).astype(np.float32)
    np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def _chain_model(producers: list[tuple[str, dict, list]], opset: int = 17) -> onnx.ModelProto:
    """x -> producers... -> MaxPool 3x3/p1 -> y; each producer is (op, attrs, extra initializer inputs)."""
    nodes, inits, src = [], [], "x"
    for i, (op, attrs, extra) in enumerate(producers):
        names = []
        for j, value in enumerate(extra):
            names.append(f"c{i}_{j}")
            inits.append(onnx.numpy_helper.from_array(np.asarray(value, np.float32), names[-1]))
        nodes.append(helper.make_node(op, [src, *names], [f"t{i}"], name=f"n{i}", **attrs))
        src = f"t{i}"
    nodes.append(helper.make_node("MaxPool", [src], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize(
    "producers,nonnegative",
    [
        ([("Relu", {}, [])], True),
        ([("Sigmoid", {}, [])], True),
        ([("Clip", {}, [0.0, 6.0])], True),
        ([("Clip", {}, [-1.0, 6.0])], False),
        ([("Relu", {}, []), ("Transpose", {"perm": [0, 1, 3, 2]}, [])], True),
        ([("Relu", {}, []), ("Add", {}, [[-1.0]])], False),
        ([("Tanh", {}, [])], False),
        ([("Abs", {}, []), ("MaxPool", {"kernel_shape": [1, 1]}, [])], True),
    ],
    ids=["relu", "sigmoid", "relu6", "clip-neg", "relu-transpose", "relu-minus-1", "tanh", "abs-maxpool"],
)
def test_nonnegative_inputs_skip_border_padding(producers, nonnegative):
    model = _chain_model(producers)
    new, report = rewrite_model(model)
    pool = [n for n in report.nodes if n.name == "pool"][0]
    assert pool.status == "rewritten"
    _, relu_report = rewrite_model(_chain_model([("Relu", {}, [])]))
    zero_padded = [n for n in relu_report.nodes if n.name == "pool"][0].op_counts
    assert (pool.op_counts == zero_padded) == nonnegative
    x = -np.abs(np.random.default_rng(4).standard_normal((1, 2, 6, 6))).astype(np.float32) - 0.1
    np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6, atol=1e-7)


def _branch(name: str, op: str, attrs: dict) -> onnx.GraphProto:
    node = helper.make_node(op, ["x"], [f"{name}_y"], name=f"{name}/pool", **attrs)  # reads x from the outer scope
    return helper.make_graph([node], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 2, 4, 4])])


def if_model() -> onnx.ModelProto:
    """An If whose branches pool the outer-scope x: MaxPool in one, AveragePool in the other."""
    then_g = _branch("then", "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    else_g = _branch("else", "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    nodes = [helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_pools_inside_if_branches_are_rewritten():
    model = if_model()
    new, report = rewrite_model(model)
    assert sorted(n.name for n in report.rewritten) == ["else/pool", "then/pool"]
    branches = [a.g for a in new.graph.node[0].attribute]
    assert all({n.op_type for n in g.node} <= STRICT_OPS for g in branches)
    onnx.checker.check_model(new, full_check=True)
    x = -np.abs(np.random.default_rng(5).standard_normal((1, 2, 8, 8))).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        np.testing.assert_allclose(run(new, feeds)[0], run(model, feeds)[0], rtol=1e-6, atol=1e-7)


def test_pools_inside_local_functions_are_inlined_and_rewritten():
    body = [helper.make_node("MaxPool", ["inp"], ["out"], name="mp", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    function = helper.make_function("local", "Pool3x3", ["inp"], ["out"], body, [helper.make_opsetid("", 17)])
    nodes = [
        helper.make_node("Pool3x3", ["x"], ["a"], name="call1", domain="local"),
        helper.make_node("Pool3x3", ["a"], ["y"], name="call2", domain="local"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], ir_version=8, functions=[function]
    )
    new, report = rewrite_model(model)
    assert len(report.rewritten) == 2 and "inlined" in report.notes[0]
    assert op_types(new) <= STRICT_OPS and not new.functions
    x = np.random.default_rng(6).standard_normal((1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6, atol=1e-7)
    untouched, report = rewrite_model(model, exclude=["MaxPool"])
    assert untouched.SerializeToString() == model.SerializeToString(), "nothing rewritten: the functions stay"


def qdq_model(pool_op: str, attrs: dict) -> onnx.ModelProto:
    nodes = [
        helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["x"], name="dq"),
        helper.make_node(pool_op, ["x"], ["p"], name="pool", **attrs),
        helper.make_node("QuantizeLinear", ["p", "scale", "zero"], ["yq"], name="q"),
    ]
    inits = [onnx.numpy_helper.from_array(np.array(0.037, np.float32), "scale"), onnx.numpy_helper.from_array(np.array(3, np.int8), "zero")]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("xq", TensorProto.INT8, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 4, None, None])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_qdq_max_pool_is_rewritten_with_equal_quantized_output():
    from rewriter.validate import validate_models

    model = qdq_model("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    new, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten"
    xq = np.random.default_rng(8).integers(-128, 128, (1, 4, 9, 9)).astype(np.int8)
    np.testing.assert_array_equal(run(new, {"xq": xq})[0], run(model, {"xq": xq})[0])
    assert validate_models(model, new).passed  # integer outputs are compared exactly


def test_qdq_average_pool_at_ties_rewritten_or_kept_when_asked():
    """A 2x2 average at one non-power-of-two scale reaches QuantizeLinear ties: rewritten by
    default (validated, one step allowed at the ties), kept with keep_tie_averages."""
    from rewriter.validate import validate_models

    model = qdq_model("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]))
    assert "QuantizeLinear" in kept_reason(model, keep_tie_averages=True)
    new, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten" and "ties" in report.nodes[0].note
    assert validate_models(model, new).passed


def test_double_pools_need_an_explicit_request():
    from onnx.reference import ReferenceEvaluator

    model = pool_model("MaxPool", [1, 2, 7, 7], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), dtype=TensorProto.DOUBLE)
    assert "--rewrite-double" in kept_reason(model)
    new, report = rewrite_model(model, rewrite_double=True)
    assert report.nodes[0].status == "rewritten" and op_types(new) <= STRICT_OPS
    x = -np.abs(np.random.default_rng(9).standard_normal((1, 2, 7, 7)))
    expected = run(model, {"x": x})[0]  # onnxruntime has a double MaxPool, not a double Conv
    np.testing.assert_allclose(ReferenceEvaluator(new).run(None, {"x": x})[0], expected, rtol=1e-12)


@pytest.mark.parametrize(
    "op,attrs,relu,rewritten",
    [
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), True, True),  # ResNet stem after Relu
        ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), False, True),
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), False, False),  # needs -inf borders
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), True, False),
        ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1], count_include_pad=1), False, True),
        ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0), False, False),
        ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 1], dilations=[2, 1]), False, True),
        ("GlobalAveragePool", {}, False, False),
    ],
    ids=["stem-after-relu", "vgg", "signed-padded", "ceil", "avg-cip1", "avg-cip0-padded", "avg-dilated", "global"],
)
def test_dynamic_spatial_dims_rewrite_only_extent_free_pools(op, attrs, relu, rewritten):
    model = pool_model(op, ["N", 3, "H", "W"], attrs, prefix_relu=relu, opset=19)
    new, report = rewrite_model(model)
    pool = [n for n in report.nodes if n.name == "pool"][0]
    assert (pool.status == "rewritten") == rewritten, pool.reason
    if not rewritten:
        assert "dynamic spatial" in pool.reason
        return
    rng = np.random.default_rng(10)
    for h, w in [(9, 9), (10, 7), (16, 13), (5, 6)]:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_pool_inside_a_loop_body_reads_the_outer_scope():
    body_nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="body/pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["acc_in", "p"], ["acc_out"], name="body/add"),
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body/cond"),
    ]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1, 2, 6, 6])],
    )
    nodes = [helper.make_node("Loop", ["trip", "", "acc0"], ["y"], name="loop", body=body)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6]), helper.make_tensor_value_info("acc0", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
        [onnx.numpy_helper.from_array(np.array(3, np.int64), "trip")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = rewrite_model(model)
    assert [n.name for n in report.rewritten] == ["body/pool"]
    onnx.checker.check_model(new, full_check=True)
    rng = np.random.default_rng(12)
    feeds = {"x": -np.abs(rng.standard_normal((1, 2, 6, 6))).astype(np.float32), "acc0": np.zeros((1, 2, 6, 6), np.float32)}
    np.testing.assert_allclose(run(new, feeds)[0], run(model, feeds)[0], rtol=1e-6, atol=1e-6)


def reduce_model(op: str, axes, keepdims: int, opset: int) -> onnx.ModelProto:
    inputs, inits, attrs = ["x"], [], {"keepdims": keepdims}
    if opset >= 18:
        inputs.append("axes")
        inits.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), "axes"))
    else:
        attrs["axes"] = axes
    nodes = [helper.make_node(op, inputs, ["y"], name="reduce", **attrs)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None if not keepdims else ["N", 3, None, None])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_spatial_reduce_is_a_global_pool(op, opset):
    """What PyTorch's dynamo exporter writes for AdaptiveAvg/MaxPool2d(1)."""
    model = reduce_model(op, [2, -1], 1, opset)
    new, report = rewrite_model(model)
    assert [(n.op_type, n.status) for n in report.nodes] == [(op, "rewritten")]
    assert op_types(new) <= STRICT_OPS
    x = np.random.default_rng(13).standard_normal((2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


# keepdims=0 over (2, 3) is a global pool whose rank changes (issue 22): tests/test_reduce_pools.py.
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([3], 0), ([1, 2, 3], 1)])
def test_other_reduces_are_not_pools(axes, keepdims):
    model = reduce_model("ReduceMean", axes, keepdims, 13)
    new, report = rewrite_model(model)
    assert report.nodes == [] and new.SerializeToString() == model.SerializeToString()


def test_shapes_inference_cannot_resolve_come_from_a_runtime_run():
    """A Reshape whose target goes through Max defeats onnx shape inference (data
    propagation follows Shape, not Max); onnxruntime knows."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s0"], name="shape"),
        helper.make_node("Max", ["s0", "ones"], ["s"], name="max"),
        helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
        helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 7, 7])],
        [helper.make_tensor("ones", TensorProto.INT64, [4], [1, 1, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    new, report = rewrite_model(model)
    assert report.nodes[0].status == "rewritten", report.nodes[0].reason
    assert any("onnxruntime run" in note for note in report.notes)
    x = -np.abs(np.random.default_rng(14).standard_normal((1, 2, 7, 7))).astype(np.float32)
    np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6, atol=1e-7)


def test_in_place_rewrite_reuses_the_model():
    model = cnn_model()
    expected, _ = rewrite_model(cnn_model())
    result = PoolRewritePass().run(model, in_place=True)
    assert result.model is model
    assert model.SerializeToString() == expected.SerializeToString()


def test_graphsurgeon_api_reaches_if_branches():
    model = if_model()
    gs_graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    report = PoolRewritePass().run_graph(gs_graph)
    assert sorted(n.name for n in report.rewritten) == ["else/pool", "then/pool"]
    new = gs.export_onnx(gs_graph)
    x = -np.abs(np.random.default_rng(15).standard_normal((1, 2, 8, 8))).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        np.testing.assert_allclose(run(new, feeds)[0], run(model, feeds)[0], rtol=1e-6, atol=1e-7)


def test_graphsurgeon_api_keeps_qdq_average_pool_when_asked():
    model = qdq_model("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]))
    report = PoolRewritePass(keep_tie_averages=True).run_graph(gs.import_onnx(onnx.shape_inference.infer_shapes(model)))
    assert report.nodes[0].status == "kept" and "QuantizeLinear" in report.nodes[0].reason
    report = PoolRewritePass().run_graph(gs.import_onnx(onnx.shape_inference.infer_shapes(model)))
    assert report.nodes[0].status == "rewritten"


def test_comes_out_of_conv_follows_ops_in_the_blocked_layout():
    """Conv outputs, and tensors reached from a Conv through activations, Add and pools,
    are in onnxruntime's blocked layout; graph inputs and other ops' outputs are not.
    A deep web of residual Adds is searched once per tensor."""
    from rewriter.site import comes_out_of_conv

    producers = {
        "c": ("Conv", ["x", "w"], {}), "r": ("Relu", ["c"], {}), "p": ("MaxPool", ["r"], {}),
        "a": ("Add", ["p", "x"], {}), "m": ("Mul", ["c", "c"], {}), "n": ("Relu", ["x"], {}),
    }
    assert [comes_out_of_conv(t, producers.get) for t in ("c", "r", "p", "a", "m", "n", "x")] == [
        True, True, True, True, False, False, False,
    ]
    web = {f"t{i}": ("Add", [f"t{i + 1}", f"t{i + 1}"], {}) for i in range(400)}
    assert not comes_out_of_conv("t0", web.get)
