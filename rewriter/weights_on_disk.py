"""Models whose big weights stay on disk: reading, checking and writing them
without holding the weights in memory (peak memory stays near the graph's size).

Reading. A protobuf message is a sequence of fields, each a tag, then a varint,
8 or 4 fixed bytes, or a length and that many bytes. An ONNX file is a
ModelProto whose field 7 is the graph, whose field 5 is an initializer, whose
field 9 is that tensor's ``raw_data``. :func:`parse_leaving_weights` copies
every byte of the file into the buffer it parses, except the big ``raw_data``
payloads of main-graph initializers (their enclosing lengths re-encoded), and
says where in the file each payload lies. Anything unexpected (a group, a
truncated field, a second ``raw_data``) makes it give up and return None; the
caller then parses the file the ordinary way, with the ordinary error messages.

On disk. Such a tensor becomes external data with an absolute location
(:func:`point_at`, :func:`on_disk`); a model's own external data is always
relative, so the two never mix. :func:`tensor_value` reads one when a constant
is needed, :func:`check_on_disk_model` runs onnx.checker without the data.

Writing. :func:`serialized_pieces` is ``SerializeToString()`` field by field,
on-disk tensors streamed in with their data inside; :func:`save_with_external_data`
writes the weights to one page-aligned file. Neither copies the weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from .graphs import tensor_bytes

GRAPH, INITIALIZER, RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
LENGTH_DELIMITED = 2


# -- reading ------------------------------------------------------------------------------


class _Malformed(Exception):
    pass


def parse_leaving_weights(path: Path, min_bytes: int) -> Optional[tuple[onnx.ModelProto, list[tuple[int, int, int]]]]:
    """The model in ``path`` without the ``raw_data`` of main-graph initializers of at
    least ``min_bytes``, and for each such tensor ``(initializer index, offset, length)``
    of its data in the file. None when the file is not one this reader handles."""
    try:
        with open(path, "rb") as f:
            light, left = _model_without_weights(_FileBytes(f), min_bytes)
    except (OSError, _Malformed):
        return None
    if not left:
        return None  # nothing big inside: the ordinary parse costs no more
    model = onnx.ModelProto()
    try:
        model.ParseFromString(light)
    except Exception:
        return None
    if any(i >= len(model.graph.initializer) for i, _, _ in left):
        return None
    return model, left


class _FileBytes:
    """Indexing and slicing over a file that reads only what is asked for (a memory
    map would count whole cached folios of the weights as resident)."""

    WINDOW = 1 << 16

    def __init__(self, f) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size
        self.start, self.buffer = 0, b""

    def __len__(self) -> int:
        return self.size

    def _read(self, pos: int, count: int) -> bytes:
        self.f.seek(pos)
        data = self.f.read(count)
        if len(data) != count:
            raise _Malformed("file changed or truncated while read")
        return data

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop = key.start, key.stop
            if self.start <= start and stop <= self.start + len(self.buffer):
                return self.buffer[start - self.start : stop - self.start]
            return self._read(start, stop - start)
        if not self.start <= key < self.start + len(self.buffer):
            self.start = key
            self.buffer = self._read(key, min(self.WINDOW, self.size - key))
        return self.buffer[key - self.start]


def _model_without_weights(data, min_bytes: int) -> tuple[bytes, list[tuple[int, int, int]]]:
    out, left = bytearray(), []
    initializers = 0  # repeated graph fields merge: initializers are numbered across them
    for tag, field, start, end in _fields(data, 0, len(data)):
        if field == GRAPH and tag & 7 == LENGTH_DELIMITED:
            graph = bytearray()
            for g_tag, g_field, g_start, g_end in _fields(data, start, end):
                if g_field == INITIALIZER and g_tag & 7 == LENGTH_DELIMITED:
                    tensor, payload = _tensor_without_data(data, g_start, g_end, min_bytes)
                    if payload is not None:
                        left.append((initializers, *payload))
                    graph += varint(g_tag) + varint(len(tensor)) + tensor
                    initializers += 1
                else:
                    graph += _field_bytes(data, g_tag, g_start, g_end)
            out += varint(tag) + varint(len(graph)) + graph
        else:
            out += _field_bytes(data, tag, start, end)
    return bytes(out), left


def _tensor_without_data(data, start: int, end: int, min_bytes: int) -> tuple[bytes, Optional[tuple[int, int]]]:
    fields = list(_fields(data, start, end))
    raw = [f for f in fields if f[1] == RAW_DATA]
    if len(raw) != 1 or raw[0][0] & 7 != LENGTH_DELIMITED or raw[0][3] - raw[0][2] < min_bytes:
        return bytes(data[start:end]), None
    kept = b"".join(_field_bytes(data, tag, s, e) for tag, field, s, e in fields if field != RAW_DATA)
    return kept, (raw[0][2], raw[0][3] - raw[0][2])


def _fields(data, pos: int, end: int):
    """(tag, field number, payload start, payload end) of each field in ``data[pos:end]``;
    for a length-delimited field the payload excludes its length."""
    while pos < end:
        tag, pos = _read_varint(data, pos, end)
        wire_type = tag & 7
        if wire_type == 0:
            _, after = _read_varint(data, pos, end)
        elif wire_type == 1 or wire_type == 5:
            after = pos + (8 if wire_type == 1 else 4)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = _read_varint(data, pos, end)
            after = pos + length
        else:  # groups: not used by ONNX
            raise _Malformed(f"wire type {wire_type}")
        if after > end:
            raise _Malformed("field runs past its message")
        yield tag, tag >> 3, pos, after
        pos = after


def _field_bytes(data, tag: int, start: int, end: int) -> bytes:
    if tag & 7 == LENGTH_DELIMITED:
        return varint(tag) + varint(end - start) + bytes(data[start:end])
    return varint(tag) + bytes(data[start:end])


def _read_varint(data, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def varint(n: int) -> bytes:
    """Protobuf's encoding of a non-negative integer."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- on disk ----------------------------------------------------------------------------

