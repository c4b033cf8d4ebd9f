"""The issue's target limits, written out again for the tests (issue 15).

Independent of ``rewriter.profile`` and ``rewriter/profiles/*.json``: the numbers are
copied from the issue's text, and :func:`outside` reads every node the rewrite added
from its ONNX attributes (a Conv's kernel from its weight) and says what it breaks.
A pool node the rewrite added must be one the target runs natively.
"""

from __future__ import annotations

from typing import Optional

import onnx
from onnx import helper

# ops; conv: kernel, stride, dilation, pad ranges (None: no limit), pad_below_kernel,
# equal strides, allowed depthwise (kh, kw, stride), 2-D only; Concat axes; native pools.
LIMITS: dict[str, dict] = {
    "nvidia-dla": dict(
        ops={"Conv", "Relu", "Add", "Concat", "Max"},
        kernel=(1, 32), stride=(1, 8), dilation=(1, 32), pad=(0, 31), pad_below_kernel=True, equal_strides=False,
        depthwise=None, only_2d=True, concat_axes={1},
        pools={
            "MaxPool": dict(kernel=(1, 8), stride=(1, 16), pad=(0, 7), ceil=False, dilation=False, only_2d=True),
            "AveragePool": dict(kernel=(1, 8), stride=(1, 16), pad=(0, 7), ceil=False, dilation=False, only_2d=True),
        },
        global_extent={"GlobalMaxPool": 8, "GlobalAveragePool": 8}, global_area={},
    ),
    "rknn": dict(
        ops={"Conv", "Relu", "Add", "Concat"},
        kernel=(1, 31), stride=(1, 7), dilation=None, pad=(0, 15), pad_below_kernel=True, equal_strides=False,
        depthwise=None, only_2d=True, concat_axes=None,
        pools={
            # auto_pad is judged on the pads it resolves to (measured on rk3588, issue 22).
            "MaxPool": dict(kernel=(1, 7), stride=(1, 8), pad=(0, 7), ceil=False),
            "AveragePool": dict(kernel=(1, 7), stride=(1, 8), pad=(0, 7), ceil=False, cip=1),
        },
        global_extent={"GlobalMaxPool": 343, "GlobalAveragePool": 343}, global_area={},
    ),
    "tidl": dict(
        ops={"Conv", "Relu", "Add", "Concat"},
        kernel=None, stride=None, dilation=None, pad=None, pad_below_kernel=False, equal_strides=True,
        depthwise={(3, 3, 1), (5, 5, 1), (7, 7, 1), (3, 3, 2)}, only_2d=False, concat_axes={1, 2, 3},
        pools={
            "MaxPool": dict(windows={(1, 1), (1, 2), (2, 2), (3, 1), (3, 2)}, ceil=False, dilation=False),
            "AveragePool": dict(windows={(1, 1), (1, 2), (2, 2), (3, 1), (3, 2)}, ceil=False, dilation=False),
        },
        global_extent={}, global_area={"GlobalAveragePool": 1024},
    ),
    # issue 23: any TFLite delegate through onnx2tf 2.6.9: no dilated conv (measured: strided
    # and dilated does not convert; same-dilation siblings of one tensor become
    # SPACE_TO_BATCH_ND); nothing native.
    "tflite": dict(
        ops={"Conv", "Relu", "Add", "Concat"},
        kernel=None, stride=None, dilation=(1, 1), pad=None, pad_below_kernel=False, equal_strides=False,
        depthwise=None, only_2d=True, concat_axes=None, pools={}, global_extent={}, global_area={},
    ),
    # issue 23: Arm Ethos-U55/U65 by Vela 5.2.0's SUPPORTED_OPS.md: depthwise strides 1..3;
    # MAX_POOL_2D kernels to 256; AVERAGE_POOL_2D padded only to 8x8 and stride 3, VALID to
    # 256; its GAP (MEAN) is native but measured dearer than the rewrite: not native here.
    "ethos-u": dict(
        ops={"Conv", "Relu", "Add", "Concat"},
        kernel=None, stride=(1, 3), dilation=(1, 1), pad=None, pad_below_kernel=False, equal_strides=False,
        depthwise=None, only_2d=True, concat_axes=None,
        pools={
            "MaxPool": dict(kernel=(1, 256), ceil=False, dilation=False, only_2d=True),
            "AveragePool": dict(kernel=(1, 256), padded_kernel=(1, 8), padded_stride=(1, 3), ceil=False, dilation=False, only_2d=True),
        },
        global_extent={}, global_area={},
    ),
    # The user profile file: Conv, Relu, Add (no Concat), kernels <= 5, strides <= 2,
    # no dilation, pads below the kernel, nothing native.
    "user": dict(
        ops={"Conv", "Relu", "Add"},
        kernel=(1, 5), stride=(1, 2), dilation=(1, 1), pad=None, pad_below_kernel=True, equal_strides=False,
        depthwise=None, only_2d=False, concat_axes=None, pools={}, global_extent={}, global_area={},
    ),
    # A user profile whose native pools take no padding at all (issue 22): a SAME pool
    # is native exactly where its resolved pads are zero.
    "user-pools": dict(
        ops={"Conv", "Relu", "Add", "Concat"},
        kernel=(1, 5), stride=(1, 2), dilation=(1, 1), pad=None, pad_below_kernel=True, equal_strides=False,
        depthwise=None, only_2d=False, concat_axes=None,
        pools={
            "MaxPool": dict(kernel=(1, 3), stride=(1, 2), pad=(0, 0), ceil=False, dilation=False),
            "AveragePool": dict(kernel=(1, 3), stride=(1, 2), pad=(0, 0), ceil=False, dilation=False),
        },
        global_extent={}, global_area={},
    ),
}

