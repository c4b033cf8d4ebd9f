"""QDQ models as onnxruntime's quantizer writes them (issue 16).

Small float CNNs are built in code (:mod:`onnx.helper` + numpy, fixed seeds,
He-initialised weights) and quantized with ``onnxruntime.quantization.quantize_static``
in QDQ format, optionally after ``quant_pre_process``. Nothing is cached on disk
across runs: each model is built and quantized in a temporary folder.

=====================  =======================================================
``resnet_stem``        Conv 7x7/s2/p3 + BatchNormalization (as an unfused export
                       has it: ``quant_pre_process`` folds it) + Relu + MaxPool
                       3x3/s2/p1, then a 1x1 Conv head (32x32 input, 8 channels).
``sppf``               SPPF on a signed input: Conv 1x1 + SiLU (x*Sigmoid(x)),
                       3 chained MaxPool 5x5/s1/p2, Concat of the four, Conv 1x1.
``vgg_densenet``       VGG block (2 Conv 3x3 + Relu, MaxPool 2x2/s2), a DenseNet
                       transition AveragePool 2x2/s2, Conv, GlobalAveragePool
                       over 8x8, Flatten, Gemm.
``inception``          Stem to 7x7, then an Inception block: 1x1, 3x3,
                       MaxPool 3x3/s1/p1 -> 1x1, AveragePool 3x3/s1/p1
                       count_include_pad=0 -> 1x1, Concat; GlobalAveragePool
                       over 7x7, Flatten, Gemm.
``se_ocr``             A PP-OCR-like recognizer: SE blocks, CRNN (2, 1) max pools,
                       a height mean, a Softmax head.
``ppocr_rec``          A PP-OCR-recognizer-like head with its AveragePool 3x2/s(3,2)
                       (6 values per window: ties reachable at one scale), a
                       GlobalAveragePool, Gemm.
=====================  =======================================================

:func:`quantize` quantizes one of them (:data:`ACTIVATIONS` ``"int8"`` or
``"uint8"``; weights always int8, per channel or per tensor; with or without
``quant_pre_process``); :func:`rescale_after_pool` makes the QDQ model whose pool
output has a scale different from its input's (the QuantizeLinear after a MaxPool
given another scale); :func:`qdq_pools` lists the ``DQ -> pool -> Q`` patterns of a
quantized model, and :func:`integer_suites` feeds that exercise rounding ties.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
ACTIVATIONS = ("int8", "uint8")
# Calibration samples: few, so a builder takes well under a second.
CALIBRATION_SAMPLES = 4
# The float compute ops a rewrite may add: each must read dequantized data.
FLOAT_OPS = {"Conv", "Add", "Concat", "Relu", "Max", "Pad", "MaxPool"}


class _Graph:
    """A tiny graph builder: seeded He-initialised convs and named nodes."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, op: str) -> str:
        self.count += 1
        return f"{op.lower()}{self.count}"

    def weight(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def weight_int64(self, name: str, values: list[int]) -> str:
        self.inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def op(self, op: str, inputs: list[str], name: Optional[str] = None, **attrs) -> str:
        name = name or self._name(op)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: Optional[int] = None, name: Optional[str] = None) -> str:
        name = name or self._name("Conv")
        fan_in = cin * k * k
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(cout) * 0.1
        pad = k // 2 if pad is None else pad
        return self.op(
            "Conv", [x, self.weight(f"{name}.w", w), self.weight(f"{name}.b", b)], name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
        )

    def batchnorm(self, x: str, channels: int, name: str) -> str:
        """A BatchNormalization node as an unfused export has it (quant_pre_process folds it into the conv)."""
        scale, bias = 1 + 0.1 * self.rng.standard_normal(channels), 0.1 * self.rng.standard_normal(channels)
        mean, var = 0.1 * self.rng.standard_normal(channels), 1 + 0.1 * np.abs(self.rng.standard_normal(channels))
        names = [self.weight(f"{name}.{k}", v) for k, v in zip(("scale", "bias", "mean", "var"), (scale, bias, mean, var))]
        return self.op("BatchNormalization", [x, *names], name)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def silu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.standard_normal((cout, cin)) * np.sqrt(2.0 / cin)
        b = self.rng.standard_normal(cout) * 0.1
        return self.op("Gemm", [x, self.weight("head.w", w), self.weight("head.b", b)], "logits", transB=1)

    def model(self, name: str, shape: tuple[int, ...], output: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


def resnet_stem(seed: int = 0) -> onnx.ModelProto:
    """Conv 7x7/s2/p3 (3 -> 8) + BatchNormalization (unfused) + Relu + MaxPool 3x3/s2/p1 on
    32x32, then a 1x1 Conv head."""
    g = _Graph(seed)
    y = g.relu(g.batchnorm(g.conv("x", 3, 8, 7, stride=2, name="stem/conv"), 8, "stem/bn"))
    y = g.op("MaxPool", [y], "stem/maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    out = g.conv(y, 8, 8, 1, name="head")
    return g.model("resnet_stem", (1, 3, 32, 32), out)


def sppf(seed: int = 0) -> onnx.ModelProto:
    """YOLO's SPPF on a signed input: Conv 1x1 + SiLU (its min is about -0.28, so the
    pools see negative values), 3 chained MaxPool 5x5/s1/p2, Concat, Conv 1x1."""
    g = _Graph(seed)
    y = g.silu(g.conv("x", 4, 8, 1, name="sppf/cv1"))
    pools = [y]
    for i in range(3):
        pools.append(g.op("MaxPool", [pools[-1]], f"sppf/m{i}", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    cat = g.op("Concat", pools, "sppf/concat", axis=1)
    out = g.conv(cat, 32, 8, 1, name="sppf/cv2")
    return g.model("sppf", (1, 4, 32, 32), out)


def vgg_densenet(seed: int = 0) -> onnx.ModelProto:
    """VGG block on 32x32 (Conv 3x3 + Relu twice, MaxPool 2x2/s2), a DenseNet transition
    (Conv 1x1, AveragePool 2x2/s2), Conv 3x3 + Relu, GlobalAveragePool over 8x8, Flatten, Gemm."""
    g = _Graph(seed)
    y = g.relu(g.conv("x", 3, 8, 3, name="vgg/conv1"))
    y = g.relu(g.conv(y, 8, 8, 3, name="vgg/conv2"))
    y = g.op("MaxPool", [y], "vgg/maxpool", kernel_shape=[2, 2], strides=[2, 2])
    y = g.relu(g.conv(y, 8, 16, 1, name="dense/transition"))
    y = g.op("AveragePool", [y], "dense/avgpool", kernel_shape=[2, 2], strides=[2, 2])
    y = g.relu(g.conv(y, 16, 16, 3, name="vgg/conv3"))
    y = g.op("GlobalAveragePool", [y], "head/gap")
    y = g.op("Flatten", [y], "head/flatten", axis=1)
    return g.model("vgg_densenet", (1, 3, 32, 32), g.gemm(y, 16, 10))


def inception(seed: int = 0) -> onnx.ModelProto:
    """Stem Conv 3x3/s2 + Relu + MaxPool 2x2/s2 (28 -> 7), an Inception block (1x1; 3x3;
    MaxPool 3x3/s1/p1 -> 1x1; AveragePool 3x3/s1/p1 count_include_pad=0 -> 1x1; Concat),
    GlobalAveragePool over 7x7, Flatten, Gemm."""
    g = _Graph(seed)
    y = g.relu(g.conv("x", 3, 8, 3, stride=2, name="stem/conv"))
    y = g.op("MaxPool", [y], "stem/maxpool", kernel_shape=[2, 2], strides=[2, 2])
    b1 = g.relu(g.conv(y, 8, 4, 1, name="inc/b1"))
    b2 = g.relu(g.conv(y, 8, 4, 3, name="inc/b2"))
    m = g.op("MaxPool", [y], "inc/maxpool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    b3 = g.relu(g.conv(m, 8, 4, 1, name="inc/b3"))
    a = g.op("AveragePool", [y], "inc/avgpool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    b4 = g.relu(g.conv(a, 8, 4, 1, name="inc/b4"))
    y = g.op("Concat", [b1, b2, b3, b4], "inc/concat", axis=1)
    y = g.op("GlobalAveragePool", [y], "head/gap")
    y = g.op("Flatten", [y], "head/flatten", axis=1)
    return g.model("inception", (1, 3, 28, 28), g.gemm(y, 16, 10))


def se_ocr(seed: int = 0) -> onnx.ModelProto:
    """A PP-OCR-like recognizer on 32x64: stem Conv + HardSwish-like SiLU, four SE blocks
    (GlobalAveragePool -> 1x1 -> Relu -> 1x1 -> Sigmoid -> Mul), CRNN MaxPools with
    strides (2, 1) between them, a GlobalAveragePool over the height, a Softmax head."""
    g = _Graph(seed)
    y = g.silu(g.conv("x", 3, 8, 3, stride=2, name="ocr/stem"))
    for i in range(4):
        y = g.relu(g.conv(y, 8, 8, 3, name=f"ocr/b{i}/conv"))
        s = g.op("GlobalAveragePool", [y], f"ocr/b{i}/se/gap")
        s = g.op("Sigmoid", [g.conv(g.relu(g.conv(s, 8, 4, 1, name=f"ocr/b{i}/se/fc1")), 4, 8, 1, name=f"ocr/b{i}/se/fc2")])
        y = g.op("Mul", [y, s], f"ocr/b{i}/se/mul")
        if i < 2:
            y = g.op("MaxPool", [y], f"ocr/b{i}/pool", kernel_shape=[2, 2], strides=[2, 1], pads=[0, 0, 0, 1])
    y = g.op("ReduceMean", [y], "ocr/height_mean", axes=[2], keepdims=0)
    y = g.conv(g.op("Unsqueeze", [y, g.weight_int64("ocr/axes", [2])], "ocr/unsqueeze"), 8, 12, 1, name="ocr/head")
    return g.model("se_ocr", (1, 3, 32, 64), g.op("Softmax", [y], "ocr/softmax", axis=1))


def ppocr_rec(seed: int = 0) -> onnx.ModelProto:
    """A PP-OCR-recognizer-like head on 24x48: stem Conv 3x3/s2 + Relu, Conv 3x3 + Relu,
    CRNN MaxPool 2x2 with strides (2, 1), an AveragePool 3x2/s(3, 2) (6 values per window,
    as PP-OCRv4's recognizer has), Conv 1x1 + Relu, GlobalAveragePool, Flatten, Gemm."""
    g = _Graph(seed)
    y = g.relu(g.conv("x", 3, 8, 3, stride=2, name="rec/stem"))
    y = g.relu(g.conv(y, 8, 8, 3, name="rec/conv"))
    y = g.op("MaxPool", [y], "rec/pool", kernel_shape=[2, 2], strides=[2, 1])
    y = g.op("AveragePool", [y], "rec/avgpool", kernel_shape=[3, 2], strides=[3, 2])
    y = g.relu(g.conv(y, 8, 16, 1, name="rec/neck"))
    y = g.op("GlobalAveragePool", [y], "head/gap")
    y = g.op("Flatten", [y], "head/flatten", axis=1)
    return g.model("ppocr_rec", (1, 3, 24, 48), g.gemm(y, 16, 10))


def random_net(seed: int) -> onnx.ModelProto:
    """A seeded random deep CNN: a stem (Relu or SiLU), 2 to 4 blocks drawn from max pools
    (ceil_mode too), averages (count_include_pad 0 or 1), SPPF, SE blocks and convs, then a
    global max or average, Flatten and Gemm."""
    rng = np.random.default_rng(seed)
    g = _Graph(seed)
    channels, size = int(rng.choice([4, 8])), int(rng.choice([16, 20, 24, 32]))
    y = g.conv("x", 3, channels, 3)
    y = g.relu(y) if rng.random() < 0.6 else g.silu(y)
    extent = size
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.choice(["max", "avg", "sppf", "se", "maxceil", "conv"])
        if kind == "max" and extent >= 4:
            k, s = int(rng.choice([2, 3])), int(rng.choice([1, 2]))
            p = k // 2 if rng.random() < 0.5 else 0
            y = g.op("MaxPool", [y], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
            extent = (extent + 2 * p - k) // s + 1
        elif kind == "maxceil" and extent >= 4:
            y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
            extent = -(-(extent - 3) // 2) + 1
        elif kind == "avg" and extent >= 4:
            k = int(rng.choice([2, 3]))
            y = g.op("AveragePool", [y], kernel_shape=[k, k], strides=[k, k], count_include_pad=int(rng.random() < 0.5))
            extent = (extent - k) // k + 1
        elif kind == "sppf":
            pools = [y]
            for _ in range(3):
                pools.append(g.op("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2] * 4))
            y = g.conv(g.op("Concat", pools, axis=1), 4 * channels, channels, 1)
        elif kind == "se":
            half = max(channels // 2, 1)
            squeeze = g.op("GlobalAveragePool", [y])
            y = g.op("Mul", [y, g.op("Sigmoid", [g.conv(g.relu(g.conv(squeeze, channels, half, 1)), half, channels, 1)])])
        else:
            y = g.relu(g.conv(y, channels, channels, 3))
    y = g.op("GlobalMaxPool" if rng.random() < 0.3 else "GlobalAveragePool", [y])
    return g.model("random_net", (1, 3, size, size), g.gemm(g.op("Flatten", [y], axis=1), channels, 10))


BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet_stem": resnet_stem,
    "sppf": sppf,
    "vgg_densenet": vgg_densenet,
    "inception": inception,
    "se_ocr": se_ocr,
    "ppocr_rec": ppocr_rec,
}


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims)


class _SeededReader:
    """A CalibrationDataReader of ``count`` seeded signed-normal batches."""

    def __init__(self, shape: tuple[int, ...], seed: int, count: int = CALIBRATION_SAMPLES) -> None:
        rng = np.random.default_rng(seed)
        self._batches = iter([{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._batches, None)


@dataclass(frozen=True)
class Quantization:
    """How :func:`quantize` quantizes a model."""

    activation: str = "int8"  # "int8" or "uint8"
    per_channel: bool = True
    preprocess: bool = False

    @property
    def label(self) -> str:
        return f"{self.activation}-{'per-channel' if self.per_channel else 'per-tensor'}{'-pre' if self.preprocess else ''}"


# The acceptance's grid (per-channel int8 weights, both activation types), and the wider one.
ACCEPTANCE = [Quantization(a, True, p) for a in ACTIVATIONS for p in (False, True)]
GRID = [Quantization(a, pc, p) for a in ACTIVATIONS for pc in (True, False) for p in (False, True)]


def quantize(model: onnx.ModelProto, how: Quantization = Quantization(), seed: int = 0) -> onnx.ModelProto:
    """``model`` through onnxruntime's ``quantize_static`` (QDQ format, MinMax calibration
    on :data:`CALIBRATION_SAMPLES` seeded batches, int8 weights), after
    ``quant_pre_process`` (without symbolic shape inference: no sympy) when asked."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    activation = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[how.activation]
    with tempfile.TemporaryDirectory(prefix="qdq-") as folder:
        source = Path(folder) / "float.onnx"
        onnx.save(model, source)
        if how.preprocess:
            prepared = Path(folder) / "pre.onnx"
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            source = prepared
        target = Path(folder) / "qdq.onnx"
        quantize_static(
            str(source), str(target), _SeededReader(input_shape(model), seed), quant_format=QuantFormat.QDQ,
            activation_type=activation, weight_type=QuantType.QInt8, per_channel=how.per_channel,
        )
        return onnx.load(target)


def quantized(name: str, how: Quantization = Quantization(), seed: int = 0) -> onnx.ModelProto:
    """Builder ``name`` quantized as ``how`` says."""
    return quantize(BUILDERS[name](seed), how, seed)


# -- what the quantizer wrote ------------------------------------------------------


@dataclass(frozen=True)
class QdqPool:
    """A pool between a DequantizeLinear and QuantizeLinear node(s)."""

    pool: onnx.NodeProto
    dequantize: onnx.NodeProto
    quantize: list[onnx.NodeProto]
    input_scale: float
    input_zero_point: int
    output_scales: list[float]
    output_zero_points: list[int]
    dtype: np.dtype  # of the integers


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def qdq_pools(model: onnx.ModelProto) -> list[QdqPool]:
    """Every pool node whose input is a DequantizeLinear output and whose output feeds only QuantizeLinear."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found = []
    for node in model.graph.node:
        if node.op_type not in POOL_OPS:
            continue
        dq = made_by.get(node.input[0])
        qs = readers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or not qs or any(q.op_type != "QuantizeLinear" for q in qs):
            continue
        zp = _constant(model, dq.input[2])
        found.append(QdqPool(
            node, dq, qs, float(_constant(model, dq.input[1])), int(zp),
            [float(_constant(model, q.input[1])) for q in qs], [int(_constant(model, q.input[2])) for q in qs], zp.dtype,
        ))
    return found


def rescale_after_pool(model: onnx.ModelProto, pool: Optional[str] = None, factor: float = 1.5) -> onnx.ModelProto:
    """A copy of quantized ``model`` whose QuantizeLinear after a MaxPool (``pool`` by node
    name, default the first) has ``factor`` times its scale, as its own initializer;
    the DequantizeLinear readers of that Q get the same scale, so the model stays consistent."""
    new = onnx.ModelProto()
    new.CopyFrom(model)
    site = next(p for p in qdq_pools(new) if p.pool.op_type == "MaxPool" and (pool is None or p.pool.name == pool))
    q = site.quantize[0]
    name = f"{q.output[0]}_rescaled_scale"
    new.graph.initializer.append(numpy_helper.from_array(np.array(site.output_scales[0] * factor, np.float32), name))
    q.input[1] = name
    for n in new.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]:
            n.input[1] = name
    return new


# -- inputs ----------------------------------------------------------------------------


def integer_suites(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for ``x``: signed normal, all negative, integers in -10..10, halves (ties
    at every rounding), and wide (x 8) so that activations saturate."""
    shape = input_shape(model)
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal(shape).astype(np.float32)
    return {
        "signed-normal": normal,
        "all-negative": -np.abs(normal) - 0.25,
        "tie-heavy-int": rng.integers(-10, 11, shape).astype(np.float32),
        "halves": (rng.integers(-8, 9, shape) / 2).astype(np.float32),
        "saturating": (normal * 8).astype(np.float32),
    }


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimization: str = "ORT_DISABLE_ALL") -> list[np.ndarray]:
    """``model`` on onnxruntime's CPU provider at graph-optimization level ``optimization``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def quantized_structure(original: onnx.ModelProto, written: onnx.ModelProto) -> list[str]:
    """What breaks the issue's rules among the nodes the rewrite added: read from the graph."""
    own = {n.name for n in original.graph.node}
    producer = {o: n for n in written.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in written.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    inits = {t.name: t for t in written.graph.initializer}
    broken = []
    for n in written.graph.node:
        if n.name in own:
            continue
        made = lambda t: producer[t].op_type if t in producer else "input"  # noqa: E731
        if n.op_type == "Conv":
            data, weight = n.input[0], n.input[1]
            if made(data) != "DequantizeLinear":
                broken.append(f"{n.name}: data from {made(data)}")
            w = producer.get(weight)
            if w is None or w.op_type != "DequantizeLinear" or w.input[0] not in inits or inits[w.input[0]].data_type != TensorProto.INT8:
                broken.append(f"{n.name}: weights not an int8 initializer through DequantizeLinear")
        if n.op_type in ("Conv", "Add", "Concat"):
            after = readers.get(n.output[0], [])
            direct = after and all(r.op_type == "QuantizeLinear" for r in after)
            relu = len(after) == 1 and after[0].op_type == "Relu" and readers.get(after[0].output[0]) and all(
                r.op_type == "QuantizeLinear" for r in readers[after[0].output[0]])
            if not (direct or relu):
                broken.append(f"{n.name}: {n.op_type} result read by {[r.op_type for r in after]}")
        if n.op_type in FLOAT_OPS:  # no float op between Q/DQ pairs: every data input dequantized
            for t in n.input[:1] if n.op_type in ("Conv", "Pad") else n.input:
                ok = made(t) == "DequantizeLinear" or (n.op_type == "Relu" and made(t) in ("Conv", "Add"))
                if not ok:
                    broken.append(f"{n.name}: {n.op_type} reads {t} from {made(t)}")
    return broken
