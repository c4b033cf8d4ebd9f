"""Static input shapes on request (``--overwrite-input-shape``).

Dynamic spatial dims keep most pools: their exact lowering depends on the
extent. :func:`overwrite_input_shapes` gives the graph inputs the static dims a
deployment uses, re-runs shape inference on a weightless copy, and replaces
every ``value_info`` and graph-output shape with what inference now says, so no
stale shape survives. Tensors inference cannot resolve get no ``value_info``;
the pass then takes them from one onnxruntime run, as it does for any model.

Dims are matched by position, never by ``dim_param`` name: one model names both
H and W ``?``, and each gets its own value. A negative ``dim_value`` (Paddle
writes -1) is dynamic.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import onnx

from .graphs import all_graphs, weightless_copy
from .input_dims import declared_dims, dims_text, graph_inputs, suggested_dims
from .model_io import InputError
from .tensor_types import value_types

KEEP = -1  # in a dims list: keep the model's static dim (a dynamic batch becomes 1)
_PLACEHOLDER = re.compile(r"^<[^<>]*>$")


class ShapeError(InputError):
    """Shapes that do not fit the model, or a dims string that cannot be read."""


def parse_shape_option(value: str, option: str = "--overwrite-input-shape") -> tuple[str, list[int]]:
    """``NAME:D0,D1,...`` as ``(name, dims)``; ``-1`` keeps the model's dim.

    The name may itself contain colons (``input:0``): the dims follow the last one.
    """
    name, sep, text = value.rpartition(":")
    if not sep or not name:
        raise ShapeError(f"{option} {value!r}: expected NAME:D0,D1,... (e.g. images:1,3,640,640)")
    tokens = [t.strip() for t in text.split(",")]
    placeholders = [t for t in tokens if _PLACEHOLDER.match(t)]
    if placeholders:
        raise ShapeError(f"{option} {value!r}: replace the placeholder(s) {', '.join(placeholders)} with numbers (your deployment's sizes)")
    try:
        dims = [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        raise ShapeError(f"{option} {value!r}: {bad!r} is not an integer; dims are positive integers, or -1 to keep the model's dim") from None
    if any(d < 1 and d != KEEP for d in dims):
        raise ShapeError(f"{option} {value!r}: dims are positive integers, or -1 to keep the model's dim")
    return name, dims


def parse_shape_options(values: Optional[Sequence[str]], option: str = "--overwrite-input-shape") -> dict[str, list[int]]:
    """Repeated ``NAME:D0,D1,...`` options as one mapping; a name given twice is an error."""
    shapes: dict[str, list[int]] = {}
    for value in values or []:
        name, dims = parse_shape_option(value, option)
        if name in shapes:
            raise ShapeError(f"{option}: input '{name}' is given twice")
        shapes[name] = dims
    return shapes


def resolve_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Check ``shapes`` against the model's inputs; return them with every ``-1`` resolved.

    Raises :class:`ShapeError` for a name that is not an input, a dims list of
    the wrong rank, a value that contradicts a static dim, or a ``-1`` on a
    dynamic dim other than the batch.
    """
    inputs = graph_inputs(model)
    unknown = [name for name in shapes if name not in inputs]
    if unknown:
        raise ShapeError(f"'{unknown[0]}' is not an input of the model; its inputs are {', '.join(inputs) or '(none)'}")
    resolved = {}
    for name, given in shapes.items():
        value = inputs[name]
        if not value.type.HasField("tensor_type"):
            raise ShapeError(f"input '{name}' is not a tensor; only tensor inputs have dims")
        declared = declared_dims(value)
        shown = f"{name}:{','.join(map(str, given))}"
        if declared is not None and len(given) != len(declared):
            raise ShapeError(f"{shown}: {len(given)} dim(s) given, but '{name}' has rank {len(declared)} {dims_text(value)}")
        dims = []
        for axis, g in enumerate(given):
            d = declared[axis] if declared is not None else None
            if g == KEEP:
                if d is None and axis > 0:
                    known = [x if x != KEEP else (declared[i] if declared else None) for i, x in enumerate(given)]
                    raise ShapeError(
                        f"{shown}: dim {axis} of '{name}' is dynamic {dims_text(value)}, so -1 cannot keep it; "
                        f"give its value: {name}:{suggested_dims(value, known)}"
                    )
                g = d if d is not None else 1
            elif g < 1:
                raise ShapeError(f"{shown}: dims are positive integers, or -1 to keep the model's dim")
            elif d is not None and d != g:
                raise ShapeError(f"{shown}: dim {axis} of '{name}' is {d} in the model {dims_text(value)}, not {g}")
            dims.append(int(g))
        resolved[name] = dims
    return resolved


