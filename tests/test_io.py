"""Model files: external data in and out, refused locations, atomic and in-place writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import STRICT_OPS, op_types


def conv_pool_model(pool: bool = True) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32), "w")  # 1152 bytes
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    out = "c"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
        out = "y"
    shape = [1, 8, 5, 5] if pool else [1, 8, 10, 10]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 10, 10])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save_external(model: onnx.ModelProto, path: Path, location: str = "weights.bin") -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewriter", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("pool", [True, False], ids=["rewritten", "nothing-to-rewrite"])
def test_external_data_round_trip(tmp_path, pool):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    save_external(conv_pool_model(pool), src_dir / "model.onnx")
    before = snapshot(src_dir)
    proc = cli(src_dir / "model.onnx", out_dir / "model.conv.onnx")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(src_dir) == before, "input or its external data changed"
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.conv.onnx", "model.conv.onnx.data"]
    out = onnx.load(out_dir / "model.conv.onnx", load_external_data=False)
    locations = {e.value for t in out.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.conv.onnx.data"}, "external data must be beside OUT with a relative location"
    loaded = onnx.load(out_dir / "model.conv.onnx")
    onnx.checker.check_model(loaded)
    if pool:
        assert op_types(loaded) <= STRICT_OPS


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    model = conv_pool_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "1152")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    src = folder / "model.onnx"
    src.write_bytes(model.SerializeToString())
    proc = cli(src, tmp_path / "out.onnx")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("leaves the model's folder" in proc.stderr) or ("resolves outside" in proc.stderr), proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_missing_external_data_file(tmp_path):
    save_external(conv_pool_model(), tmp_path / "model.onnx")
    (tmp_path / "weights.bin").unlink()
    proc = cli(tmp_path / "model.onnx", tmp_path / "out.onnx")
    assert proc.returncode == 2 and "missing" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_in_place(tmp_path):
    src = tmp_path / "model.onnx"
    onnx.save(conv_pool_model(), src)
    assert cli(src, src).returncode == 2
    proc = cli(src, src, "--in-place")
    assert proc.returncode == 0, proc.stderr
    assert op_types(onnx.load(src)) <= STRICT_OPS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize(
    "src,location,dst",
    [("a.onnx", "b.onnx.data", "b.onnx"), ("m.data", "weights.bin", "m")],
    ids=["the input's data", "the input model itself"],  # IN m.data, OUT m: OUT's data file would be IN
)
def test_output_data_file_may_not_clobber_the_input(tmp_path, src, location, dst):
    save_external(conv_pool_model(), tmp_path / src, location=location)
    before = snapshot(tmp_path)
    proc = cli(tmp_path / src, tmp_path / dst)
    assert proc.returncode == 2 and "would overwrite the input" in proc.stderr
    assert snapshot(tmp_path) == before


def test_models_past_the_protobuf_limit_go_through_files(tmp_path, monkeypatch):
    """Models above 2 GiB cannot be one protobuf: saving and validation switch to
    external data. Exercised here by lowering the limit, not with 2 GiB of weights."""
    from rewriter import model_io as rio
    from rewriter import rewrite_model
    from rewriter.validate import validate_models

    from rewriter.validate import runners as validate

    monkeypatch.setattr(rio, "SINGLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(validate, "SESSION_FROM_FILE_MIN_BYTES", 1000)
    model = conv_pool_model()
    before = model.SerializeToString()
    new, _ = rewrite_model(model)
    result = validate_models(model, new)
    assert result.passed and [n.passed for n in result.nodes] == [True]
    assert model.SerializeToString() == before, "validation must leave the model as it was"
    rio.save_model(new, tmp_path / "big.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    onnx.checker.check_model(str(tmp_path / "big.onnx"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_unwritable_output_folder_is_a_clean_error(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(conv_pool_model(), src)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = cli(src, locked / "out.onnx")
    finally:
        locked.chmod(0o700)
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def test_write_failure_leaves_no_partial_file(tmp_path):
    from rewriter.model_io import InputError, write_atomically

    def failing(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    (tmp_path / "out.onnx").write_bytes(b"previous")
    with pytest.raises(InputError, match="No space left on device"):
        write_atomically(tmp_path / "out.onnx", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    assert (tmp_path / "out.onnx").read_bytes() == b"previous"


def rich_model() -> onnx.ModelProto:
    """Every kind of field the streaming writer must reproduce: metadata, doc strings,
    functions, an If subgraph with its own initializer, sparse and string initializers,
    float_data (not raw) tensors, big and small weights."""
    rng = np.random.default_rng(1)
    big = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "big")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [300], rng.standard_normal(300).astype(np.float32).tolist())
    small = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "small")
    words = helper.make_tensor("words", TensorProto.STRING, [400], [b"abc"] * 400)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0], np.float32), "sp"), numpy_helper.from_array(np.array([3], np.int64), "sp_i"), [8]
    )
    branch = helper.make_graph(
        [helper.make_node("Add", ["small", "inner"], ["z"])], "then", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "inner")],
    )
    nodes = [
        helper.make_node("MatMul", ["m", "big"], ["mm"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        helper.make_node("Twice", ["small"], ["t"], domain="local"),
    ]
    twice = helper.make_function("local", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        nodes, "rich", [helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 64]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in (("mm", [2, 64]), ("y", [2]), ("t", [2]))],
        [big, typed, small, words],
        doc_string="graph doc", sparse_initializer=[sparse],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], ir_version=8, functions=[twice],
        doc_string="model doc", producer_name="tests",
    )
    helper.set_model_props(model, {"conv_semantics": "cross-correlation", "k": "v"})
    return model


def test_streamed_serialization_is_byte_identical():
    from rewriter.weights_on_disk import serialized_pieces, serialized_size

    model = rich_model()
    pieces = list(serialized_pieces(model))
    assert b"".join(pieces) == model.SerializeToString()
    assert serialized_size(model) == model.ByteSize()
    assert max(len(p) for p in pieces) < 20_000, "no piece may hold more than one initializer"


def test_external_data_writer_keeps_the_model_and_aligns_weights(tmp_path):
    from rewriter.weights_on_disk import save_with_external_data

    model = rich_model()
    before = model.SerializeToString()
    save_with_external_data(model, tmp_path / "m.onnx", "m.data")
    assert model.SerializeToString() == before, "the in-memory model must not change"
    light = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    placed = {t.name: {e.key: e.value for e in t.external_data} for t in light.graph.initializer if t.external_data}
    assert set(placed) == {"big", "typed"}, "small and string tensors stay inside the model"
    assert all(int(p["offset"]) % 4096 == 0 for p in placed.values())
    back = onnx.load(str(tmp_path / "m.onnx"))
    for a, b in zip(model.graph.initializer, back.graph.initializer):
        assert a.name == b.name
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    assert back.metadata_props == model.metadata_props and back.functions == model.functions
    assert back.graph.sparse_initializer == model.graph.sparse_initializer and back.graph.node == model.graph.node
    onnx.checker.check_model(str(tmp_path / "m.onnx"))


def test_tensor_sizes_come_from_dims_not_from_serializing():
    """upb cannot serialize a tensor past 2 GiB, so sizes are computed from dims and dtype."""
    from rewriter.graphs import tensor_bytes

    for t in rich_model().graph.initializer:
        overhead = t.ByteSize() - tensor_bytes(t)
        assert 0 <= overhead < 64 + 2 * len(t.dims) + len(t.name) + 5 * (t.data_type == TensorProto.STRING) * len(t.string_data), t.name
    external = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 10], data_location=TensorProto.EXTERNAL)
    assert tensor_bytes(external) == 0
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT16, dims=[1 << 20, 1 << 11])
    assert tensor_bytes(huge) == 1 << 32


@pytest.fixture
def small_on_disk_threshold(monkeypatch):
    """Leave every initializer of 1 KiB or more on disk, so that small models exercise it."""
    from rewriter import model_io as rio

    monkeypatch.setattr(rio, "ON_DISK_MIN_BYTES", 1024)


def test_weights_left_in_the_file_make_the_same_model(tmp_path, small_on_disk_threshold):
    """The model read with its weights on disk, written out with them inside, is the
    original file byte for byte; and every on-disk tensor points at its own bytes."""
    from rewriter.model_io import load_model_with_sources
    from rewriter.weights_on_disk import has_weights_on_disk, serialized_pieces

    original = rich_model()
    onnx.save(original, tmp_path / "m.onnx")
    model = load_model_with_sources(tmp_path / "m.onnx", weights_on_disk=True).model
    assert has_weights_on_disk(model)
    on_disk = [t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert on_disk == ["big"], "raw weights of 1 KiB and more stay on disk; float_data and strings cannot"
    assert model.graph.initializer[0].ByteSize() < 200
    from rewriter.weights_on_disk import tensor_value

    np.testing.assert_array_equal(tensor_value(model.graph.initializer[0]), numpy_helper.to_array(original.graph.initializer[0]))
    assert b"".join(serialized_pieces(model)) == (tmp_path / "m.onnx").read_bytes()
    assert model.graph.node == original.graph.node and model.functions == original.functions


def test_truncated_or_odd_files_fall_back_to_the_ordinary_parse(tmp_path, small_on_disk_threshold):
    from rewriter.model_io import InputError, load_model_with_sources
    from rewriter.weights_on_disk import parse_leaving_weights

    data = rich_model().SerializeToString()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    assert parse_leaving_weights(tmp_path / "cut.onnx", 1024) is None
    with pytest.raises(InputError, match="not a valid ONNX model|truncated"):
        load_model_with_sources(tmp_path / "cut.onnx", weights_on_disk=True)
    # Two graph fields: protobuf merges them (initializers append); so must we.
    graph = rich_model().graph
    extra = onnx.GraphProto()
    extra.initializer.add().CopyFrom(graph.initializer[0])
    extra.initializer[0].name = "big2"
    twice = data + b"\x3a" + _varint(extra.ByteSize()) + extra.SerializeToString()
    (tmp_path / "twice.onnx").write_bytes(twice)
    merged = onnx.ModelProto()
    merged.ParseFromString(twice)
    light, left = parse_leaving_weights(tmp_path / "twice.onnx", 1024)
    assert [t.name for t in light.graph.initializer] == [t.name for t in merged.graph.initializer]
    names = {light.graph.initializer[i].name for i, _, _ in left}
    assert names == {"big", "big2"}
    for index, offset, length in left:
        expected = merged.graph.initializer[index].raw_data
        assert twice[offset : offset + length] == expected


def _varint(n: int) -> bytes:
    from rewriter.weights_on_disk import varint

    return varint(n)


def test_cli_output_is_the_same_with_weights_on_disk(tmp_path, small_on_disk_threshold):
    """The CLI leaves big weights in the input file; its output must be exactly what
    rewriting the fully loaded model gives."""
    from rewriter import rewrite_model
    from rewriter import cli as rcli
    from rewriter.model_io import save_model

    model = conv_pool_model()
    onnx.save(model, tmp_path / "in.onnx")
    assert rcli.main([str(tmp_path / "in.onnx"), str(tmp_path / "cli.onnx"), "-q"]) == 0
    rewritten, _ = rewrite_model(onnx.load(tmp_path / "in.onnx"))
    save_model(rewritten, tmp_path / "api.onnx")
    assert (tmp_path / "cli.onnx").read_bytes() == (tmp_path / "api.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.onnx", "cli.onnx", "in.onnx"]


@pytest.mark.parametrize("external", [False, True], ids=["inside", "external-data"])
def test_in_place_with_weights_left_on_disk(tmp_path, small_on_disk_threshold, external):
    """--in-place reads the weights from the very file it replaces: all must be read
    before anything is replaced, and the result must equal a rewrite to a new file."""
    from rewriter import cli as rcli

    src = tmp_path / "m.onnx"
    if external:
        save_external(conv_pool_model(), src, location="m.onnx.data")
    else:
        onnx.save(conv_pool_model(), src)
    reference = tmp_path / "ref"
    reference.mkdir()
    assert rcli.main([str(src), str(reference / "m.onnx"), "-q"]) == 0
    assert rcli.main([str(src), str(src), "--in-place", "-q"]) == 0
    assert snapshot(tmp_path) == snapshot(reference)
    x = np.random.default_rng(0).standard_normal((1, 4, 10, 10)).astype(np.float32)
    import onnxruntime as ort

    out = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = ort.InferenceSession(conv_pool_model().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_compare_with_weights_left_on_disk(tmp_path, small_on_disk_threshold):
    from rewriter import cli as rcli

    onnx.save(conv_pool_model(), tmp_path / "a.onnx")
    assert rcli.main([str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), "-q"]) == 0
    assert rcli.main(["--compare", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), "-q"]) == 0


def test_outputs_without_a_declared_shape_after_big_weights_are_accepted(tmp_path):
    """Shape inference fills the outputs' shapes; the weights (too big to copy for the
    check) must not make the checker refuse the model."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from rewriter.model_io import InputError, load_model_with_sources

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "unshaped.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    assert load_model_with_sources(path).model.graph.output[0].name == "y"
    broken = onnx.load(path)
    broken.graph.node[1].input[0] = "missing"  # a real error behind the missing shape is still refused
    onnx.save(broken, tmp_path / "broken.onnx")
    with pytest.raises(InputError):
        load_model_with_sources(tmp_path / "broken.onnx")
