"""``--overwrite-input-shape`` / :func:`rewriter.shapes.overwrite_input_shapes`: static
dims on request, on the shapes real exports have (Paddle's -1, one ``?`` for H and
W, NHWC, integer token inputs, several inputs, stale value_info and output dims).

Every case runs the CLI, then checks the written model itself: its inputs have
exactly the given dims, it passes the full onnx checker (strict shape inference,
which refuses stale value_info), and onnxruntime gives the original's outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rewriter import rewrite_model
from rewriter.cli import main
from rewriter.lower import POOL_OPS
from rewriter.shapes import ShapeError, overwrite_input_shapes, parse_shape_option
from rewriter.validate import describe_inputs
from tests.helpers import run

DATA = Path(__file__).parent / "data" / "torch"
RNG = np.random.default_rng(13)
F = TensorProto.FLOAT


def weight(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def make(nodes, inputs, outputs, initializers=(), value_info=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers], value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def conv(x: str, y: str, cin: int, cout: int, name: str, rank: int = 2) -> tuple[onnx.NodeProto, tuple]:
    """A 3-tap 'same' conv: its output is signed, so a padded MaxPool after it needs -inf borders."""
    node = helper.make_node("Conv", [x, f"{name}_w"], [y], name=name, kernel_shape=[3] * rank, pads=[1] * 2 * rank)
    return node, (f"{name}_w", weight(cout, cin, *[3] * rank))


def paddle_minus_one() -> onnx.ModelProto:
    """Paddle writes dim_value -1 for every dynamic dim."""
    c, w = conv("x", "c", 3, 8, "conv")
    nodes = [c, helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["p"], ["y"], name="gap")]
    return make(nodes, [helper.make_tensor_value_info("x", F, [-1, 3, -1, -1])], [helper.make_tensor_value_info("y", F, [-1, 8, 1, 1])], [w])


def shared_question_mark() -> onnx.ModelProto:
    """H and W both named '?': each must get its own value (H != W below)."""
    c, w = conv("x", "c", 3, 6, "conv")
    nodes = [c, helper.make_node("AveragePool", ["c"], ["p"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
             helper.make_node("GlobalMaxPool", ["p"], ["y"], name="gmp")]
    return make(nodes, [helper.make_tensor_value_info("x", F, ["?", 3, "?", "?"])], [helper.make_tensor_value_info("y", F, ["?", 6, "?", "?"])], [w])


def nhwc() -> onnx.ModelProto:
    """A Keras-style NHWC input, transposed to NCHW before the pools."""
    c, w = conv("t", "c", 3, 4, "conv")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), c,
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
             helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"])]
    return make(nodes, [helper.make_tensor_value_info("x", F, ["N", "H", "W", 3])], [helper.make_tensor_value_info("y", F, ["N", 4])], [w])


def token_ids() -> onnx.ModelProto:
    """int64 ids -> embedding Gather -> [B, C, T] -> Conv1d -> MaxPool 1-D: the pools' input comes from an integer input."""
    c, w = conv("e", "c", 8, 8, "conv1d", rank=1)
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["g"]), helper.make_node("Transpose", ["g"], ["e"], perm=[0, 2, 1]), c,
             helper.make_node("MaxPool", ["c"], ["p"], name="pool1d", kernel_shape=[3], strides=[2], pads=[1, 1]),
             helper.make_node("GlobalAveragePool", ["p"], ["y"], name="gap1d")]
    return make(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])],
                [helper.make_tensor_value_info("y", F, ["B", 8, 1])], [("emb", weight(16, 8)), w])


def two_inputs() -> onnx.ModelProto:
    """Two inputs that share the dim_param names H and W but get different sizes."""
    ca, wa = conv("a", "ca", 3, 4, "conv_a")
    cb, wb = conv("b", "cb", 2, 4, "conv_b")
    nodes = [ca, cb,
             helper.make_node("MaxPool", ["ca"], ["pa"], name="pool_a", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["cb"], ["pb"], name="pool_b", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["pa"], ["ga"], name="gap_a"),
             helper.make_node("GlobalAveragePool", ["pb"], ["gb"], name="gap_b"),
             helper.make_node("Concat", ["ga", "gb"], ["y"], axis=1)]
    inputs = [helper.make_tensor_value_info("a", F, ["N", 3, "H", "W"]), helper.make_tensor_value_info("b", F, ["N", 2, "H", "W"])]
    return make(nodes, inputs, [helper.make_tensor_value_info("y", F, ["N", 8, 1, 1])], [wa, wb])