PROTOBUF_LIMIT = 1 << 31  # upb cannot serialize a message of this size


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    """A tensor's external-data entries as a dict (location, offset, length, ...)."""
    return {e.key: e.value for e in tensor.external_data}


def point_at(tensor: onnx.TensorProto, file: Path, offset: int, length: int) -> None:
    """Make ``tensor`` external data at ``file`` (absolute), ``offset``, ``length``."""
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", str(file)), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def on_disk(tensor: onnx.TensorProto) -> bool:
    """A tensor whose data was left in a file: external data with an absolute
    location (a model's own external data is always relative)."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and os.path.isabs(external_info(tensor).get("location", ""))


def has_weights_on_disk(model: onnx.ModelProto) -> bool:
    return any(on_disk(t) for t in model.graph.initializer)


def tensor_value(t: onnx.TensorProto) -> np.ndarray:
    """The value of an initializer, also when its data was left on disk."""
    if not on_disk(t):
        return numpy_helper.to_array(t)
    data = b"".join(_on_disk_chunks(t))
    return np.frombuffer(data, dtype=onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).reshape(tuple(t.dims)).copy()


def check_on_disk_model(model: onnx.ModelProto) -> Optional[Exception]:
    """onnx.checker's verdict on a model whose weights are on disk, without reading them.

    The checker wants external data relative to the model file; it gets a copy of
    the model beside a sparse stand-in file as long as the data (it checks sizes,
    never contents). Returns the checker's exception, or None."""
    with tempfile.TemporaryDirectory(prefix="onnx-poolrewrite-check-") as folder:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # light: the weights are on disk
        size = 0
        for tensor in copy.graph.initializer:
            if on_disk(tensor):
                info = external_info(tensor)
                required = tensor_bytes(tensor, in_memory=False)
                if int(info["length"]) < required:  # the checker's own test for data inside the model
                    return ValueError(
                        f"TensorProto (tensor name: {tensor.name}) raw_data size ({info['length']} bytes) is too small "
                        f"for the declared shape and type ({required} bytes required)"
                    )
                size = max(size, int(info.get("offset", 0)) + int(info["length"]))
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = "standin.bin"
        with open(Path(folder) / "standin.bin", "wb") as f:
            f.truncate(size)
        (Path(folder) / "model.onnx").write_bytes(copy.SerializeToString())
        try:
            onnx.checker.check_model(str(Path(folder) / "model.onnx"))
        except Exception as err:
            return err
    return None


# -- writing ------------------------------------------------------------------------------


def serialized_pieces(model: onnx.ModelProto) -> Iterator[bytes]:
    """``model.SerializeToString()`` in pieces, none bigger than one initializer.

    A protobuf message is the concatenation of its fields, and a message field is
    its header and its own serialization; the graph is written that way field by
    field, in field-number order as protobuf writes them. Serializing in one go
    would hold two more copies of the weights at once (peak memory).
    """
    return _fields_in_pieces(model, split={"graph"})


def _fields_in_pieces(message, split: frozenset[str] | set[str] = frozenset()) -> Iterator[bytes]:
    for fd, value in message.ListFields():
        if fd.message_type is None:  # scalars and strings: small
            yield _scalar_field(message, fd, value)
            continue
        repeated = _is_repeated(fd)
        header = varint((fd.number << 3) | 2)  # wire type 2: length-delimited
        for item in value if repeated else [value]:
            if fd.name in split:
                yield header + varint(serialized_size(item))
                yield from _fields_in_pieces(item)
            elif fd.name == "initializer" and on_disk(item):
                yield header + varint(_embedded_size(item))
                yield from _with_data_inside(item)
            else:
                data = item.SerializeToString()
                yield header + varint(len(data))
                yield data


