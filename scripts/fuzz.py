#!/usr/bin/env python3
"""Seeded robustness fuzzer for the ``onnx-poolrewrite`` command line.

Every case is reproducible from ``(--seed, index)``: the case's random stream
is ``random.Random(f"{seed}:{index}")``, the mutation kind is chosen round
robin (``KINDS[index % len(KINDS)]``) so every kind gets equal coverage, and
the seed model, the mutation's variant and parameters, the CLI flags and
whether ``OUT`` is pre-created all come from that stream.

A case lives in its own folder::

    case-00042/
      in/d/mutant.onnx     the input (two levels down, so "../../etc/passwd" lands in case-00042/etc/passwd)
      in/d/...             auxiliary files of external-data mutants (data files, symlinks)
      etc/passwd           a FIFO canary: opening it for reading is detected (see run_case)
      cwd_secret.bin       a regular-file canary in the CLI's working directory, watched with inotify
      out/out.onnx         OUT (sometimes pre-created with known bytes)
      out/r.json           --report
      stdout.txt, stderr.txt

and is run from the case folder (so relative paths that some loaders resolve
against the working directory land on the ``cwd_secret.bin`` canary) as
``python -m rewriter .../in/d/mutant.onnx .../out/out.onnx --report
.../out/r.json -q [--no-validate] [--dry-run]`` with absolute paths and
``PYTHONPATH`` set to this checkout. The invariants checked are listed in
:func:`check_case`.

Usage::

    python scripts/fuzz.py --seed 1 --count 400 --jobs 2
    python scripts/fuzz.py --seed 1 --index 17 --index 230     # replay cases
    python scripts/fuzz.py --list-kinds

Exit status: 0 when no invariant was violated, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import errno
import glob
import json
import os
import random
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_S = 90.0
DEFAULT_MEM_LIMIT_MB = 4096
POOL_OPS = ("MaxPool", "AveragePool", "LpPool", "GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool")
WINDOW_POOL_OPS = ("MaxPool", "AveragePool", "LpPool")


# --------------------------------------------------------------------------------------------
# seed models


def _tiny(name: str, nodes, inputs, outputs, initializers=(), opset: int = 17) -> bytes:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fuzz-seed")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def builtin_seeds() -> dict[str, bytes]:
    """A few tiny single-pool models (one with an initializer, one with a Constant node)."""
    f = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    seeds = {
        "tiny_maxpool2d": _tiny(
            "tiny_maxpool2d",
            [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
            [vi("x", f, [1, 2, 7, 7])], [vi("y", f, [1, 2, 4, 4])],
        ),
        "tiny_avgpool2d_cip": _tiny(
            "tiny_avgpool2d_cip",
            [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)],
            [vi("x", f, [1, 1, 5, 5])], [vi("y", f, [1, 1, 6, 6])],
        ),
        "tiny_gap": _tiny(
            "tiny_gap",
            [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")],
            [vi("x", f, ["N", 3, 4, 4])], [vi("y", f, ["N", 3, 1, 1])],
        ),
        "tiny_maxpool1d_ceil": _tiny(
            "tiny_maxpool1d_ceil",
            [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3], strides=[2], ceil_mode=1)],
            [vi("x", f, [1, 2, 10])], [vi("y", f, [1, 2, 5])],
        ),
        "tiny_conv_maxpool": _tiny(
            "tiny_conv_maxpool",
            [
                helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[1, 1]),
                helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            ],
            [vi("x", f, [1, 2, 6, 6])], [vi("y", f, [1, 3, 3, 3])],
            initializers=[
                numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2, 1, 1), "w"),
                numpy_helper.from_array(np.array([0.5, -0.25, 0.0], dtype=np.float32), "b"),
            ],
        ),
        "tiny_const_avgpool": _tiny(
            "tiny_const_avgpool",
            [
                helper.make_node("Constant", [], ["k"], name="const",
                                 value=numpy_helper.from_array(np.full((1, 2, 1, 1), -0.5, dtype=np.float32), "kv")),
                helper.make_node("Add", ["x", "k"], ["a"], name="add"),
                helper.make_node("AveragePool", ["a"], ["y"], name="pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
            ],
            [vi("x", f, [1, 2, 5, 5])], [vi("y", f, [1, 2, 5, 5])],
        ),
    }
    return seeds


def load_seeds(paths: Optional[list[str]] = None, builtin: bool = True) -> dict[str, bytes]:
    """``paths`` (files or globs; default ``models/*.onnx``) plus, unless ``builtin`` is false, the tiny models."""
    seeds: dict[str, bytes] = {}
    patterns = paths if paths is not None else [str(REPO / "models" / "*.onnx")]
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).is_file() else [])
        if not matches:
            raise SystemExit(f"fuzz.py: error: no seed model matches {pattern!r}")
        for path in matches:
            seeds[Path(path).stem] = Path(path).read_bytes()
    if builtin:
        seeds.update(builtin_seeds())
    return seeds


# --------------------------------------------------------------------------------------------
# mutations


@dataclass
class Aux:
    """A file the mutant needs beside it (relative to the model's folder)."""

    path: str
    kind: str  # "file" or "symlink"
    payload: bytes | str  # file bytes, or the symlink's target


@dataclass
class Mutant:
    kind: str
    variant: str
    detail: str
    data: bytes
    aux: list[Aux] = field(default_factory=list)
    expect: Optional[frozenset[int]] = None  # exit codes the CLI must give (None: any of 0/1/2)
    expect_why: str = ""


@dataclass
class Ctx:
    """Where the case lives, for mutations that need real paths (absolute canary location)."""

    model_dir: Path
    canary: Path
    cwd_canary: Path


def _parse(data: bytes) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.ParseFromString(data)
    return m


def _pick_variant(rng: random.Random, variants, variant: Optional[str]) -> str:
    names = list(variants)
    if variant is None:
        return rng.choice(names)
    if variant not in names:
        raise ValueError(f"unknown variant {variant!r}; one of {names}")
    return variant


# byte level ---------------------------------------------------------------------------------


def mut_byte_flip(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("xor_bit", "random_byte"), variant)
    buf = bytearray(data)
    n = rng.randint(1, min(16, len(buf)))
    offsets = sorted(rng.randrange(len(buf)) for _ in range(n))
    for off in offsets:
        if variant == "xor_bit":
            buf[off] ^= 1 << rng.randrange(8)
        else:
            buf[off] = rng.randrange(256)
    return Mutant("byte_flip", variant, f"{n} byte(s) at {offsets}", bytes(buf))


def mut_truncate(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("random", "empty", "one_short"), variant)
    cut = {"random": rng.randrange(len(data)), "empty": 0, "one_short": len(data) - 1}[variant]
    return Mutant("truncate", variant, f"keep {cut} of {len(data)} bytes", data[:cut])


def mut_append_garbage(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("random", "zeros", "text", "ff"), variant)
    n = rng.randint(1, 512)
    tail = {
        "random": bytes(rng.randrange(256) for _ in range(n)),
        "zeros": bytes(n),
        "text": (b"garbage after the model\n" * (n // 24 + 1))[:n],
        "ff": b"\xff" * n,
    }[variant]
    return Mutant("append_garbage", variant, f"{n} byte(s) appended", data + tail)


def mut_zero_range(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("zero", "ff"), variant)
    start = rng.randrange(len(data))
    length = rng.randint(1, min(256, len(data) - start))
    fill = b"\x00" if variant == "zero" else b"\xff"
    return Mutant("zero_range", variant, f"bytes {start}..{start + length} set to {fill!r}",
                  data[:start] + fill * length + data[start + length:])


def mut_dup_chunk(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("insert_after", "insert_random", "overwrite"), variant)
    start = rng.randrange(len(data))
    length = rng.randint(1, min(512, len(data) - start))
    chunk = data[start:start + length]
    if variant == "insert_after":
        at = start + length
        out = data[:at] + chunk + data[at:]
    elif variant == "insert_random":
        at = rng.randrange(len(data) + 1)
        out = data[:at] + chunk + data[at:]
    else:
        at = rng.randrange(len(data))
        out = (data[:at] + chunk + data[at + len(chunk):])[: max(len(data), at + len(chunk))]
    return Mutant("dup_chunk", variant, f"bytes {start}..{start + length} copied to {at}", out)


# protobuf level -----------------------------------------------------------------------------


def _pool_nodes(model: onnx.ModelProto, window_only: bool = True) -> list[onnx.NodeProto]:
    ops = WINDOW_POOL_OPS if window_only else POOL_OPS
    return [n for n in model.graph.node if n.op_type in ops]


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    node.attribute.append(helper.make_attribute(name, value))


def _get_ints(node: onnx.NodeProto, name: str) -> Optional[list[int]]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return None


POOL_ATTR_VARIANTS = (
    "kernel_zero", "kernel_negative", "kernel_huge", "kernel_wrong_len", "kernel_empty", "strides_zero",
    "strides_negative", "pads_gt_kernel", "pads_negative", "pads_wrong_len", "auto_pad_garbage",
    "auto_pad_non_utf8", "ceil_mode_7", "dilations_zero", "count_include_pad_3", "kernel_as_float",
)


def mut_pool_attr(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, POOL_ATTR_VARIANTS, variant)
    model = _parse(data)
    nodes = _pool_nodes(model) or _pool_nodes(model, window_only=False) or list(model.graph.node)
    node = rng.choice(nodes)
    kernel = _get_ints(node, "kernel_shape") or [2, 2]
    rank = len(kernel)
    axis = rng.randrange(rank) if rank else 0

    def with_axis(value: int) -> list[int]:
        k = list(kernel) or [2]
        k[min(axis, len(k) - 1)] = value
        return k

    if variant == "kernel_zero":
        value = with_axis(0) if rng.random() < 0.5 else [0] * max(rank, 1)
        _set_attr(node, "kernel_shape", value)
    elif variant == "kernel_negative":
        value = with_axis(rng.choice([-1, -3, -(2 ** 31), -(2 ** 63)]))
        _set_attr(node, "kernel_shape", value)
    elif variant == "kernel_huge":
        value = with_axis(rng.choice([2 ** 31 - 1, 2 ** 31, 2 ** 40, 2 ** 63 - 1, 10 ** 6, 4097]))
        _set_attr(node, "kernel_shape", value)
    elif variant == "kernel_wrong_len":
        value = (kernel + [2]) if rng.random() < 0.5 or rank <= 1 else kernel[:-1]
        _set_attr(node, "kernel_shape", value)
    elif variant == "kernel_empty":
        keep = [a for a in node.attribute if a.name != "kernel_shape"]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.append(onnx.AttributeProto(name="kernel_shape", type=onnx.AttributeProto.INTS))
        value = []
    elif variant == "strides_zero":
        value = [0] * max(rank, 1) if rng.random() < 0.5 else [1] * max(rank - 1, 0) + [0]
        _set_attr(node, "strides", value)
    elif variant == "strides_negative":
        value = [-1] * max(rank, 1)
        _set_attr(node, "strides", value)
    elif variant == "pads_gt_kernel":
        value = [k + rng.randint(0, 3) for k in kernel] * 2
        _set_attr(node, "pads", value)
    elif variant == "pads_negative":
        value = [-1] * (2 * max(rank, 1))
        _set_attr(node, "pads", value)
    elif variant == "pads_wrong_len":
        value = [1] * rng.choice([1, 2 * max(rank, 1) + 1, 3 * max(rank, 1)])
        _set_attr(node, "pads", value)
    elif variant == "auto_pad_garbage":
        value = rng.choice(["SAME_SIDEWAYS", "same_upper", "", "VALID ", "NOTSET\x00", "SAME_LOWER" * 50])
        _set_attr(node, "auto_pad", value)
    elif variant == "auto_pad_non_utf8":
        value = b"\xff\xfeSAME\x80"
        _set_attr(node, "auto_pad", value)
    elif variant == "ceil_mode_7":
        value = 7
        _set_attr(node, "ceil_mode", value)
    elif variant == "dilations_zero":
        value = [0] * max(rank, 1) if rng.random() < 0.5 else [1] * max(rank - 1, 0) + [0]
        _set_attr(node, "dilations", value)
    elif variant == "count_include_pad_3":
        value = 3
        _set_attr(node, "count_include_pad", value)
    elif variant == "kernel_as_float":
        value = [float(k) + 0.5 for k in kernel]
        _set_attr(node, "kernel_shape", value)
    else:  # pragma: no cover
        raise AssertionError(variant)
    return Mutant("pool_attr", variant, f"node {node.name!r} ({node.op_type}): {value!r}", model.SerializeToString())


def mut_unknown_op(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("unknown_name", "empty_name", "lowercase", "foreign_domain", "pool_domain_typo"), variant)
    model = _parse(data)
    pools = _pool_nodes(model, window_only=False)
    node = rng.choice(pools) if pools and rng.random() < 0.7 else rng.choice(list(model.graph.node))
    old = f"{node.domain}:{node.op_type}" if node.domain else node.op_type
    if variant == "unknown_name":
        node.op_type = rng.choice(["FuzzPool", "MaxPoo1", "MaxPool2d", "Pool", "\u00c9Pool"])
    elif variant == "empty_name":
        node.op_type = ""
    elif variant == "lowercase":
        node.op_type = node.op_type.lower()
    elif variant == "foreign_domain":
        node.domain = "com.fuzz"
    else:
        node.domain = "ai.onnx "
    new = f"{node.domain}:{node.op_type}" if node.domain else node.op_type
    return Mutant("unknown_op", variant, f"node {node.name!r}: {old!r} -> {new!r}", model.SerializeToString())


def mut_drop_input(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("delete_last", "delete_all", "empty_name", "graph_input"), variant)
    model = _parse(data)
    pools = _pool_nodes(model, window_only=False)
    nodes = [n for n in model.graph.node if n.input]
    node = rng.choice(pools) if pools and rng.random() < 0.6 else rng.choice(nodes)
    if variant == "delete_last":
        detail = f"node {node.name!r} ({node.op_type}): dropped input {node.input[-1]!r}"
        del node.input[-1]
    elif variant == "delete_all":
        detail = f"node {node.name!r} ({node.op_type}): dropped all inputs {list(node.input)}"
        del node.input[:]
    elif variant == "empty_name":
        detail = f"node {node.name!r} ({node.op_type}): input 0 {node.input[0]!r} -> ''"
        node.input[0] = ""
    else:  # the graph input declaration goes, its consumers dangle
        gi = model.graph.input[0]
        detail = f"graph input {gi.name!r} removed"
        del model.graph.input[0]
    return Mutant("drop_input", variant, detail, model.SerializeToString())


def mut_dangling_output(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("node_output", "graph_output", "duplicate_output", "empty_output"), variant)
    model = _parse(data)
    pools = _pool_nodes(model, window_only=False)
    node = rng.choice(pools) if pools and rng.random() < 0.6 else rng.choice(list(model.graph.node))
    if variant == "node_output":
        detail = f"node {node.name!r} output {node.output[0]!r} -> 'dangling_out'"
        node.output[0] = "dangling_out"
    elif variant == "graph_output":
        go = model.graph.output[rng.randrange(len(model.graph.output))]
        detail = f"graph output {go.name!r} -> 'nobody_makes_this'"
        go.name = "nobody_makes_this"
    elif variant == "duplicate_output":  # two nodes write the same tensor
        other = rng.choice(list(model.graph.node))
        detail = f"node {node.name!r} output {node.output[0]!r} -> {other.output[0]!r} (already written by {other.name!r})"
        node.output[0] = other.output[0]
    else:
        detail = f"node {node.name!r} output {node.output[0]!r} -> ''"
        node.output[0] = ""
    return Mutant("dangling_output", variant, detail, model.SerializeToString())


ODD_TYPES = {
    "INT8": TensorProto.INT8, "UINT8": TensorProto.UINT8, "DOUBLE": TensorProto.DOUBLE, "STRING": TensorProto.STRING,
    "BFLOAT16": TensorProto.BFLOAT16, "FLOAT16": TensorProto.FLOAT16, "BOOL": TensorProto.BOOL,
    "COMPLEX64": TensorProto.COMPLEX64, "INT64": TensorProto.INT64, "UNDEFINED": TensorProto.UNDEFINED,
    "FLOAT8E4M3FN": TensorProto.FLOAT8E4M3FN, "INVALID_9999": 9999,
}


def mut_elem_type(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ODD_TYPES, variant)
    model = _parse(data)
    g = model.graph
    targets = [("input", v) for v in g.input] + [("output", v) for v in g.output] + [("value_info", v) for v in g.value_info]
    targets += [("initializer", t) for t in g.initializer]
    where, target = rng.choice(targets)
    if where == "initializer":
        old, target.data_type = target.data_type, ODD_TYPES[variant]
    else:
        old, target.type.tensor_type.elem_type = target.type.tensor_type.elem_type, ODD_TYPES[variant]
    return Mutant("elem_type", variant, f"{where} {target.name!r}: elem_type {old} -> {ODD_TYPES[variant]}", model.SerializeToString())


def mut_input_dim(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("minus_one", "zero", "dim_param", "empty_dim_param", "unset_dim", "no_shape", "extra_dim", "negative_big"), variant)
    model = _parse(data)
    gi = rng.choice(list(model.graph.input))
    shape = gi.type.tensor_type.shape
    if variant == "no_shape":
        gi.type.tensor_type.ClearField("shape")
        return Mutant("input_dim", variant, f"input {gi.name!r}: shape removed", model.SerializeToString())
    if variant == "extra_dim":
        shape.dim.add().dim_value = 2
        return Mutant("input_dim", variant, f"input {gi.name!r}: extra dim 2 appended", model.SerializeToString())
    if not shape.dim:
        shape.dim.add().dim_value = 1
    i = rng.randrange(len(shape.dim))
    d = shape.dim[i]
    if variant == "minus_one":
        d.dim_value = -1
    elif variant == "zero":
        d.dim_value = 0
    elif variant == "dim_param":
        d.dim_param = rng.choice(["H", "batch", "N", "w?"])
    elif variant == "empty_dim_param":
        d.dim_param = ""
    elif variant == "unset_dim":
        d.ClearField("dim_value")
        d.ClearField("dim_param")
    else:
        d.dim_value = -(2 ** 62)
    return Mutant("input_dim", variant, f"input {gi.name!r}: dim {i} -> {d}".replace("\n", " ").strip(), model.SerializeToString())


def mut_opset_version(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    variant = _pick_variant(rng, ("opset_1", "opset_99", "opset_0", "opset_negative", "opset_7", "opset_10", "no_default_domain", "ir_version_1", "ir_version_99"), variant)
    model = _parse(data)
    if variant.startswith("ir_version"):
        model.ir_version = int(variant.rsplit("_", 1)[1])
        return Mutant("opset_version", variant, f"ir_version -> {model.ir_version}", model.SerializeToString())
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if variant == "no_default_domain":
        for o in default:
            o.domain = "com.fuzz"
        return Mutant("opset_version", variant, "default-domain opset import renamed to com.fuzz", model.SerializeToString())
    version = {"opset_1": 1, "opset_99": 99, "opset_0": 0, "opset_negative": -3, "opset_7": 7, "opset_10": 10}[variant]
    for o in default:
        o.version = version
    return Mutant("opset_version", variant, f"default opset -> {version}", model.SerializeToString())


# external data ------------------------------------------------------------------------------

#: escaping locations (refused with exit 2, before anything is read), unreadable ones (exit 2), and one valid
EXTERNAL_VARIANTS = (
    "abs_etc_passwd", "dotdot_etc_passwd", "nested_dotdot", "abs_canary", "symlink_file_escape",
    "symlink_dir_escape", "symlink_dev_zero", "backslash_dotdot", "file_url", "missing_inside",
    "offset_past_end", "negative_offset", "no_location", "valid_inside",
    # carriers other than an initializer / a top-level Constant
    "sparse_dotdot", "sparse_abs_canary", "sparse_symlink_escape", "sparse_cwd_relative",
    "sparse_constant_cwd_relative", "if_branch_dotdot", "if_branch_abs_canary",
)


def _tensor_targets(model: onnx.ModelProto) -> list[tuple[str, TensorProto]]:
    out = [("initializer", t) for t in model.graph.initializer]
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out.append((f"node {n.name!r} attribute {a.name!r}", a.t))
    return out


def _make_external(tensor: TensorProto, entries: list[tuple[str, str]]) -> None:
    for name in ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(name)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in entries:
        e = tensor.external_data.add()
        e.key, e.value = key, value


def mut_external_data(data: bytes, rng: random.Random, ctx: Ctx, variant: Optional[str] = None) -> Mutant:
    """Point a tensor (initializer or Constant value) at external data.

    Escaping locations must be refused with exit 2 before anything is read;
    the case's FIFO canary (``case/etc/passwd``) detects an open.
    """
    variant = _pick_variant(rng, EXTERNAL_VARIANTS, variant)
    model = _parse(data)
    if variant.startswith(("sparse_", "if_branch_")):
        return _external_elsewhere(model, variant, ctx)
    targets = _tensor_targets(model)
    if not targets:  # give the model an (unused) initializer to point elsewhere
        t = numpy_helper.from_array(np.arange(8, dtype=np.float32), "fuzz_extra_weight")
        model.graph.initializer.append(t)
        targets = [("initializer (added, unused)", model.graph.initializer[-1])]
    where, tensor = rng.choice(targets)
    payload = numpy_helper.to_array(tensor).tobytes()
    n = len(payload)
    aux: list[Aux] = []
    escape = True
    if variant == "abs_etc_passwd":
        location = "/etc/passwd"
    elif variant == "dotdot_etc_passwd":
        location = "../../etc/passwd"
    elif variant == "nested_dotdot":
        location = "sub/../../../etc/passwd"
        aux.append(Aux("sub/placeholder", "file", b"x"))
    elif variant == "abs_canary":
        location = str(ctx.canary)
    elif variant == "symlink_file_escape":
        location = "weights.bin"
        aux.append(Aux("weights.bin", "symlink", "../../etc/passwd"))
    elif variant == "symlink_dir_escape":
        location = "data/passwd"
        aux.append(Aux("data", "symlink", "../../etc"))
    elif variant == "symlink_dev_zero":
        location = "zeros.bin"
        aux.append(Aux("zeros.bin", "symlink", "/dev/zero"))
        n = 1 << 40  # must never be attempted
    elif variant == "backslash_dotdot":
        location = "..\\..\\etc\\passwd"
    elif variant == "file_url":
        location = "file:///etc/passwd"
    else:
        escape = False
        if variant == "missing_inside":
            location = "nope.bin"
        elif variant == "offset_past_end":
            location = "weights.bin"
            aux.append(Aux("weights.bin", "file", payload))
        elif variant == "negative_offset":
            location = "weights.bin"
            aux.append(Aux("weights.bin", "file", payload))
        elif variant == "no_location":
            location = ""
        else:  # valid_inside
            location = "weights.bin"
            aux.append(Aux("weights.bin", "file", b"\x00" * 16 + payload))
    entries = [("location", location)] if location else []
    if variant == "offset_past_end":
        entries += [("offset", str(len(payload) + 4096)), ("length", str(n))]
    elif variant == "negative_offset":
        entries += [("offset", "-8"), ("length", str(n))]
    elif variant == "valid_inside":
        entries += [("offset", "16"), ("length", str(n))]
    else:
        entries += [("offset", "0"), ("length", str(n))]
    _make_external(tensor, entries)
    if escape:
        expect, why = frozenset({2}), "an external-data location that leaves the model's folder must be refused with exit 2"
    elif variant == "valid_inside":
        expect, why = None, ""
    else:
        expect, why = frozenset({2}), "external data that cannot be read (missing file, bad bounds, no location) must be exit 2"
    detail = f"{where} {tensor.name!r} -> external {dict(entries)!r}" + (f"; aux {[(a.path, a.kind, a.payload if a.kind == 'symlink' else len(a.payload)) for a in aux]}" if aux else "")
    return Mutant("external_data", variant, detail, model.SerializeToString(), aux, expect, why)


def _external_elsewhere(model: onnx.ModelProto, variant: str, ctx: Ctx) -> Mutant:
    """An escaping external-data tensor in a sparse initializer, a Constant's sparse_value, or a Constant in an If branch.

    ``*_cwd_relative`` names ``cwd_secret.bin``, which exists in the CLI's
    working directory (the case folder) but not in the model's folder.
    """
    aux: list[Aux] = []
    if variant.endswith("dotdot"):
        location = "../../etc/passwd"
    elif variant.endswith("abs_canary"):
        location = str(ctx.canary)
    elif variant.endswith("cwd_relative"):
        location = ctx.cwd_canary.name
    else:  # symlink_escape
        location = "weights.bin"
        aux.append(Aux("weights.bin", "symlink", "../../etc/passwd"))
    entries = [("location", location), ("offset", "0"), ("length", "8")]
    values = numpy_helper.from_array(np.ones(2, dtype=np.float32), "fuzz_ext")
    _make_external(values, entries)
    if variant.startswith("sparse_constant_"):
        indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "fuzz_ext_indices")
        model.graph.node.append(helper.make_node("Constant", [], ["fuzz_sparse_out"], name="fuzz_sparse_const",
                                                 sparse_value=helper.make_sparse_tensor(values, indices, [4])))
        model.graph.output.append(helper.make_tensor_value_info("fuzz_sparse_out", TensorProto.FLOAT, [4]))
        where = "sparse_value of an added Constant node (graph output 'fuzz_sparse_out')"
    elif variant.startswith("sparse_"):
        indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "fuzz_ext_indices")
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
        where = "sparse initializer 'fuzz_ext' (unused)"
    else:
        def branch(name: str) -> onnx.GraphProto:
            return helper.make_graph(
                [helper.make_node("Constant", [], [f"{name}_c"], name=f"{name}_const", value=values)], name, [],
                [helper.make_tensor_value_info(f"{name}_c", TensorProto.FLOAT, [2])],
            )
        model.graph.initializer.append(numpy_helper.from_array(np.array(True), "fuzz_cond"))
        model.graph.node.append(helper.make_node("If", ["fuzz_cond"], ["fuzz_if_out"], name="fuzz_if",
                                                 then_branch=branch("then"), else_branch=branch("else")))
        model.graph.output.append(helper.make_tensor_value_info("fuzz_if_out", TensorProto.FLOAT, [2]))
        where = "Constant in both branches of an added If node (output 'fuzz_if_out')"
    detail = f"{where} -> external {dict(entries)!r}" + (f"; aux {[(a.path, a.kind, a.payload) for a in aux]}" if aux else "")
    return Mutant("external_data", variant, detail, model.SerializeToString(), aux, frozenset({2}),
                  "an external-data location that leaves the model's folder must be refused with exit 2")


Mutator = Callable[..., Mutant]
MUTATIONS: dict[str, Mutator] = {
    "byte_flip": mut_byte_flip,
    "truncate": mut_truncate,
    "append_garbage": mut_append_garbage,
    "zero_range": mut_zero_range,
    "dup_chunk": mut_dup_chunk,
    "pool_attr": mut_pool_attr,
    "unknown_op": mut_unknown_op,
    "drop_input": mut_drop_input,
    "dangling_output": mut_dangling_output,
    "elem_type": mut_elem_type,
    "input_dim": mut_input_dim,
    "opset_version": mut_opset_version,
    "external_data": mut_external_data,
}
KINDS = tuple(MUTATIONS)
VARIANTS: dict[str, tuple[str, ...]] = {
    "byte_flip": ("xor_bit", "random_byte"),
    "truncate": ("random", "empty", "one_short"),
    "append_garbage": ("random", "zeros", "text", "ff"),
    "zero_range": ("zero", "ff"),
    "dup_chunk": ("insert_after", "insert_random", "overwrite"),
    "pool_attr": POOL_ATTR_VARIANTS,
    "unknown_op": ("unknown_name", "empty_name", "lowercase", "foreign_domain", "pool_domain_typo"),
    "drop_input": ("delete_last", "delete_all", "empty_name", "graph_input"),
    "dangling_output": ("node_output", "graph_output", "duplicate_output", "empty_output"),
    "elem_type": tuple(ODD_TYPES),
    "input_dim": ("minus_one", "zero", "dim_param", "empty_dim_param", "unset_dim", "no_shape", "extra_dim", "negative_big"),
    "opset_version": ("opset_1", "opset_99", "opset_0", "opset_negative", "opset_7", "opset_10", "no_default_domain", "ir_version_1", "ir_version_99"),
    "external_data": EXTERNAL_VARIANTS,
}


# --------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    seed: int
    index: int
    seed_model: str
    mutant: Mutant
    flags: list[str]
    precreate: Optional[bytes]
    dir: Path

    @property
    def name(self) -> str:
        return f"case-{self.index:05d}"

    @property
    def model_path(self) -> Path:
        return self.dir / "in" / "d" / "mutant.onnx"

    @property
    def out_dir(self) -> Path:
        return self.dir / "out"

    @property
    def out_path(self) -> Path:
        return self.out_dir / "out.onnx"

    @property
    def report_path(self) -> Path:
        return self.out_dir / "r.json"

    @property
    def canary(self) -> Path:
        return self.dir / "etc" / "passwd"

    @property
    def cwd_canary(self) -> Path:
        return self.dir / CWD_CANARY

    @property
    def label(self) -> str:
        return f"{self.mutant.kind}/{self.mutant.variant} seed={self.seed} index={self.index} model={self.seed_model}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "rewriter", str(self.model_path), str(self.out_path), "--report", str(self.report_path), "-q", *self.flags]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def command(self) -> str:
        return f"cd {shlex.quote(str(self.dir))} && PYTHONPATH={shlex.quote(str(REPO))} " + " ".join(shlex.quote(a) for a in self.argv())


CWD_CANARY = "cwd_secret.bin"
CWD_CANARY_BYTES = b"CANARY: bytes from the CLI's working directory, outside the model's folder.\n"


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"onnx-poolrewrite-fuzz:{seed}:{index}")


def make_case(seed: int, index: int, seeds: dict[str, bytes], case_dir: Path,
              kind: Optional[str] = None, variant: Optional[str] = None, flags: Optional[list[str]] = None,
              precreate: Optional[bool] = None) -> Case:
    """Build case ``index`` of campaign ``seed`` (deterministic), and create its files under ``case_dir``.

    ``kind``/``variant``/``flags``/``precreate`` override the random choices (for the test corpus).
    """
    rng = case_rng(seed, index)
    kind = kind or KINDS[index % len(KINDS)]
    seed_model = rng.choice(sorted(seeds))
    mutation_rng = random.Random(rng.getrandbits(64))
    chosen_flags = []
    if rng.random() < 0.2:
        chosen_flags.append("--no-validate")
    if rng.random() < 0.15:
        chosen_flags.append("--dry-run")
    pre = rng.random() < 0.3
    pre_bytes = b"PRE-EXISTING OUT, must survive a failed run: " + bytes(rng.randrange(256) for _ in range(32))
    case_dir = Path(case_dir).absolute()
    ctx = Ctx(model_dir=case_dir / "in" / "d", canary=case_dir / "etc" / "passwd", cwd_canary=case_dir / CWD_CANARY)
    mutant = MUTATIONS[kind](seeds[seed_model], mutation_rng, ctx, variant)
    case = Case(seed, index, seed_model, mutant, chosen_flags if flags is None else list(flags),
                pre_bytes if (pre if precreate is None else precreate) else None, case_dir)
    materialize(case)
    return case


def materialize(case: Case) -> None:
    if case.dir.exists():
        shutil.rmtree(case.dir)
    case.model_path.parent.mkdir(parents=True)
    case.out_dir.mkdir()
    case.canary.parent.mkdir()
    os.mkfifo(case.canary)
    case.cwd_canary.write_bytes(CWD_CANARY_BYTES)
    case.model_path.write_bytes(case.mutant.data)
    for aux in case.mutant.aux:
        p = case.model_path.parent / aux.path
        p.parent.mkdir(parents=True, exist_ok=True)
        if aux.kind == "symlink":
            os.symlink(aux.payload, p)
        else:
            p.write_bytes(aux.payload)
    if case.precreate is not None:
        case.out_path.write_bytes(case.precreate)
    (case.dir / "command.txt").write_text(
        f"# {case.label}\n# {case.mutant.detail}\n"
        + (f"# expected exit codes {sorted(case.mutant.expect)}: {case.mutant.expect_why}\n" if case.mutant.expect else "")
        + (f"# out/out.onnx was pre-created ({len(case.precreate)} bytes); must be untouched unless exit 0 (and not --dry-run)\n" if case.precreate else "")
        + case.command() + "\n"
    )


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under ``folder``: regular files by content, symlinks by target, FIFOs and folders by kind."""
    snap: dict[str, tuple[str, bytes | str]] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                snap[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                snap[rel] = ("file", p.read_bytes())
            elif stat.S_ISDIR(st.st_mode):
                snap[rel] = ("dir", "")
            else:
                snap[rel] = ("other", oct(stat.S_IFMT(st.st_mode)))
    return snap


@dataclass
class Result:
    label: str
    kind: str
    variant: str
    seed: int
    index: int
    seed_model: str
    detail: str
    flags: list[str]
    command: str
    returncode: Optional[int]
    stderr: str
    duration_s: float
    violations: list[str]
    dir: str


def _limit_memory(mb: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


class _OpenWatch:
    """inotify on one file: did anything open or read it? (Linux; elsewhere it sees nothing.)"""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, path: Path) -> None:
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(path), self.IN_ACCESS | self.IN_OPEN) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            pass

    def fired(self) -> bool:
        if self.fd < 0:
            return False
        try:
            return bool(os.read(self.fd, 65536))
        except BlockingIOError:
            return False
        finally:
            os.close(self.fd)
            self.fd = -1


def run_case(case: Case, timeout_s: float = DEFAULT_TIMEOUT_S, mem_limit_mb: Optional[int] = DEFAULT_MEM_LIMIT_MB) -> Result:
    """Run the CLI on the case, watching both canaries, then check every invariant."""
    model_dir_before = _snapshot(case.model_path.parent)
    stdout_f = open(case.dir / "stdout.txt", "wb")
    stderr_f = open(case.dir / "stderr.txt", "wb")
    canary_opened = False
    timed_out = False
    watch = _OpenWatch(case.cwd_canary)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            case.argv(), cwd=str(case.dir), env=case.env(), stdin=subprocess.DEVNULL, stdout=stdout_f, stderr=stderr_f,
            preexec_fn=_limit_memory(mem_limit_mb) if mem_limit_mb else None,
        )
        while proc.poll() is None:
            # A reader blocked in open() on the FIFO makes a non-blocking open for writing succeed;
            # closing it again hands the reader an immediate EOF, so the run goes on.
            try:
                fd = os.open(case.canary, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno not in (errno.ENXIO, errno.ENOENT):
                    raise
            else:
                canary_opened = True
                os.close(fd)
            if time.monotonic() - started > timeout_s:
                timed_out = True
                proc.kill()
                proc.wait()
                break
            time.sleep(0.005)
    finally:
        stdout_f.close()
        stderr_f.close()
        cwd_canary_opened = watch.fired()
    duration = time.monotonic() - started
    stderr = (case.dir / "stderr.txt").read_bytes().decode("utf-8", "replace")
    rc = None if timed_out else proc.returncode
    violations = check_case(case, rc, stderr, model_dir_before, canary_opened, timeout_s, cwd_canary_opened)
    return Result(case.label, case.mutant.kind, case.mutant.variant, case.seed, case.index, case.seed_model, case.mutant.detail,
                  case.flags, case.command(), rc, stderr, round(duration, 3), violations, str(case.dir))


def check_case(case: Case, rc: Optional[int], stderr: str, model_dir_before: dict, canary_opened: bool,
               timeout_s: float = DEFAULT_TIMEOUT_S, cwd_canary_opened: bool = False) -> list[str]:
    """The invariants; each violation is one string naming it.

    * canaries: nothing outside the model's folder is opened (case/etc/passwd, a FIFO;
      case/cwd_secret.bin in the working directory, watched with inotify);
    * no timeout; exit code in {0, 1, 2}; no "Traceback" in stderr; exit 2 -> exactly one stderr line;
    * the exit code the mutation demands, if any (escaping or unreadable external data -> 2);
    * output folder: no ``.*.tmp`` left, nothing but OUT, OUT.data and the report;
    * exit != 0 or --dry-run: OUT (and OUT.data) not written, a pre-created OUT byte-identical;
    * exit 2: no report; exit 0/1: a written report is JSON; exit 0: the report exists;
    * exit 0 and not --dry-run: OUT exists, onnx.load()s and passes onnx.checker.check_model;
    * the input model and everything beside it unchanged (nothing created, changed or removed).
    """
    v: list[str] = []
    dry_run = "--dry-run" in case.flags
    if canary_opened:
        v.append("canary-opened: the CLI opened a file outside the model's folder for reading (case/etc/passwd, a FIFO canary)")
    if cwd_canary_opened:
        v.append(f"cwd-canary-opened: the CLI opened {CWD_CANARY} in its working directory (outside the model's folder)")
    if rc is None:
        v.append(f"timeout: no exit within {timeout_s:g} s (killed)")
        return v
    if rc not in (0, 1, 2):
        v.append(f"exit-code: {rc} is not one of 0, 1, 2" + (" (killed by a signal)" if rc < 0 else ""))
    if "Traceback" in stderr:
        v.append("traceback: 'Traceback' in stderr")
    if rc == 2:
        lines = stderr.splitlines()
        if len(lines) != 1 or not lines[0].strip():
            v.append(f"stderr-not-one-line: exit 2 with {len(lines)} stderr line(s), expected exactly 1")
    if case.mutant.expect is not None and rc not in case.mutant.expect:
        v.append(f"expected-exit: got {rc}, expected {sorted(case.mutant.expect)} ({case.mutant.expect_why})")

    # the output folder
    out_entries = sorted(os.listdir(case.out_dir))
    temps = [e for e in out_entries if e.startswith(".") and e.endswith(".tmp")]
    if temps:
        v.append(f"temp-left: temp file(s) left in the output folder: {temps}")
    allowed = {case.out_path.name, case.out_path.name + ".data", case.report_path.name}
    extra = [e for e in out_entries if e not in allowed and e not in temps]
    if extra:
        v.append(f"unexpected-file: in the output folder: {extra}")
    out_changed = (
        case.out_path.exists() != (case.precreate is not None)
        or (case.precreate is not None and (not case.out_path.is_file() or case.out_path.read_bytes() != case.precreate))
    )
    data_file = case.out_dir / (case.out_path.name + ".data")
    if rc != 0 or dry_run:
        why = f"exit {rc}" if rc != 0 else "--dry-run"
        if out_changed:
            if case.precreate is not None:
                v.append(f"preexisting-out-modified: OUT existed with known bytes and was changed or removed ({why})")
            else:
                v.append(f"out-written: OUT exists after {why}")
        if data_file.exists():
            v.append(f"out-written: {data_file.name} exists after {why}")
    if rc == 2 and case.report_path.exists():
        v.append("report-on-exit-2: the report was written although the run failed with exit 2")
    if rc in (0, 1) and case.report_path.exists():
        try:
            json.loads(case.report_path.read_text())
        except Exception as err:
            v.append(f"report-invalid: the report is not JSON ({type(err).__name__}: {err})")
    if rc == 0 and not case.report_path.exists():
        v.append("report-missing: exit 0 with --report but no report written")
    if rc == 0 and not dry_run:
        if not case.out_path.is_file():
            v.append("out-missing: exit 0 but OUT does not exist")
        else:
            try:
                m = onnx.load(str(case.out_path))
                onnx.checker.check_model(m)
                # by path too: external data (dense or sparse) must resolve beside OUT, not in our own cwd
                onnx.checker.check_model(str(case.out_path))
            except Exception as err:
                first = (str(err).strip().splitlines() or [""])[0]
                v.append(f"out-invalid: OUT fails onnx.load/check_model ({type(err).__name__}: {first[:300]})")

    # the input side
    after = _snapshot(case.model_path.parent)
    if after.get("mutant.onnx") != model_dir_before.get("mutant.onnx"):
        v.append("input-modified: the input model's bytes changed")
    others_before = {k: x for k, x in model_dir_before.items() if k != "mutant.onnx"}
    others_after = {k: x for k, x in after.items() if k != "mutant.onnx"}
    if others_before != others_after:
        changed = sorted(set(others_before) ^ set(others_after) | {k for k in others_before if k in others_after and others_before[k] != others_after[k]})
        v.append(f"input-folder-modified: entries beside the input created/changed/removed: {changed}")
    if not stat.S_ISFIFO(os.lstat(case.canary).st_mode) or os.listdir(case.canary.parent) != ["passwd"]:
        v.append("canary-modified: case/etc was changed")
    if not case.cwd_canary.is_file() or case.cwd_canary.read_bytes() != CWD_CANARY_BYTES:
        v.append(f"canary-modified: {CWD_CANARY} was changed")
    return v


# --------------------------------------------------------------------------------------------
# campaign

_WORKER: dict = {}


def _init_worker(seeds: dict[str, bytes], work: str, timeout_s: float, mem_limit_mb: Optional[int]) -> None:
    _WORKER.update(seeds=seeds, work=Path(work), timeout_s=timeout_s, mem_limit_mb=mem_limit_mb)


def _work(seed: int, index: int) -> Result:
    case_dir = _WORKER["work"] / f"case-{index:05d}"
    try:
        case = make_case(seed, index, _WORKER["seeds"], case_dir)
    except Exception as err:  # a fuzzer bug: report it, do not hide it
        return Result(f"{KINDS[index % len(KINDS)]}/? seed={seed} index={index}", KINDS[index % len(KINDS)], "?", seed, index, "?",
                      "", [], "", None, "", 0.0, [f"fuzzer-error: building the case failed: {type(err).__name__}: {err}"], str(case_dir))
    result = run_case(case, _WORKER["timeout_s"], _WORKER["mem_limit_mb"])
    if not result.violations:
        shutil.rmtree(case_dir, ignore_errors=True)
    return result


def _print_summary(results: list[Result], elapsed: float, args, work: Path, keep: Optional[Path]) -> None:
    by_rc = Counter("timeout" if r.returncode is None else r.returncode for r in results)
    print(f"\n== onnx-poolrewrite fuzz: seed {args.seed}, {len(results)} case(s), {elapsed:.1f} s wall, jobs {args.jobs}")
    print("exit codes: " + ", ".join(f"{k}: {by_rc[k]}" for k in sorted(by_rc, key=str)))
    per_kind: dict[str, Counter] = defaultdict(Counter)
    per_variant: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in results:
        key = "timeout" if r.returncode is None else r.returncode
        per_kind[r.kind][key] += 1
        per_variant[(r.kind, r.variant)][key] += 1
    print(f"\n{'mutation kind':<18} {'cases':>5} {'rc0':>5} {'rc1':>5} {'rc2':>5} {'other':>5} {'viol':>5}")
    for kind in KINDS:
        c = per_kind.get(kind, Counter())
        viol = sum(1 for r in results if r.kind == kind and r.violations)
        other = sum(n for k, n in c.items() if k not in (0, 1, 2))
        print(f"{kind:<18} {sum(c.values()):>5} {c[0]:>5} {c[1]:>5} {c[2]:>5} {other:>5} {viol:>5}")
    if args.variants:
        print(f"\n{'kind/variant':<40} exit codes")
        for (kind, variant), c in sorted(per_variant.items()):
            print(f"{kind + '/' + variant:<40} " + ", ".join(f"{k}: {n}" for k, n in sorted(c.items(), key=lambda kv: str(kv[0]))))
    durations = sorted(r.duration_s for r in results)
    if durations:
        print(f"\nper-case CLI time: median {durations[len(durations) // 2]:.2f} s, max {durations[-1]:.2f} s")
    bad = [r for r in results if r.violations]
    print(f"\ninvariant violations: {sum(len(r.violations) for r in bad)} in {len(bad)} case(s)")
    for r in bad:
        print(f"\n--- VIOLATION {r.label}")
        print(f"mutation: {r.kind}/{r.variant}: {r.detail}")
        print(f"flags: {' '.join(r.flags) or '(none)'}; exit code: {'timeout' if r.returncode is None else r.returncode}")
        for line in r.violations:
            print(f"  * {line}")
        print("stderr:" + ("\n" + r.stderr.rstrip("\n") if r.stderr else " (empty)"))
        kept = (keep / f"case-{r.index:05d}") if keep else Path(r.dir)
        print(f"mutant: {kept / 'in' / 'd' / 'mutant.onnx'}")
        print(f"reproduce: {(kept / 'command.txt').read_text().splitlines()[-1] if (kept / 'command.txt').exists() else r.command}")
        print(f"replay:    cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} scripts/fuzz.py --seed {r.seed} --index {r.index}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--count", type=int, default=100, help="number of cases, indices 0..COUNT-1 (default 100)")
    p.add_argument("--index", type=int, action="append", help="run only these case indices (repeatable; replays a case)")
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--out", metavar="DIR", help="work folder for the cases (default: a new temp folder, removed if all pass)")
    p.add_argument("--keep-failures", metavar="DIR", help="where failing cases are re-created for reproduction (default: DIR/failures under --out)")
    p.add_argument("--models", metavar="GLOB", action="append", help="seed models (repeatable; default models/*.onnx)")
    p.add_argument("--no-builtin", action="store_true", help="do not add the tiny built-in seed models")
    p.add_argument("--kind", action="append", choices=KINDS, help="only cases of these mutation kinds (by index; repeatable)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help=f"seconds per CLI run (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--mem-limit-mb", type=int, default=DEFAULT_MEM_LIMIT_MB, help=f"RLIMIT_AS of each CLI run, 0 for none (default {DEFAULT_MEM_LIMIT_MB})")
    p.add_argument("--variants", action="store_true", help="also print exit codes per mutation variant")
    p.add_argument("--json", metavar="FILE", help="also write every case's result as JSON")
    p.add_argument("--list-kinds", action="store_true", help="print the mutation kinds and variants, and exit")
    args = p.parse_args(argv)
    if args.list_kinds:
        for kind in KINDS:
            print(f"{kind}: {', '.join(VARIANTS[kind])}")
        return 0
    if args.jobs < 1 or args.count < 0:
        p.error("--jobs must be >= 1 and --count >= 0")

    seeds = load_seeds(args.models, builtin=not args.no_builtin)
    indices = args.index if args.index else list(range(args.count))
    if args.kind:
        indices = [i for i in indices if KINDS[i % len(KINDS)] in args.kind]
    own_work = args.out is None
    work = Path(args.out or tempfile.mkdtemp(prefix="poolrewrite-fuzz-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    keep = Path(args.keep_failures).absolute() if args.keep_failures else work / "failures"
    print(f"fuzzing {len(indices)} case(s), seed {args.seed}, {len(seeds)} seed model(s), jobs {args.jobs}, work folder {work}", flush=True)

    started = time.monotonic()
    results: list[Result] = []
    mem = args.mem_limit_mb or None
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=args.jobs, initializer=_init_worker, initargs=(seeds, str(work), args.timeout, mem)
    ) as pool:
        futures = {pool.submit(_work, args.seed, i): i for i in indices}
        for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            r = fut.result()
            results.append(r)
            if r.violations:
                print(f"[{done}/{len(indices)}] VIOLATION {r.label}: {'; '.join(x.split(':')[0] for x in r.violations)}", flush=True)
            elif done % 50 == 0 or done == len(indices):
                print(f"[{done}/{len(indices)}] {time.monotonic() - started:.0f} s", flush=True)
    elapsed = time.monotonic() - started
    results.sort(key=lambda r: r.index)

    bad = [r for r in results if r.violations]
    for r in bad:  # re-create each failing case where it can be rerun (same mutant, same flags)
        if r.variant == "?":
            continue
        make_case(args.seed, r.index, seeds, keep / f"case-{r.index:05d}")
        shutil.copy(Path(r.dir) / "stderr.txt", keep / f"case-{r.index:05d}" / "observed_stderr.txt")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    _print_summary(results, elapsed, args, work, keep if bad else None)
    if own_work and not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
