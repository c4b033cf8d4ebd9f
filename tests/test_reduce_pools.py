"""Which ReduceMean / ReduceMax nodes are global pools, and their exact rewrites (issue 13,
section 4: channels first; issue 22: channels last, without a batch axis, keepdims 0,
axes as an input, chains of reductions)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import STRICT_OPS, input_suites, op_types, run
from onnx import TensorProto, helper

from rewriter import rewrite_model
from rewriter.reductions import pooling_reductions
from rewriter.selection import EXCLUDED, NOT_SELECTED


def _axes_inputs(name: str, axes, opset: int, as_constant_node: bool = False):
    """(extra node inputs, initializers, nodes, attrs) carrying ``axes`` the way ``opset`` wants them."""
    if opset < 18:
        return [], [], [], {"axes": list(axes)}
    value = onnx.numpy_helper.from_array(np.array(axes, np.int64), name)
    if as_constant_node:
        return [name], [], [helper.make_node("Constant", [], [name], name=name + "_const", value=value)], {}
    return [name], [value], [], {}


def reduce_model(op: str, shape, axes, *, keepdims: int = 1, opset: int = 13, as_constant_node: bool = False) -> onnx.ModelProto:
    extra, inits, nodes, attrs = _axes_inputs("axes", axes, opset, as_constant_node)
    nodes.append(helper.make_node(op, ["x", *extra], ["y"], name="reduce", keepdims=keepdims, **attrs))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def layer_norm_model(opset: int) -> onnx.ModelProto:
    """LayerNorm over the last axis of [1, 40, 120], spelled out as exporters write it."""
    axes1, inits1, nodes1, attrs1 = _axes_inputs("axes_mean", [-1], opset)
    axes2, inits2, nodes2, attrs2 = _axes_inputs("axes_var", [-1], opset)
    eps = onnx.numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    nodes = nodes1 + nodes2 + [
        helper.make_node("ReduceMean", ["x", *axes1], ["mean"], name="ln/mean", keepdims=1, **attrs1),
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="ln/sub"),
        helper.make_node("Mul", ["centred", "centred"], ["squared"], name="ln/square"),
        helper.make_node("ReduceMean", ["squared", *axes2], ["var"], name="ln/var", keepdims=1, **attrs2),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="ln/add_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="ln/sqrt"),
        helper.make_node("Div", ["centred", "std"], ["y"], name="ln/div"),
    ]
    graph = helper.make_graph(
        nodes, "layer_norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40, 120])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40, 120])], [eps, *inits1, *inits2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", [13, 18])
def test_layer_norm_mean_is_not_a_pool(opset):
    model = layer_norm_model(opset)
    onnx.checker.check_model(model, full_check=True)
    new, report = rewrite_model(model)
    assert report.nodes == []
    assert new.SerializeToString() == model.SerializeToString()


def test_layer_norm_through_the_cli_is_an_unchanged_copy(tmp_path, capsys):
    from rewriter import cli

    src, out, report = tmp_path / "ln.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(layer_norm_model(18), src)
    assert cli.main([str(src), str(out), "--report", str(report)]) == 0
    assert out.read_bytes() == src.read_bytes()
    assert '"nodes": []' in report.read_text()
    assert "no pool nodes found" in capsys.readouterr().out


@pytest.mark.parametrize("opset,as_constant_node", [(13, False), (18, False), (18, True)])
@pytest.mark.parametrize("axes", [[2, 3], [-2, -1], [3, -2]])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_rank4_spatial_reduce_is_rewritten_and_matches(op, axes, opset, as_constant_node):
    model = reduce_model(op, [2, 3, 5, 6], axes, opset=opset, as_constant_node=as_constant_node)
    new, report = rewrite_model(model)
    assert [(n.op_type, n.status) for n in report.nodes] == [(op, "rewritten")], report.table()
    assert op_types(new) - {"Constant"} <= STRICT_OPS
    x = np.random.default_rng(13).standard_normal((2, 3, 5, 6)).astype(np.float32)
    expected = run(model, {"x": x})[0]
    assert expected.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(run(new, {"x": x})[0], expected, rtol=1e-6, atol=1e-6)


def test_rank5_spatial_reduce_is_a_3d_global_pool():
    model = reduce_model("ReduceMean", [1, 2, 3, 4, 5], [2, 3, 4])
    new, report = rewrite_model(model)
    assert [n.status for n in report.nodes] == ["rewritten"]
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(run(new, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape,axes,keepdims,opset",
    [
        ([1, 40, 120], [-1], 1, 13),  # rank 3: a LayerNorm's mean, not a 1-D pool
        ([1, 40, 120], [2], 1, 18),
        ([1, 40, 120], [1], 1, 13),  # rank 3, one axis: [N, tokens, features] pooled over tokens, or a norm
        ([2, 3, 5, 6], [1, 2, 3], 1, 13),  # the channel axis too
        ([2, 3, 5, 6], [0, 1], 1, 13),  # no layout reads these as its spatial axes
        ([2, 3, 5, 6], [1, 3], 0, 18),
        ([2, 3, 5, 6], [0, 2, 3], 1, 13),  # the batch axis with the spatial ones
        ([2, 3, 5, 6], [0, 1, 2, 3], 1, 13),  # every axis
        ([2, 3, 5, 6], [3], 1, 13),  # only some spatial axes
        ([2, 3, 5, 6], [-1], 1, 18),
        ([2, 3, 5, 6], [1], 1, 13),
        ([2, 3, 5, 6], [], 1, 18),  # empty axes: every axis
    ],
)
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_other_reduces_are_left_alone(op, shape, axes, keepdims, opset):
    model = reduce_model(op, shape, axes, keepdims=keepdims, opset=opset)
    new, report = rewrite_model(model)
    assert report.nodes == []
    assert new.SerializeToString() == model.SerializeToString()


def test_noop_with_empty_axes_is_not_a_pool():
    model = reduce_model("ReduceMean", [2, 3, 5, 6], [], opset=18)
    model.graph.node[0].attribute.append(helper.make_attribute("noop_with_empty_axes", 1))
    new, report = rewrite_model(model)
    assert report.nodes == [] and new.SerializeToString() == model.SerializeToString()


def test_reduce_without_axes_reduces_everything_and_is_not_a_pool():
    nodes = [helper.make_node("ReduceMax", ["x"], ["y"], name="reduce", keepdims=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    for opset in (13, 18):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        new, report = rewrite_model(model)
        assert report.nodes == [] and new.SerializeToString() == model.SerializeToString()


# -- issue 22: every layout, keepdims, spelling of the axes, and chains ---------------

SPELLINGS = {  # (opset, axes written as, the axes of a channels-last rank-4 tensor)
    "attribute": (13, False, [1, 2]),
    "negative": (13, False, [-3, -2]),
    "initializer": (18, False, [1, 2]),
    "constant-node": (18, True, [2, 1]),
}


def _assert_matches(original: onnx.ModelProto, new: onnx.ModelProto, shape, op: str) -> None:
    for suite, x in input_suites(shape).items():
        expected, actual = run(original, {"x": x})[0], run(new, {"x": x})[0]
        assert actual.shape == expected.shape
        if op == "ReduceMax" and suite == "ties":  # integers: relu(a - b) + b is exact
            np.testing.assert_array_equal(actual, expected, err_msg=suite)
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6, err_msg=suite)


def _no_pooling_reduction_left(model: onnx.ModelProto) -> bool:
    return pooling_reductions(model) == {} and not any(n.op_type in ("ReduceMean", "ReduceMax") for n in model.graph.node)


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_channels_last_reduce_is_rewritten_and_matches(op, spelling, keepdims):
    opset, as_constant_node, axes = SPELLINGS[spelling]
    shape = [2, 5, 6, 3]
    model = reduce_model(op, shape, axes, keepdims=keepdims, opset=opset, as_constant_node=as_constant_node)
    allow = ["Reshape"] if not keepdims else []
    new, report = rewrite_model(model, allow=allow)
    [row] = report.nodes
    assert (row.op_type, row.status) == (op, "rewritten"), report.table()
    assert row.attributes.startswith("global NHWC") and row.strategy.startswith("NHWC: ")
    assert _no_pooling_reduction_left(new)
    assert op_types(new) - {"Constant"} <= STRICT_OPS | set(allow)
    _assert_matches(model, new, shape, op)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_rank5_channels_last_reduce_is_rewritten(op):
    shape = [1, 3, 4, 5, 2]
    model = reduce_model(op, shape, [1, 2, 3])
    new, report = rewrite_model(model)
    assert [n.status for n in report.nodes] == ["rewritten"] and _no_pooling_reduction_left(new)
    _assert_matches(model, new, shape, op)


@pytest.mark.parametrize("target", [None, "rknn", "nvidia-dla", "tidl"])
@pytest.mark.parametrize("shape,axes", [([2, 3, 5, 6], [2, 3]), ([2, 5, 6, 3], [1, 2]), ([5, 6, 3], [0, 1])])
def test_a_rank_change_without_reshape_is_kept_naming_it(shape, axes, target):
    keepdims = 0 if len(shape) == 4 else 1  # rank 3 without a batch axis: a conv cannot read it at all
    model = reduce_model("ReduceMean", shape, axes, keepdims=keepdims)
    new, report = rewrite_model(model, target=target)
    [row] = report.nodes
    assert row.status == "kept" and "needs Reshape, an op not in" in row.reason, row.reason
    assert "--allow Reshape" in row.reason
    assert new.SerializeToString() == model.SerializeToString()
    new, report = rewrite_model(model, target=target, allow=["Reshape"])
    assert [n.status for n in report.nodes] == ["rewritten"], report.table()
    _assert_matches(model, new, shape, "ReduceMean")


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_channels_last_without_a_batch_axis_is_read_through_a_reshape(op, keepdims):
    shape = [5, 6, 3]
    model = reduce_model(op, shape, [0, 1], keepdims=keepdims, opset=18, as_constant_node=True)
    new, report = rewrite_model(model, allow=["Reshape"])
    [row] = report.nodes
    assert row.status == "rewritten" and row.strategy.startswith("HWC: Reshape + "), report.table()
    assert _no_pooling_reduction_left(new)
    _assert_matches(model, new, shape, op)


def chain_model(op: str, shape, steps, opset: int = 9, shared: str = "") -> onnx.ModelProto:
    """``op`` applied once per (axes, keepdims) of ``steps``; ``shared``: the first
    intermediate is also read by an Identity ("reader") or is a graph output ("output")."""
    nodes, x = [], "x"
    for i, (axes, keepdims) in enumerate(steps):
        y = "y" if i == len(steps) - 1 else f"r{i}"
        nodes.append(helper.make_node(op, [x], [y], name=f"reduce{i}", axes=axes, keepdims=keepdims))
        x = y
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared == "reader":
        nodes.append(helper.make_node("Identity", ["r0"], ["copy"], name="copy"))
        outputs.append(helper.make_tensor_value_info("copy", TensorProto.FLOAT, None))
    elif shared == "output":
        outputs.append(helper.make_tensor_value_info("r0", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


CHAINS = {
    "max w then h (opset 9)": ("ReduceMax", [2, 3, 5, 6], [([3], 1), ([2], 1)], []),
    "max w then h, keepdims 0": ("ReduceMax", [2, 3, 5, 6], [([3], 0), ([2], 0)], ["Reshape"]),
    "mean h then w, mixed keepdims": ("ReduceMean", [2, 3, 5, 6], [([2], 0), ([2], 1)], ["Reshape"]),
    "channels-last mean w then h": ("ReduceMean", [2, 5, 6, 3], [([2], 1), ([1], 1)], []),
    "channels-last max, three axes": ("ReduceMax", [1, 3, 4, 5, 2], [([3], 1), ([1], 1), ([2], 1)], []),
}


@pytest.mark.parametrize("case", list(CHAINS))
def test_a_chain_of_reductions_is_one_global_pool(case):
    op, shape, steps, allow = CHAINS[case]
    model = chain_model(op, shape, steps)
    new, report = rewrite_model(model, allow=allow)
    [row] = report.nodes
    assert (row.name, row.status) == (f"reduce{len(steps) - 1}", "rewritten"), report.table()
    assert " then " in row.attributes
    assert _no_pooling_reduction_left(new)  # the earlier reductions went with it
    _assert_matches(model, new, shape, op)


@pytest.mark.parametrize("shared", ["reader", "output"])
def test_a_chain_whose_intermediate_is_used_elsewhere_is_not_a_pool(shared):
    model = chain_model("ReduceMax", [2, 3, 5, 6], [([3], 1), ([2], 1)], shared=shared)
    new, report = rewrite_model(model)
    assert report.nodes == [] and new.SerializeToString() == model.SerializeToString()


def test_a_chain_is_rewritten_on_an_onnx_graphsurgeon_graph_too():
    import onnx_graphsurgeon as gs

    from rewriter import PoolRewritePass

    model = chain_model("ReduceMax", [2, 3, 5, 6], [([3], 1), ([2], 1)])
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    report = PoolRewritePass().run_graph(graph)
    assert [n.status for n in report.nodes] == ["rewritten"]
    new = gs.export_onnx(graph.cleanup().toposort())
    assert _no_pooling_reduction_left(new)
    _assert_matches(model, new, [2, 3, 5, 6], "ReduceMax")


def test_only_and_exclude_select_reductions_by_op_type():
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", axes=[1, 2], keepdims=1),
        helper.make_node("ReduceMax", ["x"], ["max"], name="max", axes=[1, 2], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mean", "max")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    _, report = rewrite_model(model, exclude=["ReduceMax"])
    assert {n.name: (n.status, n.reason) for n in report.nodes} == {"mean": ("rewritten", None), "max": ("kept", EXCLUDED)}
    _, report = rewrite_model(model, only=["ReduceMax"])
    assert {n.name: (n.status, n.reason) for n in report.nodes} == {"mean": ("kept", NOT_SELECTED), "max": ("rewritten", None)}


def _perturbed(model: onnx.ModelProto, prefix: str) -> onnx.ModelProto:
    """``model`` with the weights of the last added conv whose name starts so (the one
    feeding the result) scaled by 1.01."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    conv = [n for n in broken.graph.node if n.op_type == "Conv" and n.name.startswith(prefix)][-1]
    weight = next(t for t in broken.graph.initializer if t.name == conv.input[1])
    values = onnx.numpy_helper.to_array(weight).copy()
    weight.CopyFrom(onnx.numpy_helper.from_array(values * np.float32(1.01), weight.name))
    return broken


