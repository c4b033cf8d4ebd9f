"""Deep random-weight stand-ins for the real models people deploy (issue 13).

Each builder returns an ``onnx.ModelProto`` built with :mod:`onnx.helper` and
numpy from a fixed seed, shaped like what a real exporter writes:

==========================  ===================================================
``yolo_sppf_detector``      YOLOv5/v8-style: 25 convs with SiLU (x*Sigmoid(x)),
                            stride-2 path to /16, residual bottlenecks, SPPF
                            (3 chained MaxPool 5/s1/p2 + Concat), FPN Resize,
                            two-level heads: raw ``boxes`` and sigmoid ``scores``.
``ocr_se_recognizer``       PP-OCR-rec-style MobileNetV3: 8 depthwise blocks,
                            each with an SE block (GlobalAveragePool -> Conv ->
                            Relu -> Conv -> HardSigmoid -> Mul), CRNN-style
                            asymmetric MaxPools (3,1)/s(2,1) and (2,2)/s(2,1)/p(0,1),
                            an AveragePool (2,3)/s(2,1) count_include_pad=0,
                            BatchNormalization nodes kept, a softmax over classes.
``keras_nhwc_classifier``   tf2onnx-style: NHWC input + Transpose to NCHW,
                            MaxPool 2x2/s2, AveragePool 3x3/s1 SAME_UPPER
                            count_include_pad=0, MaxPool 3x3/s2 SAME_UPPER
                            (asymmetric pads), GlobalAveragePool, softmax.
``paddle_det``              paddle2onnx DB-style: ``x`` declared ``[-1, 3, -1, -1]``
                            (or ``?`` for H and W), ResNet-vd stem MaxPool 3x3/s2/p1,
                            vd shortcuts AveragePool 2x2/s2 ceil_mode=1, two SE
                            blocks, BatchNormalization nodes, Shape-driven Resize
                            FPN, sigmoid probability map.
``mtcnn_pnet``              MTCNN P-Net: Conv, PRelu, MaxPool 3x3/s2 ceil_mode=1
                            (the ceil adds a window at the default size), softmax
                            ``prob1`` and raw ``conv4-2`` boxes.
``text_1d_classifier``      Magika-style: int64 ``input_ids`` -> Gather embedding ->
                            Transpose -> Conv1d -> MaxPool1d k3/s2/p1 (on the signed
                            conv output) -> Conv1d x2 -> GlobalMaxPool ->
                            Gemm -> Softmax.
==========================  ===================================================

Global pools written as reductions (issue 22), in :data:`REDUCTION_BUILDERS`:

==========================  ===================================================
``tf2onnx_resnet_head``     NHWC input, Transpose, conv trunk, Transpose back,
                            ReduceMean axes (1, 2) keepdims 0, MatMul + Softmax.
``keras2onnx_gmp``          Transpose -> ReduceMax axes (1, 2) of a signed conv output.
``opset9_split_max``        opset 9: ReduceMax axis 3, then axis 2 (keepdims 1).
``channels_last_audio``     no batch dim, opset 18: [T, F, C] ReduceMean axes (0, 1)
                            from a Constant node, keepdims 0.
``nhwc_audio_opset18``      opset 18: NHWC ReduceMean axes (1, 2) from an initializer.
==========================  ===================================================

Every builder takes ``dynamic`` (declare batch and spatial dims dynamic, as
the real exports do) and ``size`` (the static shape the model is deployed at:
an image side, or a text width / sequence length), plus ``seed``. The static
shape that ``size`` means is recorded in the model's metadata and read back by
:func:`deploy_shapes` / :func:`overwrite_input_shape_args`, so a test can say::

    model = realistic.paddle_det(dynamic=True)
    args = realistic.overwrite_input_shape_args(model)  # ["--overwrite-input-shape", "x:1,3,72,72"]

Weights are realistic rather than tiny: He-initialised convs, BatchNorm whose
running statistics are calibrated on a signed-normal batch (then perturbed a
little, as trained statistics never match the data exactly), so activations
stay O(1) through depth; BatchNorm is folded into the convs where real
exporters fold it (PyTorch, tf2onnx) and kept as nodes where they do not
(paddle2onnx). Dynamic models also carry the ``value_info`` shape inference
gives them, as exports do, which goes stale once the inputs are fixed.

:data:`BUILDERS` lists every builder; :data:`POOLS` says which pool ops (and
how many) each model holds.
"""

from __future__ import annotations

import collections
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

Dim = Union[int, str]
DEPLOY_KEY = "deploy_input_shapes"  # metadata: "name:d0,d1,...;name2:..."
_EPS = 1e-5


# -- graph assembly -------------------------------------------------------------


