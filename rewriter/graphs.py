"""Small helpers over ONNX protos shared by the pass, the validator and the flip."""

from __future__ import annotations

from typing import Iterable

import onnx

from .ops import ONNX_DOMAINS


def all_graphs(graph: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    """``graph`` and every If/Loop/Scan body below it, outermost first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from all_graphs(sub)


def producers(graphs: Iterable[onnx.GraphProto]) -> dict[str, onnx.NodeProto]:
    """The node that produces each named tensor of ``graphs`` (a graph and its bodies, say)."""
    return {o: n for g in graphs for n in g.node for o in n.output if o}


def functions_containing(model: onnx.ModelProto, op_types: Iterable[str]) -> list[tuple[str, str]]:
    """Model-local functions whose body holds one of ``op_types`` (default domain),
    directly or through a function they call, as ``(domain, name)``."""
    wanted = set(op_types)
    bodies = {(f.domain, f.name): f for f in model.functions}

    def holds(key: tuple[str, str], seen: frozenset) -> bool:
        for node in bodies[key].node:
            if node.op_type in wanted and node.domain in ONNX_DOMAINS:
                return True
            callee = (node.domain, node.op_type)
            if callee in bodies and callee not in seen and holds(callee, seen | {callee}):
                return True
        return False

    return [key for key in bodies if holds(key, frozenset({key}))]


def tensor_bytes(t: onnx.TensorProto, in_memory: bool = True) -> int:
    """About how much of the serialized model ``t`` takes (``in_memory``: 0 for data kept
    in an external file): exact enough to pick the big tensors, and it never
    serializes one (upb cannot serialize a tensor past 2 GiB)."""
    if in_memory and t.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    if t.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    count = 1
    for d in t.dims:
        count *= d
    return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type else 0


def weightless_copy(model: onnx.ModelProto, keep_below_bytes: int = 1024) -> onnx.ModelProto:
    """A copy for shape and type inference: large initializers keep their type and
    dims but not their data (small ones, like Reshape targets, are kept whole)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    for t in model.graph.initializer:
        if tensor_bytes(t, in_memory=False) < keep_below_bytes:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return light


def clear_negative_dims(model: onnx.ModelProto) -> None:
    """Make negative dim_values (Paddle writes -1 for "dynamic") unknown dims, in the
    main graph's inputs, outputs and value_info, so shape inference never computes with
    them; a graph that had any loses its value_info (it may have been computed from them)."""
    g = model.graph
    negative = False
    for value in list(g.input) + list(g.output) + list(g.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    dim.ClearField("dim_value")
                    negative = True
    if negative:
        # Intermediate shapes computed from a -1 taken literally (1 + (-1 - 3) // 2 = -1, then 0 ...)
        # look static and are wrong: let inference derive them again.
        del g.value_info[:]