USER_PROFILE_FILE = {
    "name": "user",
    "source": "the issue's user profile",
    "ops": ["Conv", "Relu", "Add"],
    "conv": {"kernel": [1, 5], "stride": [1, 2], "dilation": [1, 1], "pad_below_kernel": True},
}

USER_POOLS_PROFILE_FILE = {
    "name": "user-pools",
    "source": "tests/target_limits.py: native pools without padding",
    "ops": ["Conv", "Relu", "Add", "Concat"],
    "conv": {"kernel": [1, 5], "stride": [1, 2], "dilation": [1, 1], "pad_below_kernel": True},
    "pools": {
        "MaxPool": {"kernel": [1, 3], "stride": [1, 2], "pad": [0, 0], "ceil_mode": False, "dilation": False},
        "AveragePool": {"kernel": [1, 3], "stride": [1, 2], "pad": [0, 0], "ceil_mode": False, "dilation": False},
    },
}


def resolved_pads(attrs: dict, spatial: Optional[list]) -> Optional[list[int]]:
    """A pool's pads (begins, then ends) with auto_pad resolved as the ONNX spec says, on
    the input's spatial extents; None where SAME needs an extent that is not known."""
    kernel = list(attrs["kernel_shape"])
    rank = len(kernel)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return list(attrs.get("pads", [0] * 2 * rank))
    if spatial is None or len(spatial) != rank or not all(isinstance(n, int) and n > 0 for n in spatial):
        return None
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    begins, ends = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)  # out = ceil(n / s)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2  # the odd one at the end: UPPER
        begins.append(begin)
        ends.append(total - begin)
    return begins + ends


def _within(values, bounds) -> bool:
    return bounds is None or all(bounds[0] <= v <= bounds[1] for v in values)


def conv_breaks(name: str, kernel: list[int], strides: list[int], dilations: list[int], pads: list[int], group: int, channels: Optional[int]) -> list[str]:
    """What one Conv breaks of target ``name``'s conv limits."""
    t = LIMITS[name]
    rank, out = len(kernel), []
    for what, values in (("kernel", kernel), ("stride", strides), ("dilation", dilations), ("pad", pads)):
        if not _within(values, t[what]):
            out.append(f"{what} {values}")
    if t["pad_below_kernel"] and any(p >= kernel[i % rank] for i, p in enumerate(pads)):
        out.append(f"pads {pads} on a kernel of {kernel}")
    if t["equal_strides"] and len(set(strides)) > 1:
        out.append(f"unequal strides {strides}")
    if name in ("tidl", "tflite", "ethos-u") and any(d > 1 for d in dilations) and any(s > 1 for s in strides):
        out.append(f"dilation {dilations} with stride {strides}")  # "dilation only without stride"
    if t["only_2d"] and rank != 2:
        out.append(f"{rank}-D conv")
    depthwise = channels is not None and group == channels
    if t["depthwise"] is not None and depthwise and rank == 2:
        if len(set(strides)) > 1 or (kernel[0], kernel[1], strides[0]) not in t["depthwise"]:
            out.append(f"depthwise {kernel} stride {strides}")
    return out


