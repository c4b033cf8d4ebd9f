"""Subtly wrong candidates: one mutator per bug class that validation must refuse (issue 13).

Each mutator takes a model, returns a mutated copy (the argument is never
modified), and keeps every graph output's shape and the pool's output tensor
name, so the candidate still runs and a failure can be localized to the node
(``--compare ORIGINAL CANDIDATE`` must exit 1 naming it). ``node`` selects the
pool by node name or output tensor name; ``None`` takes the first that fits.

=================================  =============================================
``zero_padded_maxpool``            padded MaxPool -> Pad(constant 0) + unpadded
                                   MaxPool (padding can win a max of negatives)
``average_missing_column``         GlobalAveragePool over the input with its last
                                   column zeroed (divisor kept); AveragePool ->
                                   depthwise Conv whose kernel's last column is 0
``dropped_ceil_window``            ceil_mode=1 pool -> ceil_mode=0, the missing
                                   last window filled by edge-replicating its
                                   neighbour (needs a static input shape)
``flipped_count_include_pad``      a padded AveragePool's count_include_pad flipped
``pool_on_wrong_tensor``           the pool fed from another tensor of the same
                                   shape: by default its input's pre-activation
=================================  =============================================

Two more act on any tensor, so they also apply to the rewriter's own output
(where no pool op is left): :func:`replace_last_window` (the last row/column
of a tensor replaced by the one before it) and :func:`rewire_rewritten_pool`
(a rewritten pool's subgraph fed from another tensor).

:data:`CASES` pairs each bug class with models of ``tests/realistic.py`` and
the node to break there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT64_MAX = np.iinfo(np.int64).max
# ops whose first input has the output's shape: their input is the "pre-activation"
_ELEMENTWISE = {"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "PRelu", "LeakyRelu", "Clip", "Mul", "Add",
                "BatchNormalization", "Tanh", "Elu", "Selu"}


# -- helpers ------------------------------------------------------------------------


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def _find(model: onnx.ModelProto, op_types: Sequence[str], node: Optional[str], fits: Callable[[onnx.NodeProto], bool], what: str) -> int:
    """Index of the selected pool node; ValueError naming what was looked for."""
    for i, n in enumerate(model.graph.node):
        if n.op_type in op_types and (node is None or node in (n.name, n.output[0])) and fits(n):
            return i
    where = f" named {node!r}" if node else ""
    raise ValueError(f"no {what}{where} in the model")


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[Optional[int]]]:
    """Inferred dims per tensor (None where unknown)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    return shapes