class _Graph:
    """Sequential node builder with seeded He-init weights and BN bookkeeping."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.bns: list[str] = []  # BatchNormalization node names, in order
        self._count: collections.Counter = collections.Counter()

    def fresh(self, prefix: str) -> str:
        self._count[prefix] += 1
        return f"{prefix}_{self._count[prefix]}"

    def const(self, value: np.ndarray, prefix: str = "const") -> str:
        name = self.fresh(prefix)
        self.inits[name] = np.asarray(value)
        return name

    def op(self, op_type: str, inputs: Sequence[str], *, name: Optional[str] = None, outputs: int = 1, **attrs) -> str:
        """Add one node; returns its (first) output, named after the node."""
        name = name or self.fresh(op_type.lower())
        outs = [name if i == 0 else f"{name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0]

    def conv(
        self, x: str, cin: int, cout: int, k: Union[int, Sequence[int]] = 3, s: Union[int, Sequence[int]] = 1,
        *, group: int = 1, bn: bool = True, bias: bool = False, pads: Optional[Sequence[int]] = None,
        gain: float = 2.0, name: Optional[str] = None,
    ) -> str:
        """Conv (He-init, signed weights), then BatchNormalization if ``bn``."""
        ks = [k, k] if isinstance(k, int) else list(k)
        ss = [s] * len(ks) if isinstance(s, int) else list(s)
        fan_in = cin // group * int(np.prod(ks))
        std = np.sqrt(gain / fan_in)
        w = self.rng.standard_normal((cout, cin // group, *ks)) * std
        inputs = [x, self.const(w.astype(np.float32), "w")]
        if bias or not bn:
            inputs.append(self.const((0.1 * self.rng.standard_normal(cout)).astype(np.float32), "b"))
        pads = list(pads) if pads is not None else [kk // 2 for kk in ks] * 2
        name = name or self.fresh("conv")
        y = self.op("Conv", inputs, name=name, kernel_shape=ks, strides=ss, pads=pads, group=group)
        return self.batchnorm(y, cout) if bn else y

    def batchnorm(self, x: str, c: int) -> str:
        gamma = np.abs(1.0 + 0.2 * self.rng.standard_normal(c)) + 0.1
        beta = 0.2 * self.rng.standard_normal(c)
        params = [self.const(v.astype(np.float32), p) for v, p in
                  ((gamma, "gamma"), (beta, "beta"), (np.zeros(c), "mean"), (np.ones(c), "var"))]
        y = self.op("BatchNormalization", [x, *params], epsilon=_EPS)
        self.bns.append(y)
        return y

    def silu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def hardswish(self, x: str) -> str:
        # written out as exporters older than opset 14 do
        return self.op("Mul", [x, self.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])

    def se(self, x: str, c: int, reduction: int = 4, prefix: str = "se") -> str:
        """Squeeze-excitation: GAP -> Conv -> Relu -> Conv -> HardSigmoid -> Mul."""
        pooled = self.op("GlobalAveragePool", [x], name=self.fresh(f"{prefix}_pool"))
        mid = max(c // reduction, 4)
        h = self.op("Relu", [self.conv(pooled, c, mid, 1, bn=False)])
        gate = self.op("HardSigmoid", [self.conv(h, mid, c, 1, bn=False, gain=1.0)], alpha=0.2, beta=0.5)
        return self.op("Mul", [x, gate])


def _bn_levels(nodes: Sequence[onnx.NodeProto]) -> dict[str, int]:
    """BN node output -> how many BNs lie on the longest path to it (nodes are in order)."""
    level: dict[str, int] = {}
    out: dict[str, int] = {}
    for node in nodes:
        depth = max((level.get(i, 0) for i in node.input), default=0)
        if node.op_type == "BatchNormalization":
            depth += 1
            out[node.output[0]] = depth
        for o in node.output:
            level[o] = depth
    return out


def _calibrate_batchnorm(g: _Graph, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Set every BN's running stats to its input's per-channel stats on ``feeds``,
    level by level (one onnxruntime session: the stats are fed as inputs), then
    perturb them a little, as trained statistics never match the data exactly."""
    if not g.bns:
        return
    bn_nodes = {n.output[0]: n for n in model.graph.node if n.op_type == "BatchNormalization"}
    stat_names = [t for n in bn_nodes.values() for t in n.input[3:5]]
    calib = onnx.ModelProto()
    calib.CopyFrom(model)
    keep = [i for i in calib.graph.initializer if i.name not in set(stat_names)]
    del calib.graph.initializer[:]
    calib.graph.initializer.extend(keep)
    for t in stat_names:
        calib.graph.input.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, [None]))
    del calib.graph.output[:]
    for n in bn_nodes.values():
        calib.graph.output.append(helper.make_tensor_value_info(n.input[0], TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(calib.SerializeToString(), options, providers=["CPUExecutionProvider"])
    stats = {t: g.inits[t].astype(np.float32) for t in stat_names}
    levels = _bn_levels(model.graph.node)
    for level in range(1, max(levels.values()) + 1):
        values = dict(zip([o.name for o in calib.graph.output], session.run(None, {**feeds, **stats})))
        for out, node in bn_nodes.items():
            if levels[out] != level:
                continue
            x = values[node.input[0]].astype(np.float64)
            axes = tuple(i for i in range(x.ndim) if i != 1)
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            c = mean.shape[0]
            mean = mean + 0.05 * np.sqrt(var) * g.rng.standard_normal(c)
            var = var * np.exp(0.1 * g.rng.standard_normal(c)) + 1e-3
            stats[node.input[3]], stats[node.input[4]] = mean.astype(np.float32), var.astype(np.float32)
    g.inits.update(stats)


def _fold_batchnorm(g: _Graph) -> None:
    """Fold each BN into the Conv that alone feeds it, as PyTorch and tf2onnx exports do."""
    consumers = collections.Counter(i for n in g.nodes for i in n.input)
    producers = {n.output[0]: n for n in g.nodes}
    kept = []
    for node in g.nodes:
        conv = producers.get(node.input[0]) if node.op_type == "BatchNormalization" else None
        if conv is None or conv.op_type != "Conv" or consumers[conv.output[0]] != 1:
            kept.append(node)
            continue
        gamma, beta, mean, var = (g.inits.pop(t).astype(np.float64) for t in node.input[1:5])
        scale = gamma / np.sqrt(var + _EPS)
        w = g.inits[conv.input[1]].astype(np.float64)
        g.inits[conv.input[1]] = (w * scale.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32)
        b = g.inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 else np.zeros_like(scale)
        bias_name = conv.input[2] if len(conv.input) > 2 else g.fresh("b")
        g.inits[bias_name] = ((b - mean) * scale + beta).astype(np.float32)
        if len(conv.input) < 3:
            conv.input.append(bias_name)
        conv.output[0] = node.output[0]
    g.nodes = kept


def _assemble(g: _Graph, inputs, outputs: Sequence[str], opset: int, name: str) -> onnx.ModelProto:
    """inputs: [(name, elem_type, dims)]; outputs get no declared shape yet."""
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info(n, t, list(d)) for n, t, d in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in g.inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests.realistic")
    model.ir_version = 7 if opset <= 12 else 8
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def example_feeds(model: onnx.ModelProto, seed: int = 0, shapes: Optional[dict[str, Sequence[int]]] = None) -> dict[str, np.ndarray]:
    """Signed-normal floats (int inputs: ids in [0, 8)) at the deploy shapes (or ``shapes``)."""
    rng = np.random.default_rng(seed)
    shapes = shapes or deploy_shapes(model)
    feeds = {}
    for vi in model.graph.input:
        elem = vi.type.tensor_type.elem_type
        shape = tuple(shapes[vi.name])
        if elem == TensorProto.INT64:
            feeds[vi.name] = rng.integers(0, 8, shape).astype(np.int64)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _finish(
    g: _Graph, *, name: str, inputs, outputs: Sequence[str], opset: int, static: dict[str, Sequence[int]],
    alt_static: dict[str, Sequence[int]], dynamic: bool, fold_bn: bool, calib_feeds: Optional[dict] = None,
) -> onnx.ModelProto:
    """Calibrate (and maybe fold) BN, then declare inputs/outputs as the export would.

    ``inputs``: [(name, elem_type, dynamic dims)]; ``static``/``alt_static``: two
    deploy shapes per input; an output dim that differs between them is declared
    dynamic (same style as the inputs: -1 stays -1, else a dim_param)."""
    static_inputs = [(n, t, static[n]) for n, t, _ in inputs]
    model = _assemble(g, static_inputs, outputs, opset, name)
    model.metadata_props.add(key=DEPLOY_KEY, value=";".join(f"{n}:{','.join(map(str, s))}" for n, s in static.items()))
    feeds = calib_feeds or example_feeds(model, seed=12345)
    _calibrate_batchnorm(g, model, feeds)
    if fold_bn:
        _fold_batchnorm(g)
    decl_inputs = inputs if dynamic else static_inputs
    model = _assemble(g, decl_inputs, outputs, opset, name)
    model.metadata_props.add(key=DEPLOY_KEY, value=";".join(f"{n}:{','.join(map(str, s))}" for n, s in static.items()))
    shapes_a = [o.shape for o in _session(model).run(None, example_feeds(model))]
    minus_one = any(d == -1 for _, _, dims in inputs for d in dims)
    if dynamic:
        shapes_b = [o.shape for o in _session(model).run(None, example_feeds(model, shapes=alt_static))]
    else:
        shapes_b = shapes_a
    for out, sa, sb in zip(model.graph.output, shapes_a, shapes_b):
        dims = [a if a == b else (-1 if minus_one else f"{out.name}_d{i}") for i, (a, b) in enumerate(zip(sa, sb))]
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, dims))
    if dynamic:
        # exports carry the (dynamic) intermediate shapes; these go stale when the inputs are fixed
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.value_info.extend(inferred.graph.value_info)
    onnx.checker.check_model(model, full_check=True)
    return model