def pool_breaks(name: str, node: onnx.NodeProto, spatial: Optional[list[int]]) -> list[str]:
    """What a pool node breaks of what target ``name`` runs natively, its auto_pad
    resolved to pads on ``spatial`` first."""
    t = LIMITS[name]
    op = node.op_type
    if op.startswith("Global"):
        if op not in t["global_extent"] and op not in t["global_area"]:
            return [f"{op} not native"]
        if spatial is None:
            return []
        out = []
        if op in t["global_extent"] and max(spatial) > t["global_extent"][op]:
            out.append(f"{op} extent {spatial}")
        area = 1
        for n in spatial:
            area *= n
        if op in t["global_area"] and area > t["global_area"][op]:
            out.append(f"{op} area {area}")
        return out
    native = t["pools"].get(op)
    if native is None:
        return [f"{op} not native"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = list(attrs["kernel_shape"])
    rank = len(kernel)
    strides = list(attrs.get("strides", [1] * rank))
    pads = resolved_pads(attrs, spatial)  # what the compiler judges: auto_pad resolved
    out = []
    if pads is None:
        return ["auto_pad SAME on dynamic extents"]
    if not native.get("ceil", True) and attrs.get("ceil_mode", 0):
        out.append("ceil_mode")
    if not native.get("dilation", True) and any(d != 1 for d in attrs.get("dilations", [1] * rank)):
        out.append("dilation")
    if "cip" in native and op == "AveragePool" and attrs.get("count_include_pad", 0) != native["cip"]:
        out.append("count_include_pad")
    if native.get("only_2d") and rank != 2:
        out.append(f"{rank}-D pool")
    if "windows" in native:
        if len(set(kernel)) > 1 or len(set(strides)) > 1 or (kernel[0], strides[0]) not in native["windows"]:
            out.append(f"window {kernel} s{strides}")
    for what, values in (("kernel", kernel), ("stride", strides), ("pad", pads)):
        if not _within(values, native.get(what)):
            out.append(f"pool {what} {values}")
    if any(pads):  # a padded pool's own limits (ethos-u: Vela's SAME-padding average)
        for what, values in (("padded_kernel", kernel), ("padded_stride", strides)):
            if not _within(values, native.get(what)):
                out.append(f"pool {what} {values}")
    return out


def outside(original: onnx.ModelProto, written: onnx.ModelProto, name: str) -> list[str]:
    """What the nodes ``written`` added to ``original`` break of target ``name``."""
    t = LIMITS[name]
    own = {n.name for n in original.graph.node}
    weights = {i.name: list(i.dims) for i in written.graph.initializer}
    # A quantized rewrite (issue 16) reads its weights as an initializer through
    # DequantizeLinear, and adds Q/DQ in a QDQ region whatever the target's ops.
    dequantized = {n.output[0]: n.input[0] for n in written.graph.node if n.op_type == "DequantizeLinear"}
    weights.update({out: weights[src] for out, src in dequantized.items() if src in weights})
    quantized = {"QuantizeLinear", "DequantizeLinear"} if dequantized.keys() & {i for n in original.graph.node for i in n.input} else set()
    inferred = onnx.shape_inference.infer_shapes(written)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    broken = []
    for node in written.graph.node:
        if node.name in own:
            continue
        op = node.op_type
        if op in ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"):
            shape = shapes.get(node.input[0])
            broken += [f"{node.name}: {why}" for why in pool_breaks(name, node, shape[2:] if shape else None)]
            continue
        if op not in t["ops"] | quantized:
            broken.append(f"{node.name}: op {op}")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "Conv":
            assert attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            kernel = weights[node.input[1]][2:]
            rank = len(kernel)
            shape = shapes.get(node.input[0])
            channels = shape[1] if shape else None
            why = conv_breaks(
                name, kernel, list(attrs.get("strides", [1] * rank)), list(attrs.get("dilations", [1] * rank)),
                list(attrs.get("pads", [0] * 2 * rank)), attrs.get("group", 1), channels,
            )
            broken += [f"{node.name}: {w}" for w in why]
        if op == "Concat" and t["concat_axes"] is not None:
            shape = shapes.get(node.input[0])
            axis = attrs["axis"] % len(shape) if shape else attrs["axis"]
            if axis not in t["concat_axes"]:
                broken.append(f"{node.name}: concat axis {axis}")
    return broken
