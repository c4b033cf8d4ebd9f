#!/usr/bin/env python3
"""Build the small demo models under ``models/`` (deterministic, no downloads).

Every model is made with :mod:`onnx.helper` and numpy from fixed seeds, so two
runs write byte-identical files. Inputs are float32 with a dynamic batch dim
``N`` and static C/H/W; weights are random (signed), so pooled tensors hold
negative values unless a Relu comes first. Each model passes
``onnx.checker.check_model(full_check=True)`` and its inferred shapes are
checked against what onnxruntime actually produces.

What each model exercises:

``demo_cnn.onnx``
    The README quick start: a small classifier (32x32 input, 10 classes) with
    a ResNet-style MaxPool 3x3/s2/p1 after a Relu, an AveragePool 2x2/s2, a
    MaxPool 2x2/s2 on a plain Conv output (negative values), and a
    GlobalAveragePool before Flatten + Gemm.
``resnet_stem.onnx``
    Conv 7x7/s2/p3 -> Relu -> MaxPool 3x3/s2/p1: the most common pool in the wild.
``sppf.onnx``
    YOLOv5 SPPF: three chained MaxPool 5x5/s1/p2 on a plain Conv output (no
    Relu, so padding must never win a max), concatenated with their input.
``spp.onnx``
    YOLOv3 SPP: parallel MaxPool 5/9/13 (stride 1, pads 2/4/6) on one tensor.
``ceil_mode.onnx``
    Inception/Caffe-style ceil_mode=1 pools on an odd-height (15x16) map:
    MaxPool 3x3/s2, AveragePool 3x3/s2/p1 count_include_pad=0 and a
    VGG/SSD-style MaxPool 2x2/s2. The even width and the 2x2 pool make the
    last ceil window run past the input (the overhang must not count).
``avg_exclude_pad.onnx``
    AveragePool 3x3/s1/p1 with count_include_pad=0 (border windows divide by
    4 or 6) beside the same pool with count_include_pad=1 (always 9).
``dilated.onnx``
    MaxPool 3x3 with dilations [2, 2] and pads 2 (opset 17), and a strided
    MaxPool with per-axis dilations [2, 1].
``dilated_avg.onnx``
    AveragePool with dilations, which needs opset 19 (ir_version 9), with
    count_include_pad 0 and 1.
``pool1d.onnx``
    1-D: Conv1d -> MaxPool k3/s2/p1 -> AveragePool k2/s2 -> GlobalMaxPool on 4x31.
``pool3d.onnx``
    3-D: Conv3d -> MaxPool 2x2x2/s2 -> AveragePool 3x3x3/s1/p1
    count_include_pad=0 -> GlobalAveragePool on 4x8x8x8.
``global_pools.onnx``
    GlobalMaxPool and GlobalAveragePool of one Conv output, added together.
``kept_nodes.onnx``
    Nodes the rewriter must keep: a MaxPool whose Indices output feeds a
    MaxUnpool (SegNet-style), and an LpPool with p=2. A plain MaxPool next to
    them must still be rewritten.

Usage: ``python scripts/make_models.py [--out DIR]`` (default: ``models/`` in
the repository root).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OPSET = 17
IR_VERSION = {17: 8, 19: 9}
BATCH = "N"
PRODUCER = "onnx-poolrewrite/scripts/make_models.py"
REPO_ROOT = Path(__file__).resolve().parent.parent


# -- graph building -----------------------------------------------------------


@dataclass
class GraphBuilder:
    """Collects nodes and initializers; every helper returns its output name."""

    name: str
    seed: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    # inputs, outputs and weights
    def input(self, name: str, chw: Sequence[int]) -> str:
        """A float32 graph input of shape [N, *chw] with a dynamic batch."""
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *chw]))
        return name

    def output(self, *names: str) -> None:
        self.outputs.extend(names)

    def weight(self, name: str, shape: Sequence[int], fan_in: int) -> str:
        """A signed random float32 initializer, scaled like He initialization."""
        value = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op_type: str, name: str, inputs: Sequence[str], n_outputs: int = 1, **attrs: object) -> list[str]:
        """Add a node named ``name``; outputs are ``name`` (or ``name:i`` when several)."""
        outs = [name] if n_outputs == 1 else [f"{name}:{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs

    # layers
    def conv(
        self,
        name: str,
        x: str,
        c_in: int,
        c_out: int,
        kernel: Sequence[int],
        *,
        stride: int = 1,
        pad: Optional[int] = None,
        bias: bool = True,
    ) -> str:
        """Conv of any rank; ``pad`` defaults to "same" for odd kernels at stride 1."""
        rank = len(kernel)
        if pad is None:
            pad = (kernel[0] - 1) // 2
        fan_in = c_in * int(np.prod(kernel))
        w = self.weight(f"{name}.weight", [c_out, c_in, *kernel], fan_in)
        inputs = [x, w]
        if bias:
            b = self.rng.standard_normal(c_out) * 0.1
            self.initializers.append(numpy_helper.from_array(b.astype(np.float32), f"{name}.bias"))
            inputs.append(f"{name}.bias")
        return self.node(
            "Conv", name, inputs,
            kernel_shape=list(kernel), strides=[stride] * rank, pads=[pad] * (2 * rank),
        )[0]

    def relu(self, name: str, x: str) -> str:
        return self.node("Relu", name, [x])[0]

    def pool(
        self,
        op_type: str,
        name: str,
        x: str,
        kernel: Sequence[int],
        *,
        strides: Optional[Sequence[int]] = None,
        pads: Optional[Sequence[int]] = None,
        dilations: Optional[Sequence[int]] = None,
        ceil_mode: Optional[int] = None,
        count_include_pad: Optional[int] = None,
        with_indices: bool = False,
        **extra: object,
    ) -> str | list[str]:
        """MaxPool / AveragePool / LpPool; unset attributes are left at their defaults."""
        attrs: dict[str, object] = {"kernel_shape": list(kernel), **extra}
        for key, value in (
            ("strides", strides), ("pads", pads), ("dilations", dilations),
            ("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad),
        ):
            if value is not None:
                attrs[key] = list(value) if isinstance(value, (list, tuple)) else value
        outs = self.node(op_type, name, [x], n_outputs=2 if with_indices else 1, **attrs)
        return outs if with_indices else outs[0]

    def max_pool(self, name: str, x: str, kernel: Sequence[int], **kw: object) -> str:
        out = self.pool("MaxPool", name, x, kernel, **kw)  # type: ignore[arg-type]
        assert isinstance(out, str)
        return out

    def avg_pool(self, name: str, x: str, kernel: Sequence[int], **kw: object) -> str:
        out = self.pool("AveragePool", name, x, kernel, **kw)  # type: ignore[arg-type]
        assert isinstance(out, str)
        return out

    def global_pool(self, op_type: str, name: str, x: str) -> str:
        return self.node(op_type, name, [x])[0]

    # assembling
    def model(self, doc: str, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
        """The checked model, with inferred shapes that agree with onnxruntime."""
        outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in self.outputs]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outputs, initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            ir_version=IR_VERSION[opset],
            producer_name=PRODUCER,
            doc_string=doc,
        )
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        drop_shapes_onnxruntime_disagrees_with(model)
        onnx.checker.check_model(model, full_check=True)
        return model


# -- shape checks ---------------------------------------------------------------


def _dims(vi: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _agrees(declared: list[object], actual: Sequence[int], batch: int) -> bool:
    if len(declared) != len(actual):
        return False
    for d, a in zip(declared, actual):
        if isinstance(d, int) and d != a:
            return False
        if d == BATCH and a != batch:
            return False
    return True


def _clear_dims(vi: onnx.ValueInfoProto, actual: Sequence[int]) -> None:
    """Make every static dim that is wrong unknown (a wrong rank: all but N).

    The shape field itself stays: the checker requires one on graph outputs.
    """
    shape = vi.type.tensor_type.shape
    if len(shape.dim) != len(actual):
        del shape.dim[:]
        shape.dim.add().dim_param = BATCH
        for _ in actual[1:]:
            shape.dim.add()
        return
    for d, a in zip(shape.dim, actual):
        if d.HasField("dim_value") and d.dim_value != a:
            d.Clear()


def drop_shapes_onnxruntime_disagrees_with(model: onnx.ModelProto, batch: int = 2) -> list[str]:
    """Run every tensor through onnxruntime; unset inferred dims it contradicts.

    ONNX shape inference before opset 22 can get ceil_mode pools wrong; a wrong
    declared shape makes onnxruntime warn at run time, so we declare such dims
    unknown instead. Returns the names of the tensors that were changed.
    """
    import onnxruntime as ort  # only needed here

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, v.type.tensor_type.elem_type, None) for n, v in declared.items())
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the probe itself declares no shapes
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([batch, *[d.dim_value for d in i.type.tensor_type.shape.dim[1:]]]).astype(np.float32)
        for i in model.graph.input
    }
    changed = []
    for name, value in zip(declared, session.run(list(declared), feeds)):
        if not _agrees(_dims(declared[name]), value.shape, batch):
            _clear_dims(declared[name], value.shape)
            changed.append(name)
    return changed


# -- the models -----------------------------------------------------------------


def demo_cnn() -> onnx.ModelProto:
    g = GraphBuilder("demo_cnn", seed=1)
    x = g.input("image", [3, 32, 32])
    x = g.relu("stem/relu", g.conv("stem/conv", x, 3, 8, [3, 3]))
    x = g.max_pool("stem/maxpool", x, [3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 16x16
    x = g.relu("block1/relu", g.conv("block1/conv", x, 8, 8, [3, 3]))
    x = g.avg_pool("block1/avgpool", x, [2, 2], strides=[2, 2])  # 8x8
    x = g.conv("block2/conv", x, 8, 16, [3, 3])  # random, non-symmetric kernel; no Relu after it
    x = g.max_pool("block2/maxpool", x, [2, 2], strides=[2, 2])  # 4x4, signed input
    x = g.global_pool("GlobalAveragePool", "head/gap", x)
    x = g.node("Flatten", "head/flatten", [x], axis=1)[0]
    w = g.weight("head/fc.weight", [10, 16], 16)
    b = g.weight("head/fc.bias", [10], 16)
    g.output(g.node("Gemm", "logits", [x, w, b], transB=1)[0])
    return g.model("Small CNN classifier (3x32x32 -> 10 logits) with every common pool kind.")


def resnet_stem() -> onnx.ModelProto:
    g = GraphBuilder("resnet_stem", seed=2)
    x = g.input("image", [3, 32, 32])
    x = g.relu("stem/relu", g.conv("stem/conv", x, 3, 8, [7, 7], stride=2, pad=3))  # 16x16
    g.output(g.max_pool("stem/maxpool", x, [3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))  # 8x8
    return g.model("ResNet stem: Conv 7x7/s2/p3 -> Relu -> MaxPool 3x3/s2/p1.")


def sppf() -> onnx.ModelProto:
    g = GraphBuilder("sppf", seed=3)
    x = g.input("features", [8, 16, 16])
    x = g.conv("sppf/cv1", x, 8, 4, [1, 1])  # plain Conv output: signed
    pooled = [x]
    for i in range(1, 4):
        pooled.append(g.max_pool(f"sppf/m{i}", pooled[-1], [5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    y = g.node("Concat", "sppf/concat", pooled, axis=1)[0]
    g.output(g.conv("sppf/cv2", y, 16, 8, [1, 1]))
    return g.model("YOLOv5 SPPF block: three chained MaxPool 5x5/s1/p2 and a Concat.")


def spp() -> onnx.ModelProto:
    g = GraphBuilder("spp", seed=4)
    x = g.input("features", [8, 16, 16])
    x = g.conv("spp/cv1", x, 8, 4, [1, 1])
    pooled = [x] + [
        g.max_pool(f"spp/maxpool{k}", x, [k, k], strides=[1, 1], pads=[k // 2] * 4) for k in (5, 9, 13)
    ]
    y = g.node("Concat", "spp/concat", pooled, axis=1)[0]
    g.output(g.conv("spp/cv2", y, 16, 8, [1, 1]))
    return g.model("YOLOv3 SPP block: parallel MaxPool 5/9/13 at stride 1 and a Concat.")


def ceil_mode() -> onnx.ModelProto:
    g = GraphBuilder("ceil_mode", seed=5)
    x = g.input("features", [4, 15, 16])
    x = g.conv("stem/conv", x, 4, 8, [3, 3])  # 15x16, signed
    m = g.max_pool("mixed/maxpool", x, [3, 3], strides=[2, 2], ceil_mode=1)  # 7x8 (overhang on W)
    a = g.avg_pool(
        "mixed/avgpool", x, [3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=0
    )  # 8x9 (overhang on W)
    m = g.max_pool("head/maxpool", m, [2, 2], strides=[2, 2], ceil_mode=1)  # 4x4 (overhang on H)
    g.output(m, a)
    return g.model("ceil_mode=1 pools on a 15x16 map, including windows that run past the input.")


def avg_exclude_pad() -> onnx.ModelProto:
    return _avg_both_divisors(
        "avg_exclude_pad", 6, "branch", dict(strides=[1, 1], pads=[1, 1, 1, 1]),
        "AveragePool 3x3/s1/p1 with count_include_pad 0 (Inception) and 1.",
    )


def _avg_both_divisors(name: str, seed: int, scope: str, attrs: dict, doc: str, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """One 3x3 AveragePool with ``attrs``, side by side with count_include_pad 0 and 1."""
    g = GraphBuilder(name, seed=seed)
    x = g.input("features", [4, 16, 16])
    x = g.conv("stem/conv", x, 4, 8, [3, 3])
    excl = g.avg_pool(f"{scope}/avgpool_exclude_pad", x, [3, 3], count_include_pad=0, **attrs)
    incl = g.avg_pool(f"{scope}/avgpool_include_pad", x, [3, 3], count_include_pad=1, **attrs)
    g.output(g.node("Concat", f"{scope}/concat", [excl, incl], axis=1)[0])
    return g.model(doc, opset=opset)


def dilated() -> onnx.ModelProto:
    g = GraphBuilder("dilated", seed=7)
    x = g.input("features", [4, 16, 16])
    x = g.conv("stem/conv", x, 4, 8, [3, 3])
    x = g.max_pool("dilated/maxpool", x, [3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])  # 16x16
    x = g.max_pool("dilated/maxpool_s2", x, [3, 3], strides=[2, 2], dilations=[2, 1], pads=[2, 1, 2, 1])  # 8x8
    g.output(x)
    return g.model("MaxPool with dilations (opset 17): d2x2/p2 and a strided d2x1.")


def dilated_avg() -> onnx.ModelProto:
    return _avg_both_divisors(
        "dilated_avg", 8, "dilated", dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
        "AveragePool with dilations [2, 2] (needs opset 19), count_include_pad 0 and 1.", opset=19,
    )


def pool1d() -> onnx.ModelProto:
    g = GraphBuilder("pool1d", seed=9)
    x = g.input("signal", [4, 31])
    x = g.conv("stem/conv1d", x, 4, 8, [3])  # 31, signed
    x = g.max_pool("stem/maxpool1d", x, [3], strides=[2], pads=[1, 1])  # 16
    x = g.avg_pool("block/avgpool1d", x, [2], strides=[2])  # 8
    g.output(g.global_pool("GlobalMaxPool", "head/globalmaxpool", x))
    return g.model("1-D pools: MaxPool k3/s2/p1, AveragePool k2/s2, GlobalMaxPool.")


def pool3d() -> onnx.ModelProto:
    g = GraphBuilder("pool3d", seed=10)
    x = g.input("volume", [4, 8, 8, 8])
    x = g.conv("stem/conv3d", x, 4, 4, [3, 3, 3])  # 8x8x8, signed
    x = g.max_pool("stem/maxpool3d", x, [2, 2, 2], strides=[2, 2, 2])  # 4x4x4
    x = g.avg_pool("block/avgpool3d", x, [3, 3, 3], strides=[1, 1, 1], pads=[1] * 6, count_include_pad=0)
    g.output(g.global_pool("GlobalAveragePool", "head/gap3d", x))
    return g.model("3-D pools: MaxPool 2x2x2/s2, AveragePool 3x3x3/s1/p1 exclude-pad, GlobalAveragePool.")


def global_pools() -> onnx.ModelProto:
    g = GraphBuilder("global_pools", seed=11)
    x = g.input("features", [4, 16, 16])
    x = g.conv("stem/conv", x, 4, 8, [3, 3])
    gmp = g.global_pool("GlobalMaxPool", "head/globalmaxpool", x)
    gap = g.global_pool("GlobalAveragePool", "head/globalavgpool", x)
    g.output(g.node("Add", "head/add", [gmp, gap])[0])
    return g.model("GlobalMaxPool + GlobalAveragePool of the same Conv output.")


def kept_nodes() -> onnx.ModelProto:
    g = GraphBuilder("kept_nodes", seed=12)
    x = g.input("features", [4, 16, 16])
    x = g.conv("stem/conv", x, 4, 8, [3, 3])
    pooled, indices = g.pool("MaxPool", "encoder/maxpool_with_indices", x, [2, 2], strides=[2, 2], with_indices=True)
    unpooled = g.node(
        "MaxUnpool", "decoder/maxunpool", [pooled, indices], kernel_shape=[2, 2], strides=[2, 2]
    )[0]  # 16x16: the Indices output is used, so this MaxPool must be kept
    lp = g.pool("LpPool", "side/lppool", x, [2, 2], strides=[2, 2], p=2)  # not piecewise-linear: kept
    plain = g.max_pool("side/maxpool", x, [2, 2], strides=[2, 2])  # an ordinary pool: rewritten
    assert isinstance(lp, str)
    g.output(unpooled, g.node("Add", "side/add", [lp, plain])[0])
    return g.model("A MaxPool with a used Indices output and an LpPool (both kept), and a plain MaxPool.")


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "demo_cnn": demo_cnn,
    "resnet_stem": resnet_stem,
    "sppf": sppf,
    "spp": spp,
    "ceil_mode": ceil_mode,
    "avg_exclude_pad": avg_exclude_pad,
    "dilated": dilated,
    "dilated_avg": dilated_avg,
    "pool1d": pool1d,
    "pool3d": pool3d,
    "global_pools": global_pools,
    "kept_nodes": kept_nodes,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        model = build()
        path = args.out / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        opset = model.opset_import[0].version
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"{str(shown):<28} {path.stat().st_size:>6} bytes  opset {opset}  {len(model.graph.node):>2} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