def stale_shapes() -> onnx.ModelProto:
    """value_info and output dims from a 32x32 trace left in a model with dynamic H, W."""
    c, w = conv("x", "c", 3, 4, "conv")
    nodes = [c, helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["p"], ["y"], name="avg", kernel_shape=[2, 2], strides=[2, 2])]
    stale = [helper.make_tensor_value_info("c", F, [1, 4, 32, 32]), helper.make_tensor_value_info("p", F, [1, 4, 16, 16])]
    return make(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, "H", "W"])], [helper.make_tensor_value_info("y", F, [1, 4, 8, 8])], [w], stale)


def runtime_only_shape() -> onnx.ModelProto:
    """A Reshape whose target goes through Max: inference cannot follow it, the one onnxruntime run can."""
    c, w = conv("r", "c", 3, 4, "conv")
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Max", ["s", "ones"], ["target"]),
             helper.make_node("Reshape", ["x", "target"], ["r"]), c,
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["p"], ["y"], name="gap")]
    return make(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, "H", "W"])], [helper.make_tensor_value_info("y", F, ["N", 4, 1, 1])],
                [("ones", np.ones(4, np.int64)), w])


# name -> (model builder or committed file, --overwrite-input-shape values, the written input dims)
CASES = {
    "paddle_minus_one": (paddle_minus_one, ["x:-1,3,30,22"], {"x": [1, 3, 30, 22]}),
    "shared_question_mark": (shared_question_mark, ["x:1,3,27,14"], {"x": [1, 3, 27, 14]}),
    "nhwc": (nhwc, ["x:2,25,19,-1"], {"x": [2, 25, 19, 3]}),
    "token_ids": (token_ids, ["ids:1,23"], {"ids": [1, 23]}),
    "two_inputs": (two_inputs, ["a:1,3,17,12", "b:1,2,9,21"], {"a": [1, 3, 17, 12], "b": [1, 2, 9, 21]}),
    "stale_shapes": (stale_shapes, ["x:1,3,24,40"], {"x": [1, 3, 24, 40]}),
    "runtime_only_shape": (runtime_only_shape, ["x:1,3,20,18"], {"x": [1, 3, 20, 18]}),
    "resnet18_dynhw": (DATA / "resnet18.ts13_dynhw.onnx", ["x:1,3,64,48"], {"x": [1, 3, 64, 48]}),
}


def load_case(name: str) -> onnx.ModelProto:
    source = CASES[name][0]
    return onnx.load(source) if isinstance(source, Path) else source()


def feeds_for(model: onnx.ModelProto, dims: dict[str, list[int]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {}
    for value in model.graph.input:
        shape = dims[value.name]
        if value.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[value.name] = rng.integers(0, 16, shape).astype(np.int64)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def input_dims(model: onnx.ModelProto) -> dict[str, list]:
    return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim] for v in model.graph.input}


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", sorted(CASES))
def test_overwrite_input_shape_rewrites_every_pool_and_writes_those_dims(name, tmp_path, capsys):
    original = load_case(name)
    _, options, expected = CASES[name]
    onnx.save(original, tmp_path / "in.onnx")
    before = (tmp_path / "in.onnx").read_bytes()
    if name != "stale_shapes":  # its stale value_info looks static: the pass would trust it
        kept_before = rewrite_model(original)[1].kept
        assert kept_before and all("--overwrite-input-shape" in n.reason for n in kept_before)  # dynamic dims keep pools

    shape_args = [a for option in options for a in ("--overwrite-input-shape", option)]
    code, out, err = cli(capsys, tmp_path / "in.onnx", tmp_path / "out.onnx", "--report", tmp_path / "r.json", *shape_args)
    assert code == 0, err
    assert (tmp_path / "in.onnx").read_bytes() == before
    report = json.loads((tmp_path / "r.json").read_text())
    pools = sum(n.op_type in POOL_OPS for n in original.graph.node)
    assert report["totals"]["kept"] == 0 and report["totals"]["rewritten"] == pools
    assert report["validation"]["passed"] is True
    if name == "runtime_only_shape":
        assert any("onnxruntime run" in note for note in report["notes"])

    written = onnx.load(tmp_path / "out.onnx")
    assert input_dims(written) == expected
    assert not any(n.op_type in POOL_OPS for n in written.graph.node)
    onnx.checker.check_model(written, full_check=True)  # strict inference: no stale value_info left
    feeds = feeds_for(original, expected)
    want, got = run(original, feeds), run(written, feeds)
    for output, a, b in zip(written.graph.output, want, got):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(np.abs(a).max()))
        declared = [d.dim_value if d.HasField("dim_value") else None for d in output.type.tensor_type.shape.dim]
        assert len(declared) == a.ndim and all(d is None or d == s for d, s in zip(declared, a.shape)), (declared, a.shape)