def serialized_size(message) -> int:
    """``message.ByteSize()`` computed field by field: protobuf's upb computes it by
    serializing the whole message, which costs two copies of the weights."""
    total = 0
    for fd, value in message.ListFields():
        if fd.message_type is None:
            total += len(_scalar_field(message, fd, value))
            continue
        repeated = _is_repeated(fd)
        header = len(varint((fd.number << 3) | 2))
        for item in value if repeated else [value]:
            if item.DESCRIPTOR.name == "GraphProto":
                size = serialized_size(item)
            elif fd.name == "initializer" and on_disk(item):
                size = _embedded_size(item)
            elif item.DESCRIPTOR.name == "TensorProto" and tensor_bytes(item) >= PROTOBUF_LIMIT:
                size = tensor_bytes(item)  # too big for protobuf to measure; no single file can hold it anyway
            else:
                size = item.ByteSize()
            total += header + len(varint(size)) + size
    return total


def _scalar_field(message, fd, value) -> bytes:
    part = type(message)()
    _copy_field(part, fd, value)
    return part.SerializeToString()


def _is_repeated(fd) -> bool:
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED  # protobuf < 5.29


def save_with_external_data(model: onnx.ModelProto, path: Path, data_name: str, *, min_bytes: int = 1024) -> None:
    """Write ``model`` to ``path`` with every main-graph initializer of at least
    ``min_bytes`` in the file ``data_name`` beside it, at page-aligned offsets (so
    onnxruntime can map them). ``model`` is not modified and its weights are
    written one tensor at a time: no copy of them is made (peak memory)."""
    light = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(light, fd, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(light.graph, fd, value)
    offset = 0
    with open(path.parent / data_name, "wb") as f:
        for original in model.graph.initializer:
            tensor = light.graph.initializer.add()
            if not on_disk(original) and (original.data_type == onnx.TensorProto.STRING or tensor_bytes(original) < min_bytes):
                tensor.CopyFrom(original)  # small, or no raw form
                continue
            for fd, value in original.ListFields():
                if fd.name not in _TENSOR_DATA_FIELDS:
                    _copy_field(tensor, fd, value)
            padding = -offset % 4096
            f.write(b"\0" * padding)
            offset += padding
            if on_disk(original):
                length = _copy_file_range(original, f)
            else:
                data = original.raw_data if original.HasField("raw_data") else numpy_helper.to_array(original).tobytes()
                f.write(data)
                length = len(data)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)
            offset += length
    path.write_bytes(light.SerializeToString())


def _copy_file_range(tensor: onnx.TensorProto, out) -> int:
    """Append the data of an on-disk tensor to ``out``; returns its length."""
    length = 0
    for chunk in _on_disk_chunks(tensor):
        out.write(chunk)
        length += len(chunk)
    return length


def _on_disk_chunks(tensor: onnx.TensorProto) -> Iterator[bytes]:
    """The data of an on-disk tensor, read in chunks (never all of it at once)."""
    info = external_info(tensor)
    with open(info["location"], "rb") as src:
        src.seek(int(info.get("offset", 0)))
        remaining = int(info["length"])
        while remaining:
            chunk = src.read(min(remaining, 64 << 20))
            if not chunk:
                raise OSError(f"the data of '{tensor.name}' ends early in {info['location']}")
            yield chunk
            remaining -= len(chunk)


def _metadata_only(tensor: onnx.TensorProto) -> onnx.TensorProto:
    meta = onnx.TensorProto()
    for fd, value in tensor.ListFields():
        if fd.name not in _TENSOR_DATA_FIELDS:
            _copy_field(meta, fd, value)
    return meta


def _with_data_inside(tensor: onnx.TensorProto) -> Iterator[bytes]:
    """An on-disk tensor serialized as if its data were in ``raw_data`` (field 9, so
    between the fields numbered below and above it), the data read in chunks."""
    info = external_info(tensor)
    before, after = onnx.TensorProto(), onnx.TensorProto()
    for fd, value in _metadata_only(tensor).ListFields():
        _copy_field(before if fd.number < RAW_DATA else after, fd, value)
    yield before.SerializeToString() + varint((RAW_DATA << 3) | 2) + varint(int(info["length"]))
    yield from _on_disk_chunks(tensor)
    yield after.SerializeToString()


def _embedded_size(tensor: onnx.TensorProto) -> int:
    length = int(external_info(tensor)["length"])
    return _metadata_only(tensor).ByteSize() + len(varint((RAW_DATA << 3) | 2)) + len(varint(length)) + length


_TENSOR_DATA_FIELDS = frozenset(
    ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data", "data_location", "external_data")
)


def _copy_field(dst, fd, value) -> None:
    if _is_repeated(fd):
        getattr(dst, fd.name).extend(value)
    elif fd.message_type is not None:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)