def deploy_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """The static input shapes a builder's model is deployed at (its ``size``)."""
    for prop in model.metadata_props:
        if prop.key == DEPLOY_KEY:
            pairs = (item.split(":") for item in prop.value.split(";"))
            return {n: [int(d) for d in dims.split(",")] for n, dims in pairs}
    raise KeyError(f"model has no {DEPLOY_KEY} metadata: not made by tests.realistic")


def overwrite_input_shape_args(model: onnx.ModelProto, flag: str = "--overwrite-input-shape") -> list[str]:
    """CLI arguments that fix every input at its deploy shape, e.g.
    ``["--overwrite-input-shape", "images:1,3,128,128"]``."""
    args: list[str] = []
    for name, dims in deploy_shapes(model).items():
        args += [flag, f"{name}:{','.join(map(str, dims))}"]
    return args


def pool_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many of each pool op the main graph holds."""
    ops = ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool")
    counts = collections.Counter(n.op_type for n in model.graph.node if n.op_type in ops)
    return dict(counts)


# -- the builders -----------------------------------------------------------------


def yolo_sppf_detector(dynamic: bool = False, size: int = 128, *, width: int = 8, num_classes: int = 8, seed: int = 0) -> onnx.ModelProto:
    """YOLOv5/v8-style detector on ``images`` [1, 3, size, size] (``size`` a multiple of 16).

    dynamic: ``images`` is ``[batch, 3, height, width]``. Outputs ``boxes``
    [N, 4, A] (raw regression) and ``scores`` [N, num_classes, A] (sigmoid,
    biased towards tiny values as trained detectors are). Pools: SPPF's three
    MaxPool 5/s1/p2 named ``sppf/m1..m3`` on a SiLU output
    where every 4th channel is suppressed (mostly negative, as in trained nets).
    """
    g, w = _Graph(seed), width

    def cbs(x, cin, cout, k=3, s=1):
        return g.silu(g.conv(x, cin, cout, k, s))

    def bottleneck(x, c):
        return g.op("Add", [x, cbs(cbs(x, c, c), c, c)])

    x = cbs(cbs("images", 3, w, 3, 2), w, 2 * w, 3, 2)  # /4
    x = bottleneck(x, 2 * w)
    p3 = bottleneck(cbs(x, 2 * w, 4 * w, 3, 2), 4 * w)  # /8
    p4 = bottleneck(cbs(p3, 4 * w, 8 * w, 3, 2), 8 * w)  # /16
    # SPPF
    s = g.conv(p4, 8 * w, 4 * w, 1)
    bn = next(n for n in reversed(g.nodes) if n.op_type == "BatchNormalization")
    g.inits[bn.input[2]][::4] -= 2.5  # suppressed channels, as trained nets have: SiLU ~ -0.1 everywhere
    s = g.silu(s)
    m1 = g.op("MaxPool", [s], name="sppf/m1", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    m2 = g.op("MaxPool", [m1], name="sppf/m2", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    m3 = g.op("MaxPool", [m2], name="sppf/m3", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p4 = cbs(g.op("Concat", [s, m1, m2, m3], axis=1), 16 * w, 8 * w, 1)
    # FPN: upsample /16 to /8
    up = g.op("Resize", [p4, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    n3 = cbs(g.op("Concat", [up, p3], axis=1), 12 * w, 4 * w)
    boxes, scores = [], []
    for feat, c in ((n3, 4 * w), (p4, 8 * w)):
        bx = g.conv(cbs(cbs(feat, c, c), c, c), c, 4, 1, bn=False)
        cl = cbs(cbs(feat, c, c), c, c)
        cl = g.conv(cl, c, num_classes, 1, bn=False, gain=8.0)
        g.inits[g.nodes[-1].input[2]] += np.float32(-8.0)  # background anchors: tiny scores, as trained detectors give
        flat = g.const(np.array([0, 0, -1], np.int64), "shape")
        boxes.append(g.op("Reshape", [bx, flat]))
        scores.append(g.op("Reshape", [cl, flat]))
    g.op("Concat", boxes, name="boxes", axis=2)
    g.op("Sigmoid", [g.op("Concat", scores, axis=2)], name="scores")
    return _finish(
        g, name="yolo_sppf", inputs=[("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        outputs=["boxes", "scores"], opset=17, static={"images": [1, 3, size, size]},
        alt_static={"images": [2, 3, size + 32, size + 16]}, dynamic=dynamic, fold_bn=True,
    )


def ocr_se_recognizer(dynamic: bool = False, size: int = 64, *, width: int = 8, num_classes: int = 40, seed: int = 0) -> onnx.ModelProto:
    """PP-OCR-rec-style text recognizer on ``x`` [1, 3, 32, size] (``size`` even).

    dynamic: ``x`` is ``[?, 3, 32, ?]`` (one dim_param ``?`` for batch and width,
    as paddle2onnx writes). Output ``softmax_0.tmp_0`` [N, T, num_classes].
    Pools: 8 SE GlobalAveragePools ``se_pool_1..8``, ``pool_h`` MaxPool (3,1)/s(2,1)/p(1,0),
    ``crnn_pool`` MaxPool (2,2)/s(2,1)/p(0,1), ``out_pool`` AveragePool (2,3)/s(2,1)/p(0,1)
    count_include_pad=0. BatchNormalization nodes are kept, as Paddle exports them.
    """
    g, w = _Graph(seed), width
    x = g.hardswish(g.conv("x", 3, w, 3, 2))  # H 16
    x = g.op("MaxPool", [x], name="pool_h", kernel_shape=[3, 1], strides=[2, 1], pads=[1, 0, 1, 0])  # H 8
    c = w
    blocks = [(2 * w, 1, 1), (2 * w, 1, 1), (3 * w, (2, 1), 2), (3 * w, 1, 2), (4 * w, 1, 2), (4 * w, 1, 2), (6 * w, 1, 2), (6 * w, 1, 2)]
    for i, (cout, stride, expand) in enumerate(blocks):
        e = c * expand
        h = g.hardswish(g.conv(x, c, e, 1)) if expand > 1 else x
        h = g.hardswish(g.conv(h, e, e, 3, stride, group=e))
        h = g.se(h, e)
        h = g.conv(h, e, cout, 1)
        x = g.op("Add", [x, h]) if (stride == 1 and c == cout) else h
        c = cout
        if i == 3:  # H 4 -> 2, W -> W/2 + 1
            x = g.op("MaxPool", [x], name="crnn_pool", kernel_shape=[2, 2], strides=[2, 1], pads=[0, 1, 0, 1])
    x = g.op("AveragePool", [x], name="out_pool", kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 0, 1], count_include_pad=0)
    x = g.hardswish(g.conv(x, c, 8 * w, 1, bn=False))  # neck
    seq = g.op("Transpose", [g.op("Squeeze", [x, g.const(np.array([2], np.int64), "axes")])], perm=[0, 2, 1])
    fc = g.const((g.rng.standard_normal((8 * w, num_classes)) * np.sqrt(16.0 / (8 * w))).astype(np.float32), "fc_w")
    logits = g.op("Add", [g.op("MatMul", [seq, fc]), g.const((0.5 * g.rng.standard_normal(num_classes)).astype(np.float32), "fc_b")])
    g.op("Softmax", [logits], name="softmax_0.tmp_0", axis=2)
    return _finish(
        g, name="ocr_rec", inputs=[("x", TensorProto.FLOAT, ["?", 3, 32, "?"])], outputs=["softmax_0.tmp_0"], opset=14,
        static={"x": [1, 3, 32, size]}, alt_static={"x": [2, 3, 32, size + 18]}, dynamic=dynamic, fold_bn=False,
    )


def keras_nhwc_classifier(dynamic: bool = False, size: int = 32, *, width: int = 8, num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """tf2onnx-style classifier on NHWC ``input_1`` [1, size, size, 3].

    dynamic: ``input_1`` is ``[unk__0, unk__1, unk__2, 3]``. Output ``dense_1``
    [N, num_classes] (softmax). Pools: ``max_pooling2d`` 2x2/s2,
    ``average_pooling2d`` 3x3/s1 SAME_UPPER count_include_pad=0,
    ``max_pooling2d_1`` 3x3/s2 SAME_UPPER, ``global_average_pooling2d``.
    """
    g, w = _Graph(seed), width
    x = g.op("Transpose", ["input_1"], perm=[0, 3, 1, 2])
    x = g.op("Relu", [g.conv(x, 3, w, 3)])
    x = g.op("Relu", [g.conv(x, w, w, 3)])
    x = g.op("MaxPool", [x], name="max_pooling2d", kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Relu", [g.conv(x, w, 2 * w, 3)])
    x = g.op("AveragePool", [x], name="average_pooling2d", kernel_shape=[3, 3], strides=[1, 1], auto_pad="SAME_UPPER", count_include_pad=0)
    x = g.conv(x, 2 * w, 2 * w, 3)  # no activation: the next pool sees signed values
    x = g.op("MaxPool", [x], name="max_pooling2d_1", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    for _ in range(3):  # VGG-style stack, residual as Keras ResNets write it
        x = g.op("Relu", [g.op("Add", [x, g.conv(g.op("Relu", [g.conv(x, 2 * w, 2 * w, 3)]), 2 * w, 2 * w, 3)])])
    x = g.op("Relu", [g.conv(x, 2 * w, 4 * w, 3)])
    x = g.op("Relu", [g.conv(x, 4 * w, 4 * w, 3)])
    x = g.op("GlobalAveragePool", [x], name="global_average_pooling2d")
    x = g.op("Flatten", [x], axis=1)
    fc = g.const((g.rng.standard_normal((num_classes, 4 * w)) * np.sqrt(6.0 / (4 * w))).astype(np.float32), "dense_w")
    logits = g.op("Gemm", [x, fc, g.const(np.zeros(num_classes, np.float32), "dense_b")], transB=1)
    g.op("Softmax", [logits], name="dense_1", axis=1)
    return _finish(
        g, name="keras_nhwc", inputs=[("input_1", TensorProto.FLOAT, ["unk__0", "unk__1", "unk__2", 3])], outputs=["dense_1"],
        opset=13, static={"input_1": [1, size, size, 3]}, alt_static={"input_1": [2, size + 8, size + 4, 3]}, dynamic=dynamic, fold_bn=True,
    )


def paddle_det(dynamic: bool = False, size: int = 72, *, width: int = 8, dim_style: str = "minus_one", seed: int = 0) -> onnx.ModelProto:
    """paddle2onnx DB-style text detector on ``x`` [1, 3, size, size].

    dynamic: ``x`` is ``[-1, 3, -1, -1]`` (``dim_style="minus_one"``, dim_value -1)
    or ``[-1, 3, ?, ?]`` (``dim_style="question"``: one dim_param ``?`` shared by
    H and W, which then get different values when ``size`` differs... or equal ones).
    Output ``sigmoid_0.tmp_0`` [N, 1, size/4, size/4] probability map.
    Pools: ``pool2d_0`` MaxPool 3x3/s2/p1 after Relu, ``pool2d_1``/``pool2d_2``
    AveragePool 2x2/s2 ceil_mode=1 (vd shortcuts; at size 72 the second sees 9x9
    and ceil adds a window), SE GlobalAveragePools ``se_pool_1``, ``se_pool_2``.
    """
    if dim_style not in ("minus_one", "question"):
        raise ValueError(f"dim_style must be 'minus_one' or 'question', not {dim_style!r}")
    g, w = _Graph(seed), width

    def cbr(x, cin, cout, k=3, s=1, act=True):
        y = g.conv(x, cin, cout, k, s)
        return g.op("Relu", [y]) if act else y

    x = cbr(cbr(cbr("x", 3, w // 2, 3, 2), w // 2, w // 2), w // 2, w)  # /2
    x = g.op("MaxPool", [x], name="pool2d_0", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # /4
    c4 = g.op("Relu", [g.op("Add", [x, cbr(cbr(x, w, w), w, w, act=False)])])
    feats, c, x = [c4], w, c4
    for i, cout in enumerate((2 * w, 4 * w)):
        main = cbr(cbr(x, c, cout, 3, 2), cout, cout, act=False)
        short = g.op("AveragePool", [x], name=f"pool2d_{i + 1}", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
        short = g.conv(short, c, cout, 1)
        x = g.op("Relu", [g.op("Add", [main, short])])
        x = g.se(x, cout)
        feats.append(x)
        c = cout
    # FPN: Resize to the lateral's own size (Shape-driven, as paddle2onnx writes it)
    inner = 2 * w
    lat = [g.conv(f, ch, inner, 1) for f, ch in zip(feats, (w, 2 * w, 4 * w))]
    empty = g.const(np.zeros(0, np.float32), "empty")
    top = lat[2]
    for low in (lat[1], lat[0]):
        sizes = g.op("Concat", [g.op("Slice", [g.op("Shape", [top]), g.const(np.array([0], np.int64), "s"), g.const(np.array([2], np.int64), "e")]),
                                g.op("Slice", [g.op("Shape", [low]), g.const(np.array([2], np.int64), "s"), g.const(np.array([4], np.int64), "e")])], axis=0)
        up = g.op("Resize", [top, empty, empty, sizes], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        top = g.op("Add", [low, up])
    h = cbr(cbr(top, inner, inner), inner, inner)
    prob = g.conv(h, inner, 1, 1, bn=False, gain=8.0)
    g.inits[g.nodes[-1].input[2]] += np.float32(-4.0)  # mostly background: small probabilities
    g.op("Sigmoid", [prob], name="sigmoid_0.tmp_0")
    hw: list[Dim] = [-1, -1] if dim_style == "minus_one" else ["?", "?"]
    return _finish(
        g, name="paddle_det", inputs=[("x", TensorProto.FLOAT, [-1, 3, *hw])], outputs=["sigmoid_0.tmp_0"], opset=11,
        static={"x": [1, 3, size, size]}, alt_static={"x": [2, 3, size + 32, size + 64]}, dynamic=dynamic, fold_bn=False,
    )


def mtcnn_pnet(dynamic: bool = False, size: int = 24, *, seed: int = 0) -> onnx.ModelProto:
    """MTCNN P-Net on ``input`` [1, 3, size, size] (no BatchNorm, PRelu activations).

    dynamic: ``input`` is ``[N, 3, H, W]``. Outputs ``prob1`` [N, 2, h, w]
    (softmax over the 2 classes) and ``conv4-2`` [N, 4, h, w]. Pool: ``pool1``
    MaxPool 3x3/s2 ceil_mode=1 (at an even ``size`` the ceil adds a window).
    """
    g = _Graph(seed)

    def conv_prelu(x, cin, cout, name):
        y = g.conv(x, cin, cout, 3, pads=[0, 0, 0, 0], name=name)  # BN folded: as a caffe conv with bias
        slope = g.const((0.25 + 0.05 * g.rng.standard_normal((cout, 1, 1))).astype(np.float32), "slope")
        return g.op("PRelu", [y, slope])

    x = conv_prelu("input", 3, 10, "conv1")
    x = g.op("MaxPool", [x], name="pool1", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    x = conv_prelu(conv_prelu(x, 10, 16, "conv2"), 16, 32, "conv3")
    g.op("Softmax", [g.conv(x, 32, 2, 1, bn=False, gain=4.0, name="conv4-1")], name="prob1", axis=1)
    g.conv(x, 32, 4, 1, bn=False, gain=1.0, name="conv4-2")
    return _finish(
        g, name="pnet", inputs=[("input", TensorProto.FLOAT, ["N", 3, "H", "W"])], outputs=["prob1", "conv4-2"], opset=13,
        static={"input": [1, 3, size, size]}, alt_static={"input": [2, 3, size + 12, size + 6]}, dynamic=dynamic, fold_bn=True,
    )


def text_1d_classifier(dynamic: bool = False, size: int = 64, *, vocab: int = 257, embed: int = 16, num_classes: int = 12, seed: int = 0) -> onnx.ModelProto:
    """Magika-style byte classifier on int64 ``input_ids`` [1, size].

    dynamic: ``input_ids`` is ``[batch, sequence]``. Output ``probabilities``
    [N, num_classes]. Pools: ``max_pool1d`` MaxPool k3/s2/p1 on the signed
    conv output, ``global_max_pool`` GlobalMaxPool.
    """
    g = _Graph(seed)
    table = g.const(g.rng.standard_normal((vocab, embed)).astype(np.float32), "embedding")
    x = g.op("Transpose", [g.op("Gather", [table, "input_ids"], axis=0)], perm=[0, 2, 1])
    x = g.conv(x, embed, 32, [5], 1, bn=False, gain=1.0)
    x = g.op("MaxPool", [x], name="max_pool1d", kernel_shape=[3], strides=[2], pads=[1, 1])  # Conv1D(activation=None)
    x = g.op("Relu", [g.conv(x, 32, 32, [3], 1)])
    x = g.conv(x, 32, 48, [3], 1)
    x = g.op("Flatten", [g.op("GlobalMaxPool", [x], name="global_max_pool")], axis=1)
    fc = g.const((g.rng.standard_normal((num_classes, 48)) * np.sqrt(2.0 / 48)).astype(np.float32), "fc_w")
    logits = g.op("Gemm", [x, fc, g.const(np.zeros(num_classes, np.float32), "fc_b")], transB=1)
    g.op("Softmax", [logits], name="probabilities", axis=1)
    return _finish(
        g, name="text_1d", inputs=[("input_ids", TensorProto.INT64, ["batch", "sequence"])], outputs=["probabilities"], opset=13,
        static={"input_ids": [1, size]}, alt_static={"input_ids": [2, size + 10]}, dynamic=dynamic, fold_bn=True,
    )


def _axes(g: _Graph, axes: Sequence[int], opset: int, as_constant_node: bool = False) -> tuple[list[str], dict]:
    """A reduction's axes as ``opset`` writes them: (extra inputs, attributes)."""
    if opset < 18:
        return [], {"axes": list(axes)}
    value = np.array(list(axes), np.int64)
    if as_constant_node:
        return [g.op("Constant", [], value=numpy_helper.from_array(value))], {}
    return [g.const(value, "axes")], {}


