"""Which ReduceMean / ReduceMax nodes are global pools: only NCHW-style ones (issue 13, section 4)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import STRICT_OPS, op_types, run
from onnx import TensorProto, helper

from rewriter import rewrite_model


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
        ([2, 3, 5, 6], [2, 3], 0, 13),  # keepdims=0
        ([2, 3, 5, 6], [2, 3], 0, 18),
        ([2, 3, 5, 6], [1, 2, 3], 1, 13),  # the channel axis too
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