def overwrite_input_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], *, in_place: bool = False
) -> onnx.ModelProto:
    """Give the named graph inputs static dims, and every shape in the model the values that follow.

    ``shapes`` maps input names to dims; ``-1`` keeps the model's static dim
    (a dynamic batch left as ``-1`` becomes 1). Shape inference runs on a
    weightless copy; the main graph's ``value_info`` and output shapes are then
    replaced by its results (ceil_mode pool outputs as onnxruntime computes
    them), subgraph ``value_info`` is refilled the same way, and dims it cannot
    resolve are left dynamic rather than stale.

    Returns a new model, or ``model`` itself edited when ``in_place`` (which
    saves a copy of the weights). Raises :class:`ShapeError` (see
    :func:`resolve_shapes`).
    """
    resolved = resolve_shapes(model, shapes)
    if in_place:
        out = model
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    inputs = graph_inputs(out)
    for name, dims in resolved.items():
        shape = inputs[name].type.tensor_type.shape
        shape.ClearField("dim")  # also drops dim_param names and denotations that no longer apply
        for d in dims:
            shape.dim.add().dim_value = d

    light = weightless_copy(out)
    for graph in all_graphs(light.graph):
        del graph.value_info[:]  # stale entries would be merged with, or contradict, the new shapes
    for output in light.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    types = value_types(light)  # the pass's inference, ceil_mode corrections included

    for graph in all_graphs(out.graph):
        produced = [o for node in graph.node for o in node.output if o]
        outputs = {o.name for o in graph.output}
        del graph.value_info[:]
        graph.value_info.extend(
            onnx.helper.make_value_info(name, types[name]) for name in dict.fromkeys(produced)
            if name not in outputs and _has_shape(types.get(name))
        )
    for output in out.graph.output:
        _set_output_type(output, types.get(output.name))
    return out


def _has_shape(type_proto: Optional[onnx.TypeProto]) -> bool:
    return type_proto is not None and type_proto.HasField("tensor_type") and type_proto.tensor_type.HasField("shape")


def _set_output_type(output: onnx.ValueInfoProto, inferred: Optional[onnx.TypeProto]) -> None:
    """The output's shape from inference; without one, its dims become unknown (rank kept)."""
    if not output.type.HasField("tensor_type"):
        return
    tt = output.type.tensor_type
    if _has_shape(inferred):
        tt.shape.CopyFrom(inferred.tensor_type.shape)  # type: ignore[union-attr]
        if not tt.elem_type and inferred.tensor_type.elem_type:  # type: ignore[union-attr]
            tt.elem_type = inferred.tensor_type.elem_type  # type: ignore[union-attr]
    elif tt.HasField("shape"):
        rank = len(tt.shape.dim)
        tt.shape.ClearField("dim")
        for _ in range(rank):
            tt.shape.dim.add()


def shapes_for(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], names_in_original: Sequence[str]) -> dict[str, list[int]]:
    """``shapes`` (named after the original's inputs) for another model of the same
    inputs: by name, or by position when that model renamed them (as validation matches them)."""
    inputs = list(graph_inputs(model))
    if set(shapes) <= set(inputs) or len(inputs) != len(names_in_original):
        return {k: list(v) for k, v in shapes.items()}
    position = {name: i for i, name in enumerate(names_in_original)}
    return {inputs[position[k]] if k in position else k: list(v) for k, v in shapes.items()}