def test_stale_shapes_are_refused_by_the_checker_before_the_overwrite():
    """The stale case is stale: full inference refuses it as written (so the test above can fail)."""
    model = overwrite_input_shapes(stale_shapes(), {"x": [1, 3, 24, 40]})
    stale = stale_shapes()
    stale.graph.input[0].CopyFrom(model.graph.input[0])
    with pytest.raises(Exception):
        onnx.checker.check_model(stale, full_check=True)
    assert {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info} == {
        "c": [1, 4, 24, 40], "p": [1, 4, 12, 20]}
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 4, 6, 10]


def test_overwrite_leaves_the_callers_model_alone_unless_in_place():
    model = shared_question_mark()
    before = model.SerializeToString()
    shaped = overwrite_input_shapes(model, {"x": [1, 3, 27, 14]})
    assert model.SerializeToString() == before and shaped is not model
    assert input_dims(shaped) == {"x": [1, 3, 27, 14]}
    assert overwrite_input_shapes(model, {"x": [1, 3, 27, 14]}, in_place=True) is model
    assert input_dims(model) == {"x": [1, 3, 27, 14]}


def test_unresolvable_output_dims_become_dynamic_not_stale():
    """The Reshape-through-Max model: inference cannot resolve y's batch, so the stale 'N' does not become a number."""
    model = runtime_only_shape()
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 7  # stale
    shaped = overwrite_input_shapes(model, {"x": [1, 3, 20, 18]})
    dims = shaped.graph.output[0].type.tensor_type.shape.dim
    assert len(dims) == 4 and all(not d.HasField("dim_value") for d in dims[:1])