@pytest.mark.parametrize("model,node", [
    (lambda: reduce_model("ReduceMean", [1, 5, 6, 3], [1, 2], opset=18), "reduce"),
    (lambda: reduce_model("ReduceMax", [1, 5, 6, 3], [1, 2]), "reduce"),
    (lambda: chain_model("ReduceMax", [1, 3, 5, 6], [([3], 1), ([2], 1)]), "reduce1"),
])
def test_the_new_forms_are_checked_node_by_node(model, node):
    """A correct rewrite passes its node check; one conv's weights off by 1% fail it, naming the node."""
    from rewriter.validate import validate_models

    original = model()
    new, _ = rewrite_model(original)
    result = validate_models(original, new)
    assert result.passed and [(c.name, c.passed) for c in result.nodes] == [(node, True)], result.summary()
    result = validate_models(original, _perturbed(new, f"{node}/poolrewrite"))
    assert not result.passed
    assert [(c.name, c.passed) for c in result.nodes] == [(node, False)], result.summary()


def test_a_dynamic_batch_stays_dynamic_through_the_reshape():
    model = reduce_model("ReduceMax", ["N", 5, 6, 3], [1, 2], keepdims=0)
    new, report = rewrite_model(model, allow=["Reshape"])
    assert [n.status for n in report.nodes] == ["rewritten"], report.table()
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 5, 6, 3)).astype(np.float32)
        expected, actual = run(model, {"x": x})[0], run(new, {"x": x})[0]
        assert actual.shape == expected.shape == (batch, 3)
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_a_dynamic_spatial_dim_of_a_channels_last_reduce_is_kept_naming_the_flag():
    model = reduce_model("ReduceMean", [1, "H", 6, 3], [1, 2])
    new, report = rewrite_model(model)
    [row] = report.nodes
    assert row.status == "kept" and "--overwrite-input-shape" in row.reason, row.reason
    assert new.SerializeToString() == model.SerializeToString()
