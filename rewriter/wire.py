"""Reading a model file without reading its big weights.

A protobuf message is a sequence of fields, each a tag, then a varint, 8 or 4
fixed bytes, or a length and that many bytes. An ONNX file is a ModelProto
whose field 7 is the graph, whose field 5 is an initializer, whose field 9 is
that tensor's ``raw_data``. :func:`parse_leaving_weights` copies every byte of
the file into the buffer it parses, except the big ``raw_data`` payloads of
main-graph initializers (their enclosing lengths re-encoded), and says where in
the file each payload lies. The caller points those tensors at the file as
external data: the model is then whole, with its weights still on disk.

Anything unexpected (a group, a truncated field, a second ``raw_data``) makes
it give up and return None; the caller then parses the file the ordinary way,
which also produces the ordinary error messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import onnx

GRAPH, INITIALIZER, RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
LENGTH_DELIMITED = 2


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