def _const(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _insert(model: onnx.ModelProto, index: int, nodes: Sequence[onnx.NodeProto]) -> None:
    """Put ``nodes`` at ``index`` (keeps the list topologically sorted)."""
    existing = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(existing[:index] + list(nodes) + existing[index:])


def _need_opset11(model: onnx.ModelProto) -> None:
    if _opset(model) < 11:
        raise ValueError("the mutators write Pad/Slice with tensor inputs: opset >= 11 needed")


def _explicit_pads(n: onnx.NodeProto) -> list[int]:
    return list(_attr(n, "pads", []) or [])


def _padded(n: onnx.NodeProto) -> bool:
    return _attr(n, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and any(_explicit_pads(n))


# -- the bug classes ------------------------------------------------------------------


def zero_padded_maxpool(model: onnx.ModelProto, node: Optional[str] = None) -> onnx.ModelProto:
    """A padded MaxPool computed as Pad(constant 0) + MaxPool without pads.

    Wrong wherever a border window holds only negative values (a SiLU or
    plain Conv output); harmless after a Relu, so pick a pool on signed data."""
    _need_opset11(model)
    new = _copy(model)
    i = _find(new, ["MaxPool"], node, _padded, "MaxPool with explicit non-zero pads")
    pool = new.graph.node[i]
    pads = _explicit_pads(pool)
    spatial = len(pads) // 2
    onnx_pads = [0, 0, *pads[:spatial], 0, 0, *pads[spatial:]]
    padded = f"{pool.output[0]}/bug_zero_pad"
    pad = helper.make_node("Pad", [pool.input[0], _const(new, padded + "_pads", np.array(onnx_pads, np.int64)),
                                   _const(new, padded + "_value", np.array(0, np.float32))],
                           [padded], name=padded, mode="constant")
    pool.input[0] = padded
    _set_attr(pool, "pads", None)
    _insert(new, i, [pad])
    return new


def average_missing_column(model: onnx.ModelProto, node: Optional[str] = None) -> onnx.ModelProto:
    """An average that misses the last column of its window (divisor unchanged).

    GlobalAveragePool: the input's last column is zeroed (Slice + Mul 0 + Concat,
    any input shape). AveragePool (count_include_pad=1 or no pads, ceil_mode=0):
    a depthwise Conv with 1/area taps whose last kernel column is 0 (needs the
    channel count from shape inference)."""
    _need_opset11(model)
    new = _copy(model)

    def fits(n: onnx.NodeProto) -> bool:
        if n.op_type == "GlobalAveragePool":
            return True
        return (not _attr(n, "ceil_mode", 0) and (_attr(n, "count_include_pad", 0) or not any(_explicit_pads(n)))
                and _attr(n, "auto_pad", b"NOTSET") in (b"NOTSET", b"VALID"))

    i = _find(new, ["GlobalAveragePool", "AveragePool"], node, fits, "GlobalAveragePool, or AveragePool a Conv can mimic")
    pool = new.graph.node[i]
    base = f"{pool.output[0]}/bug_missing_column"
    if pool.op_type == "GlobalAveragePool":
        x = pool.input[0]
        minus1 = _const(new, base + "_m1", np.array([-1], np.int64))
        nodes = [
            helper.make_node("Slice", [x, _const(new, base + "_zero", np.array([0], np.int64)), minus1, minus1], [base + "_head"], name=base + "_head"),
            helper.make_node("Slice", [x, minus1, _const(new, base + "_end", np.array([INT64_MAX], np.int64)), minus1], [base + "_last"], name=base + "_last"),
            helper.make_node("Mul", [base + "_last", _const(new, base + "_0", np.array(0, np.float32))], [base + "_zeros"], name=base + "_zeros"),
            helper.make_node("Concat", [base + "_head", base + "_zeros"], [base], name=base, axis=-1),
        ]
        pool.input[0] = base
        _insert(new, i, nodes)
        return new
    channels = _static_shapes(new).get(pool.input[0], [None, None])[1]
    if channels is None:
        raise ValueError(f"channel count of {pool.input[0]!r} unknown: cannot build the depthwise Conv")
    kernel = list(_attr(pool, "kernel_shape"))
    w = np.full((channels, 1, *kernel), 1.0 / math.prod(kernel), np.float32)
    w[..., -1] = 0
    attrs = {k: _attr(pool, k) for k in ("strides", "pads", "dilations") if _attr(pool, k) is not None}
    conv = helper.make_node("Conv", [pool.input[0], _const(new, base + "_w", w)], list(pool.output), name=pool.name,
                            kernel_shape=kernel, group=channels, **attrs)
    new.graph.node[i].CopyFrom(conv)
    return new


def _ceil_extra_windows(n: onnx.NodeProto, spatial: Sequence[Optional[int]]) -> list[int]:
    """Per spatial axis: how many windows ceil_mode adds over floor (ONNX rule: the
    last window must start inside the input or its begin pad)."""
    kernel = list(_attr(n, "kernel_shape"))
    rank = len(kernel)
    strides = list(_attr(n, "strides", [1] * rank) or [1] * rank)
    dilations = list(_attr(n, "dilations", [1] * rank) or [1] * rank)
    pads = _explicit_pads(n) or [0] * (2 * rank)
    extra = []
    for a in range(rank):
        if spatial[a] is None:
            raise ValueError(f"pool {n.name!r} has a dynamic input dim: give a model with static shapes")
        span = spatial[a] + pads[a] + pads[a + rank] - ((kernel[a] - 1) * dilations[a] + 1)
        floor_n, ceil_n = span // strides[a] + 1, -(-span // strides[a]) + 1
        if (ceil_n - 1) * strides[a] >= spatial[a] + pads[a]:
            ceil_n -= 1
        extra.append(ceil_n - floor_n)
    return extra


def dropped_ceil_window(model: onnx.ModelProto, node: Optional[str] = None) -> onnx.ModelProto:
    """A ceil_mode=1 pool computed with ceil_mode=0, its missing last window(s)
    filled by edge-replicating the last computed one (right shape, wrong values).

    Needs a static shape at the pool's input and an axis where ceil adds a window."""
    _need_opset11(model)
    new = _copy(model)
    shapes = _static_shapes(new)
    i = _find(new, ["MaxPool", "AveragePool"], node,
              lambda n: bool(_attr(n, "ceil_mode", 0)) and _attr(n, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"),
              "ceil_mode=1 MaxPool/AveragePool with explicit pads")
    pool = new.graph.node[i]
    shape = shapes.get(pool.input[0])
    if shape is None:
        raise ValueError(f"shape of {pool.input[0]!r} unknown: give a model with static shapes")
    extra = _ceil_extra_windows(pool, shape[2:])
    if not any(extra):
        raise ValueError(f"ceil_mode adds no window to pool {pool.name!r} at input shape {shape}")
    out = pool.output[0]
    floor_out = f"{out}/bug_floor"
    pool.output[0] = floor_out
    _set_attr(pool, "ceil_mode", None)
    pads = np.array([0, 0, *[0] * len(extra), 0, 0, *extra], np.int64)
    pad = helper.make_node("Pad", [floor_out, _const(new, f"{out}/bug_edge_pads", pads)], [out], name=f"{out}/bug_edge", mode="edge")
    _insert(new, i + 1, [pad])
    return new


def flipped_count_include_pad(model: onnx.ModelProto, node: Optional[str] = None) -> onnx.ModelProto:
    """A padded AveragePool (explicit pads or SAME_*) with count_include_pad flipped:
    its border windows get the wrong divisor."""
    new = _copy(model)

    def fits(n: onnx.NodeProto) -> bool:
        return _padded(n) or _attr(n, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER")

    i = _find(new, ["AveragePool"], node, fits, "padded AveragePool")
    pool = new.graph.node[i]
    _set_attr(pool, "count_include_pad", 0 if _attr(pool, "count_include_pad", 0) else 1)
    return new


def pool_on_wrong_tensor(model: onnx.ModelProto, node: Optional[str] = None, source: Optional[str] = None) -> onnx.ModelProto:
    """The pool reads ``source`` instead of its input: by default its input's
    producer's first input (the pre-activation of a Relu, SiLU Mul, PRelu, BN...),
    which has the same shape."""
    new = _copy(model)
    pools = ["MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "ReduceMean", "ReduceMax"]
    producers = {o: n for n in new.graph.node for o in n.output}

    def fits(n: onnx.NodeProto) -> bool:
        p = producers.get(n.input[0])
        return source is not None or (p is not None and p.op_type in _ELEMENTWISE)

    i = _find(new, pools, node, fits, "pool fed by an elementwise op" if source is None else "pool")
    pool = new.graph.node[i]
    wrong = source or producers[pool.input[0]].input[0]
    shapes = _static_shapes(new)
    if shapes.get(wrong) and shapes.get(pool.input[0]) and shapes[wrong] != shapes[pool.input[0]]:
        raise ValueError(f"{wrong!r} has shape {shapes[wrong]}, the pool's input {shapes[pool.input[0]]}")
    pool.input[0] = wrong
    return new


# -- bugs on any tensor (also the rewriter's own output) ----------------------------------


def replace_last_window(model: onnx.ModelProto, tensor: str, axes: Optional[Sequence[int]] = None) -> onnx.ModelProto:
    """The last entry of ``tensor`` along each of ``axes`` (default: every axis
    after the channel axis) replaced by the entry before it (Slice + Pad edge)."""
    _need_opset11(model)
    new = _copy(model)
    i = next((k for k, n in enumerate(new.graph.node) if tensor in n.output), None)
    if i is None:
        raise ValueError(f"no node makes {tensor!r}")
    shape = _static_shapes(new).get(tensor)
    if shape is None:
        raise ValueError(f"rank of {tensor!r} unknown")
    rank = len(shape)
    axes = [a % rank for a in (axes if axes is not None else range(2, rank))]
    raw = f"{tensor}/bug_raw"
    producer = new.graph.node[i]
    producer.output[list(producer.output).index(tensor)] = raw
    minus1 = np.full(len(axes), -1, np.int64)
    pads = np.zeros(2 * rank, np.int64)
    pads[[rank + a for a in axes]] = 1
    nodes = [
        helper.make_node("Slice", [raw, _const(new, raw + "_starts", np.zeros(len(axes), np.int64)), _const(new, raw + "_ends", minus1),
                                   _const(new, raw + "_axes", np.array(axes, np.int64))], [raw + "_cut"], name=raw + "_cut"),
        helper.make_node("Pad", [raw + "_cut", _const(new, raw + "_pads", pads)], [tensor], name=f"{tensor}/bug_edge", mode="edge"),
    ]
    _insert(new, i + 1, nodes)
    return new


def rewire_rewritten_pool(model: onnx.ModelProto, pool_name: str, source: str) -> onnx.ModelProto:
    """In the rewriter's output: feed the subgraph that replaced ``pool_name``
    (nodes named ``<pool_name>/poolrewrite...``) from ``source`` instead of the pool's input."""
    new = _copy(model)
    prefix = f"{pool_name}/poolrewrite"
    members = [n for n in new.graph.node if n.name.startswith(prefix)]
    if not members:
        raise ValueError(f"no nodes named {prefix}*: was {pool_name!r} rewritten?")
    made = {o for n in members for o in n.output}
    consts = {t.name for t in new.graph.initializer} | {o for n in new.graph.node if n.op_type == "Constant" for o in n.output}
    entries = {i for n in members for i in n.input if i and i not in made and i not in consts}
    if len(entries) != 1:
        raise ValueError(f"the subgraph of {pool_name!r} reads {sorted(entries)}, not one input")
    (entry,) = entries
    for n in members:
        for k, name in enumerate(n.input):
            if name == entry:
                n.input[k] = source
    return new


# -- which bug goes where -----------------------------------------------------------------


@dataclass(frozen=True)
class BugCase:
    """Break ``node`` of ``tests.realistic.<builder>(**kwargs)`` (static shapes) with ``mutator``."""

    builder: str
    mutator: Callable[..., onnx.ModelProto]
    node: str
    kwargs: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.builder}-{self.mutator.__name__}-{self.node}"

    def build(self) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """(original, candidate)."""
        import realistic  # tests/ is on sys.path under pytest

        original = realistic.BUILDERS[self.builder](**self.kwargs)
        return original, self.mutator(original, self.node)


CASES: list[BugCase] = [
    BugCase("yolo_sppf_detector", zero_padded_maxpool, "sppf/m1"),
    BugCase("text_1d_classifier", zero_padded_maxpool, "max_pool1d"),
    BugCase("ocr_se_recognizer", average_missing_column, "se_pool_3"),
    BugCase("paddle_det", average_missing_column, "se_pool_2"),
    BugCase("keras_nhwc_classifier", average_missing_column, "global_average_pooling2d"),
    BugCase("mtcnn_pnet", dropped_ceil_window, "pool1"),
    BugCase("paddle_det", dropped_ceil_window, "pool2d_2"),
    BugCase("keras_nhwc_classifier", flipped_count_include_pad, "average_pooling2d"),
    BugCase("ocr_se_recognizer", flipped_count_include_pad, "out_pool"),
    BugCase("yolo_sppf_detector", pool_on_wrong_tensor, "sppf/m1"),
    BugCase("paddle_det", pool_on_wrong_tensor, "pool2d_1"),
    BugCase("ocr_se_recognizer", pool_on_wrong_tensor, "se_pool_5"),
]
