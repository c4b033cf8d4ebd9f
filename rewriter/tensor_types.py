"""The types and shapes of a model's tensors, as the pass and ``--overwrite-input-shape`` use them.

:func:`value_types` runs onnx shape inference on a weightless copy, then
corrects what inference and onnxruntime disagree on (ceil_mode windows that
start in the end padding, see there); :func:`types_from_runtime` fills in what
inference cannot resolve from one onnxruntime run.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx

from .graphs import all_graphs, clear_negative_dims, weightless_copy
from .ops import SITE_OPS, is_onnx_op, onnx_opset
from .spec import attribute_support, SpecError, pool_spec_from_attributes
from .validate.inputs import SIGNED_NORMAL, describe_inputs, make_feeds
from .validate.runners import OrtRunner


# Pools whose ceil_mode output onnx shape inference and onnxruntime can disagree on.
CEIL_MODE_POOLS = frozenset({"MaxPool", "AveragePool"})


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Tensor types after shape inference, corrected where inference and the runtime disagree.

    Before opset 22, onnx shape inference keeps a ceil_mode window that starts
    in the end padding; onnxruntime drops it. We pin such pool outputs to the
    runtime's shape and infer again, so that pools downstream see real shapes.
    """
    pinned: dict[str, tuple] = {}
    types: dict[str, onnx.TypeProto] = {}
    for _ in range(len(model.graph.node) + 1):
        types = _infer_types(model, pinned, types)
        corrections = {}
        for node in model.graph.node:
            if is_onnx_op(node, CEIL_MODE_POOLS):
                shape, _, _ = shape_and_dtype(types.get(node.input[0]))
                declared, _, _ = shape_and_dtype(types.get(node.output[0]))
                runtime = _runtime_pool_shape(node, shape, onnx_opset(model.opset_import))
                if runtime is not None and declared != runtime:
                    corrections[node.output[0]] = runtime
        if all(pinned.get(k) == v for k, v in corrections.items()):
            return types
        pinned.update(corrections)
    return types


def unresolved_pool_inputs(model: onnx.ModelProto, types: dict[str, onnx.TypeProto]) -> list[str]:
    """Main-graph pool inputs whose dtype, channels or spatial dims inference left unknown."""
    names = []
    for node in model.graph.node:
        if is_onnx_op(node, SITE_OPS) and node.input:
            shape, _, dtype_name = shape_and_dtype(types.get(node.input[0]))
            if not dtype_name or shape is None or not all(isinstance(d, int) for d in shape[1:]):
                names.append(node.input[0])
    return sorted(set(names))


def types_from_runtime(model: onnx.ModelProto, names: list[str], types: dict[str, onnx.TypeProto]) -> bool:
    """Fill ``types`` for ``names`` from one onnxruntime run of the original model
    (signed-normal inputs, a dynamic batch set to 1). False when it cannot run."""
    try:
        feeds = make_feeds(describe_inputs(model), SIGNED_NORMAL)
        values = OrtRunner(model, expose=names).run(feeds)
    except Exception:  # dynamic inputs, or a model onnxruntime cannot run: the nodes stay unresolved
        return False
    for name in names:
        if name in values:
            types[name] = onnx.helper.make_tensor_type_proto(
                onnx.helper.np_dtype_to_tensor_dtype(values[name].dtype), list(values[name].shape)
            )
    return True


def _infer_types(
    model: onnx.ModelProto, pinned: dict[str, tuple], previous: Optional[dict[str, onnx.TypeProto]] = None
) -> dict[str, onnx.TypeProto]:
    source = weightless_copy(model)
    clear_negative_dims(source)
    if pinned:
        keep = [v for v in source.graph.value_info if v.name not in pinned]
        del source.graph.value_info[:]
        source.graph.value_info.extend(keep)
        elem_types = {name: t.tensor_type.elem_type for name, t in (previous or {}).items() if t.HasField("tensor_type")}
        elem_types.update({v.name: v.type.tensor_type.elem_type for v in model.graph.value_info})
        for name, shape in pinned.items():
            elem = elem_types.get(name) or onnx.TensorProto.FLOAT
            source.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem, list(shape)))
    inferred = source
    # Data propagation resolves Reshape targets computed from Shape; some models trip it, so retry without.
    for data_prop in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(source, check_type=False, strict_mode=False, data_prop=data_prop)
            break
        except Exception:  # inference is advisory: unknown shapes just mean "kept"
            continue
    types = {}
    for g in all_graphs(inferred.graph):
        types.update({v.name: v.type for v in list(g.input) + list(g.value_info) + list(g.output)})
    for init in model.graph.initializer:
        t = onnx.TypeProto()
        t.tensor_type.elem_type = init.data_type
        for d in init.dims:
            t.tensor_type.shape.dim.add().dim_value = d
        types.setdefault(init.name, t)
    return types


def _runtime_pool_shape(node: onnx.NodeProto, input_shape: Optional[tuple], opset: int) -> Optional[tuple]:
    """The output shape onnxruntime gives a ceil_mode pool, when it can be computed."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if not attrs.get("ceil_mode") or input_shape is None or len(input_shape) < 3:
        return None
    spatial = input_shape[2:]
    if not all(isinstance(d, int) for d in spatial):
        return None
    try:
        spec = pool_spec_from_attributes("max", attrs, spatial, **attribute_support(node.op_type, opset))
    except SpecError:
        return None
    return tuple(input_shape[:2]) + spec.out_shape


def shape_and_dtype(type_proto: Optional[onnx.TypeProto]) -> tuple[Optional[tuple], Optional[np.dtype], str]:
    """A tensor type's dims (an int where static, a name or None where not), its numpy
    dtype when it is one the pass lowers in, and its dtype's name ("" when untyped)."""
    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None, None, ""
    tt = type_proto.tensor_type
    dtype_name = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else ""
    if tt.elem_type == onnx.TensorProto.BFLOAT16:
        dtype_name = "bfloat16"
    dtype = np.dtype(dtype_name) if dtype_name in ("float32", "float16", "float64") else None
    if not tt.HasField("shape"):
        return None, dtype, dtype_name
    # A negative dim_value (Paddle writes -1) is as dynamic as a dim_param.
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or None) for d in tt.shape.dim)
    return dims, dtype, dtype_name