ERRORS = {
    "wrong rank": (["x:1,3,32"], "has rank 4"),
    "not an input": (["images:1,3,32,32"], "its inputs are x"),
    "contradicts a static dim": (["x:1,4,32,32"], "dim 1 of 'x' is 3"),
    "not an integer": (["x:1,3,h,32"], "'h' is not an integer"),
    "a placeholder left in": (["x:1,3,<H>,<W>"], "replace the placeholder(s) <H>, <W> with numbers"),
    "-1 on a dynamic dim": (["x:1,3,-1,32"], "so -1 cannot keep it; give its value: x:1,3,<H>,32"),
    "no colon": (["x=1,3,32,32"], "expected NAME:D0,D1"),
    "zero": (["x:1,3,0,32"], "positive integers"),
    "given twice": (["x:1,3,8,8", "x:1,3,9,9"], "given twice"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_shapes_exit_2_with_one_line(case, tmp_path, capsys):
    values, words = ERRORS[case]
    onnx.save(paddle_minus_one(), tmp_path / "in.onnx")
    shape_args = [a for v in values for a in ("--overwrite-input-shape", v)]
    code, _, err = cli(capsys, tmp_path / "in.onnx", tmp_path / "out.onnx", *shape_args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert "Traceback" not in err and not (tmp_path / "out.onnx").exists()


def test_input_shape_placeholder_is_a_clear_error(tmp_path, capsys):
    onnx.save(paddle_minus_one(), tmp_path / "in.onnx")
    code, _, err = cli(capsys, tmp_path / "in.onnx", tmp_path / "out.onnx", "--input-shape", "x:1,3,<H>,24")
    assert code == 2 and "--input-shape" in err and "replace the placeholder(s) <H> with numbers" in err and len(err.strip().splitlines()) == 1


def extent_free_minus_one() -> onnx.ModelProto:
    """-1 dims and a pool the pass rewrites anyway (no padding): validation then needs a shape."""
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    return make(nodes, [helper.make_tensor_value_info("x", F, [-1, 3, -1, -1])], [helper.make_tensor_value_info("y", F, [-1, 3, -1, -1])])


@pytest.mark.parametrize("option", ["--overwrite-input-shape", "--input-shape"])
def test_the_suggested_shape_round_trips(option, tmp_path, capsys):
    onnx.save(extent_free_minus_one(), tmp_path / "in.onnx")
    code, _, err = cli(capsys, tmp_path / "in.onnx", tmp_path / "out.onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1
    suggestion = re.search(rf"{option} (\S+)", err).group(1)  # type: ignore[union-attr]
    assert suggestion == "x:1,3,<H>,<W>", err
    filled = suggestion.replace("<H>", "10").replace("<W>", "14")
    code, _, err = cli(capsys, tmp_path / "in.onnx", tmp_path / "out.onnx", option, filled, "--report", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["validation"]["passed"] is True
    written = input_dims(onnx.load(tmp_path / "out.onnx"))["x"]
    assert written == ([1, 3, 10, 14] if option == "--overwrite-input-shape" else [-1, 3, -1, -1])


def test_input_shape_accepts_minus_one_and_negative_dims_are_dynamic():
    model = extent_free_minus_one()
    assert describe_inputs(model, {"x": [-1, 3, 16, 12]})[0].shape == (1, 3, 16, 12)
    assert describe_inputs(model, {"x": [2, -1, 16, 12]})[0].shape == (2, 3, 16, 12)
    with pytest.raises(ValueError, match="--overwrite-input-shape x:1,3,<H>,<W>"):
        describe_inputs(model)


def test_nothing_to_rewrite_still_writes_the_new_shapes(tmp_path, capsys):
    """A model without pools: OUT is no longer a byte copy, it carries the static dims."""
    model = make([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, ["N", 3, "H", "W"])],
                 [helper.make_tensor_value_info("y", F, ["N", 3, "H", "W"])])
    onnx.save(model, tmp_path / "in.onnx")
    code, _, err = cli(capsys, tmp_path / "in.onnx", tmp_path / "out.onnx", "--overwrite-input-shape", "x:1,3,5,7")
    assert code == 0, err
    written = onnx.load(tmp_path / "out.onnx")
    assert input_dims(written) == {"x": [1, 3, 5, 7]}
    assert [d.dim_value for d in written.graph.output[0].type.tensor_type.shape.dim] == [1, 3, 5, 7]


def test_compare_gives_both_models_the_shapes(tmp_path, capsys):
    """--compare of a dynamic original with a static candidate (here with a renamed input)."""
    original = shared_question_mark()
    onnx.save(original, tmp_path / "a.onnx")
    code, _, err = cli(capsys, tmp_path / "a.onnx", tmp_path / "b.onnx", "--overwrite-input-shape", "x:1,3,27,14")
    assert code == 0, err
    candidate = onnx.load(tmp_path / "b.onnx")
    candidate.graph.input[0].name = "input_renamed"
    for node in candidate.graph.node:
        node.input[:] = ["input_renamed" if i == "x" else i for i in node.input]
    onnx.save(candidate, tmp_path / "c.onnx")
    code, out, err = cli(capsys, "--compare", tmp_path / "a.onnx", tmp_path / "c.onnx", "--overwrite-input-shape", "x:1,3,27,14")
    assert code == 0 and "validation passed" in out, err
    code, _, err = cli(capsys, "--compare", tmp_path / "a.onnx", tmp_path / "c.onnx")
    assert code == 2 and "--overwrite-input-shape x:1,3,<H>,<W>" in err


@pytest.mark.parametrize(
    "text, parsed",
    [("x:1,3,224,224", ("x", [1, 3, 224, 224])), ("input:0:1,-1,8", ("input:0", [1, -1, 8])), ("ids: 1, 23", ("ids", [1, 23]))],
)
def test_parse_shape_option(text, parsed):
    assert parse_shape_option(text) == parsed


def test_parse_errors_are_input_errors():
    from rewriter.model_io import InputError

    with pytest.raises(InputError):
        parse_shape_option("x:1.5,3")
    assert issubclass(ShapeError, InputError)