def _nchw_trunk(g: _Graph, x: str, cin: int, w: int) -> str:
    """A small ResNet-style trunk: stem conv, a stride-2 conv, one residual block."""
    x = g.op("Relu", [g.conv(x, cin, w, 3)])
    x = g.op("Relu", [g.conv(x, w, 2 * w, 3, 2)])
    return g.op("Relu", [g.op("Add", [x, g.conv(g.op("Relu", [g.conv(x, 2 * w, 2 * w, 3)]), 2 * w, 2 * w, 3)])])


def _dense_head(g: _Graph, x: str, cin: int, num_classes: int, name: str) -> str:
    """MatMul + Add + Softmax over the last axis, as tf2onnx writes a Dense layer."""
    fc = g.const((g.rng.standard_normal((cin, num_classes)) * np.sqrt(2.0 / cin)).astype(np.float32), "dense_w")
    logits = g.op("Add", [g.op("MatMul", [x, fc]), g.const(np.zeros(num_classes, np.float32), "dense_b")])
    return g.op("Softmax", [logits], name=name, axis=-1)


def tf2onnx_resnet_head(dynamic: bool = False, size: int = 32, *, keepdims: int = 0, width: int = 8, num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """tf2onnx ResNet: NHWC ``input_1`` [1, size, size, 3], Transpose to NCHW, a conv
    trunk, Transpose back to NHWC, ``avg_pool`` ReduceMean axes (1, 2) (keepdims 0 as
    tf2onnx writes it), MatMul + Add + Softmax ``predictions`` [N, num_classes]."""
    g, w = _Graph(seed), width
    x = _nchw_trunk(g, g.op("Transpose", ["input_1"], perm=[0, 3, 1, 2]), 3, w)
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.op("ReduceMean", [x], name="avg_pool", axes=[1, 2], keepdims=keepdims)
    if keepdims:
        x = g.op("Flatten", [x], axis=1)
    _dense_head(g, x, 2 * w, num_classes, "predictions")
    return _finish(
        g, name="tf2onnx_resnet", inputs=[("input_1", TensorProto.FLOAT, ["N", size, size, 3])], outputs=["predictions"],
        opset=13, static={"input_1": [1, size, size, 3]}, alt_static={"input_1": [2, size, size, 3]}, dynamic=dynamic, fold_bn=True,
    )


def keras2onnx_gmp(dynamic: bool = False, size: int = 32, *, keepdims: int = 0, width: int = 8, num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """keras2onnx GlobalMaxPooling2D: NCHW convs on a Transposed NHWC input, then
    ``Transpose -> global_max_pooling2d`` ReduceMax axes (1, 2) of the signed conv
    output, MatMul + Add + Softmax ``dense`` [N, num_classes]."""
    g, w = _Graph(seed), width
    x = _nchw_trunk(g, g.op("Transpose", ["input_1"], perm=[0, 3, 1, 2]), 3, w)
    x = g.conv(x, 2 * w, 2 * w, 3)  # no activation: the max sees signed values
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.op("ReduceMax", [x], name="global_max_pooling2d", axes=[1, 2], keepdims=keepdims)
    if keepdims:
        x = g.op("Flatten", [x], axis=1)
    _dense_head(g, x, 2 * w, num_classes, "dense")
    return _finish(
        g, name="keras2onnx_gmp", inputs=[("input_1", TensorProto.FLOAT, ["N", size, size, 3])], outputs=["dense"],
        opset=13, static={"input_1": [1, size, size, 3]}, alt_static={"input_1": [2, size, size, 3]}, dynamic=dynamic, fold_bn=True,
    )


def opset9_split_max(dynamic: bool = False, size: int = 24, *, width: int = 8, num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """An opset-9 export of a global max split in two: ``gmp_w`` ReduceMax axis 3, then
    ``gmp_h`` ReduceMax axis 2 (both keepdims 1), on NCHW ``x`` [1, 3, size, size]'s
    signed conv output; Flatten, Gemm, Softmax ``prob``."""
    g, w = _Graph(seed), width
    x = g.conv(_nchw_trunk(g, "x", 3, w), 2 * w, 2 * w, 3)
    x = g.op("ReduceMax", [g.op("ReduceMax", [x], name="gmp_w", axes=[3], keepdims=1)], name="gmp_h", axes=[2], keepdims=1)
    fc = g.const((g.rng.standard_normal((num_classes, 2 * w)) * np.sqrt(2.0 / (2 * w))).astype(np.float32), "fc_w")
    logits = g.op("Gemm", [g.op("Flatten", [x], axis=1), fc, g.const(np.zeros(num_classes, np.float32), "fc_b")], transB=1)
    g.op("Softmax", [logits], name="prob", axis=1)
    return _finish(
        g, name="opset9_split_max", inputs=[("x", TensorProto.FLOAT, ["N", 3, size, size])], outputs=["prob"],
        opset=9, static={"x": [1, 3, size, size]}, alt_static={"x": [2, 3, size, size]}, dynamic=dynamic, fold_bn=True,
    )


def channels_last_audio(dynamic: bool = False, size: int = 40, *, frames: int = 32, width: int = 8, num_classes: int = 6, seed: int = 0) -> onnx.ModelProto:
    """A channels-last audio CNN exported without a batch dim (opset 18): ``spectrogram``
    [frames, size] (time, mel bins), Unsqueezed to [1, 1, T, F] for NCHW convs,
    Transposed to NHWC and Squeezed to [T', F', C], ``global_pool`` ReduceMean over
    axes (0, 1) given as a Constant node (keepdims 0), MatMul + Add + Softmax
    ``scores`` [num_classes]. dynamic: ``spectrogram`` is ``[time, size]``."""
    g, w = _Graph(seed), width
    x = g.op("Unsqueeze", ["spectrogram", g.const(np.array([0, 1], np.int64), "unsq_axes")])
    x = g.op("Transpose", [_nchw_trunk(g, x, 1, w)], perm=[0, 2, 3, 1])
    x = g.op("Squeeze", [x, g.const(np.array([0], np.int64), "sq_axes")])
    extra, attrs = _axes(g, [0, 1], 18, as_constant_node=True)
    x = g.op("ReduceMean", [x, *extra], name="global_pool", keepdims=0, **attrs)
    _dense_head(g, x, 2 * w, num_classes, "scores")
    return _finish(
        g, name="channels_last_audio", inputs=[("spectrogram", TensorProto.FLOAT, ["time", size])], outputs=["scores"],
        opset=18, static={"spectrogram": [frames, size]}, alt_static={"spectrogram": [frames + 8, size]}, dynamic=dynamic, fold_bn=True,
    )


def nhwc_audio_opset18(dynamic: bool = False, size: int = 40, *, frames: int = 32, width: int = 8, num_classes: int = 6, seed: int = 0) -> onnx.ModelProto:
    """An audio-analysis export at opset 18: NHWC ``log_mel`` [1, frames, size, 1],
    NCHW convs between Transposes, ``head_mean`` ReduceMean over axes (1, 2) given as an
    initializer (keepdims 1), Flatten, MatMul + Add + Softmax ``scores``."""
    g, w = _Graph(seed), width
    x = g.op("Transpose", [_nchw_trunk(g, g.op("Transpose", ["log_mel"], perm=[0, 3, 1, 2]), 1, w)], perm=[0, 2, 3, 1])
    extra, attrs = _axes(g, [1, 2], 18)
    x = g.op("Flatten", [g.op("ReduceMean", [x, *extra], name="head_mean", keepdims=1, **attrs)], axis=1)
    _dense_head(g, x, 2 * w, num_classes, "scores")
    return _finish(
        g, name="nhwc_audio_opset18", inputs=[("log_mel", TensorProto.FLOAT, ["N", frames, size, 1])], outputs=["scores"],
        opset=18, static={"log_mel": [1, frames, size, 1]}, alt_static={"log_mel": [2, frames, size, 1]}, dynamic=dynamic, fold_bn=True,
    )


BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "yolo_sppf_detector": yolo_sppf_detector,
    "ocr_se_recognizer": ocr_se_recognizer,
    "keras_nhwc_classifier": keras_nhwc_classifier,
    "paddle_det": paddle_det,
    "mtcnn_pnet": mtcnn_pnet,
    "text_1d_classifier": text_1d_classifier,
}

POOLS: dict[str, dict[str, int]] = {  # builder -> pool op -> count, at the default arguments
    "yolo_sppf_detector": {"MaxPool": 3},
    "ocr_se_recognizer": {"MaxPool": 2, "AveragePool": 1, "GlobalAveragePool": 8},
    "keras_nhwc_classifier": {"MaxPool": 2, "AveragePool": 1, "GlobalAveragePool": 1},
    "paddle_det": {"MaxPool": 1, "AveragePool": 2, "GlobalAveragePool": 2},
    "mtcnn_pnet": {"MaxPool": 1},
    "text_1d_classifier": {"MaxPool": 1, "GlobalMaxPool": 1},
}

# Exports whose global pools are reductions (issue 22), kept apart from BUILDERS: a
# keepdims-0 head needs Reshape, which the strict op set and the built-in profiles lack.
# builder -> reduction node -> (op type, layout, whether its rewrite needs Reshape at the
# default arguments: its output rank differs, or it has no batch axis).
REDUCTION_BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "tf2onnx_resnet_head": tf2onnx_resnet_head,
    "keras2onnx_gmp": keras2onnx_gmp,
    "opset9_split_max": opset9_split_max,
    "channels_last_audio": channels_last_audio,
    "nhwc_audio_opset18": nhwc_audio_opset18,
}
REDUCTIONS: dict[str, dict[str, tuple[str, str, bool]]] = {
    "tf2onnx_resnet_head": {"avg_pool": ("ReduceMean", "NHWC", True)},
    "keras2onnx_gmp": {"global_max_pooling2d": ("ReduceMax", "NHWC", True)},
    "opset9_split_max": {"gmp_h": ("ReduceMax", "NCHW", False)},
    "channels_last_audio": {"global_pool": ("ReduceMean", "HWC", True)},
    "nhwc_audio_opset18": {"head_mean": ("ReduceMean", "NHWC", False)},
}
