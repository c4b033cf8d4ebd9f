"""Numpy reference for backends whose conv primitive is a TRUE convolution.

ONNX ``Conv`` is a cross-correlation: output position ``o`` reads the window
``start, start + d, ..., start + (k-1)*d`` (``start = o*stride - pad_begin``)
and multiplies the j-th element with kernel tap ``W[j]``. Many DSP/FPGA conv
primitives instead compute the mathematical convolution
``O[i] = sum_m I[i - m] * K[m]``: over the *same* window, tap ``m`` multiplies
the element at ``window_end - m*d = start + (k-1-m)*d``. ``--flip-kernels``
stores every Conv weight reversed along its spatial axes so that such a
backend computes the original network.

To validate a flipped model we must *execute* it with true-convolution
semantics. Flipping the weights back and running onnxruntime would only test
that flipping twice is the identity, and would share every assumption (axis
order, which axes are spatial, grouped weight layout) with the code under
test. This module instead implements the backend's arithmetic from its
definition, in numpy, with reversed indices; it never flips a kernel and never
calls onnxruntime, so a wrong flip in the rewriter shows up as a numeric
mismatch against onnxruntime on the *original* model.

* :func:`true_convolution`: N-D true convolution; the window geometry (output
  size, pads, ``auto_pad``, strides, dilations, groups) is exactly ONNX Conv's.
* :func:`true_conv_transpose`: the adjoint of :func:`true_convolution`, which
  is what a true-convolution backend's transposed conv computes.
* :class:`TrueConvolutionEvaluator`: a whole ONNX model on
  ``onnx.reference.ReferenceEvaluator`` with ``Conv``/``ConvTranspose``
  replaced by the two functions above (every other op keeps onnx's reference
  implementation).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .graphs import all_graphs
from .ops import ONNX_DOMAINS

__all__ = [
    "true_convolution",
    "true_conv_transpose",
    "TrueConvolutionEvaluator",
    "Conv",
    "ConvTranspose",
]

IntSeq = Optional[Sequence[int]]


def _norm_auto_pad(auto_pad: Union[str, bytes, None]) -> str:
    if auto_pad is None:
        return "NOTSET"
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode("utf-8")
    auto_pad = auto_pad.upper()
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    return auto_pad


def _per_axis(value: IntSeq, default: int, nd: int, name: str) -> list[int]:
    if value is None:
        return [default] * nd
    out = [int(v) for v in value]
    if len(out) != nd:
        raise ValueError(f"{name} has {len(out)} values, expected {nd} (one per spatial axis)")
    return out


def _check_kernel_shape(kernel_shape: IntSeq, w: np.ndarray) -> None:
    if kernel_shape is not None and tuple(int(k) for k in kernel_shape) != tuple(w.shape[2:]):
        raise ValueError(f"kernel_shape {list(kernel_shape)} does not match weight spatial shape {list(w.shape[2:])}")


def _conv_pads(
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: IntSeq,
    auto_pad: str,
) -> tuple[list[int], list[int]]:
    """(pad_begin, pad_end) per spatial axis, resolved as ONNX Conv defines them."""
    nd = len(in_shape)
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            # The spec pads so that out = ceil(in / stride), using the
            # *dilated* kernel extent. (onnxruntime refuses SAME_* with
            # dilation > 1; onnx.reference uses the dilated extent, like this.)
            effective = (k - 1) * d + 1
            target = -(-size // s)
            needed = max(0, (target - 1) * s + effective - size)
            # The odd extra pad goes at the end for SAME_UPPER, the start for SAME_LOWER.
            head = needed // 2 if auto_pad == "SAME_UPPER" else (needed + 1) // 2
            begin.append(head)
            end.append(needed - head)
        return begin, end
    flat = _per_axis(pads, 0, 2 * nd, "pads")
    if any(p < 0 for p in flat):
        raise ValueError(f"negative pads are not supported: {flat}")
    return flat[:nd], flat[nd:]


def true_convolution(
    x: np.ndarray,
    w: np.ndarray,
    b: Optional[np.ndarray] = None,
    *,
    strides: IntSeq = None,
    pads: IntSeq = None,
    dilations: IntSeq = None,
    group: Optional[int] = 1,
    auto_pad: Union[str, bytes, None] = "NOTSET",
    kernel_shape: IntSeq = None,
) -> np.ndarray:
    """True (mathematical) N-D convolution with ONNX Conv's window geometry.

    ``x``: ``[N, C, *spatial]``; ``w``: ``[M, C/group, *k]``; ``b``: ``[M]``.
    Output position ``o`` covers the zero-padded input window starting at
    ``start = o*stride`` (in padded coordinates) and ending at
    ``start + (k-1)*dilation``, exactly as in ONNX Conv. Along each axis, tap
    ``m`` of the kernel multiplies the element ``start + (k-1-m)*dilation``,
    i.e. ``window_end - m*dilation``: ``O[i] = sum_m I[i - m] * K[m]``.

    ``None`` for strides/dilations/pads/group means the ONNX defaults (1, 1, 0,
    1). Accumulates in float64 and returns ``x.dtype``.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ValueError(f"expected x [N, C, *spatial] and w [M, C/group, *k] of equal rank, got {x.shape} and {w.shape}")
    _check_kernel_shape(kernel_shape, w)
    nd = x.ndim - 2
    group = 1 if group is None else int(group)
    n, c = x.shape[:2]
    m_out = w.shape[0]
    kernel = list(w.shape[2:])
    if group < 1 or c % group or m_out % group or w.shape[1] * group != c:
        raise ValueError(f"group={group} is inconsistent with x {x.shape} and w {w.shape}")
    strides_ = _per_axis(strides, 1, nd, "strides")
    dilations_ = _per_axis(dilations, 1, nd, "dilations")
    begin, end = _conv_pads(x.shape[2:], kernel, strides_, dilations_, pads, _norm_auto_pad(auto_pad))

    out_shape = [
        (size + pb + pe - ((k - 1) * d + 1)) // s + 1
        for size, pb, pe, k, d, s in zip(x.shape[2:], begin, end, kernel, dilations_, strides_)
    ]
    if any(o <= 0 for o in out_shape):
        raise ValueError(f"empty output {out_shape} for input {list(x.shape[2:])}, kernel {kernel}, pads {begin + end}")

    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(begin, end)))
    w64 = w.astype(np.float64)
    cg, mg, p = c // group, m_out // group, int(np.prod(out_shape))
    acc = np.zeros((n, group, mg, p), dtype=np.float64)
    for tap in itertools.product(*(range(k) for k in kernel)):
        # From the definition: tap m reads window_end - m*dilation, i.e.
        # offset (k-1-m)*dilation from the window start. The kernel itself is
        # indexed with m as stored: nothing is flipped.
        window = tuple(
            slice((k - 1 - t) * d, (k - 1 - t) * d + (o - 1) * s + 1, s)
            for k, t, d, o, s in zip(kernel, tap, dilations_, out_shape, strides_)
        )
        xs = xp[(slice(None), slice(None)) + window].reshape(n, group, cg, p)
        wt = w64[(slice(None), slice(None)) + tap].reshape(group, mg, cg)
        acc += wt @ xs  # [G, Mg, Cg] @ [N, G, Cg, P] -> [N, G, Mg, P]
    y = acc.reshape(n, m_out, *out_shape)
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * nd)
    return y.astype(x.dtype)


def _transpose_pads(
    in_shape: Sequence[int],
    full_shape: Sequence[int],
    strides: Sequence[int],
    pads: IntSeq,
    auto_pad: str,
    output_shape: IntSeq,
) -> tuple[list[int], list[int]]:
    """(crop_begin, output size) per axis, resolved as ONNX ConvTranspose defines them.

    ``full_shape`` is the uncropped scatter extent,
    ``stride*(in-1) + output_padding + (k-1)*dilation + 1``.
    """
    nd = len(in_shape)
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is not None:
            target = [int(v) for v in output_shape]
            if len(target) == nd + 2:  # some exporters write [N, C, *spatial]
                target = target[2:]
            if len(target) != nd:
                raise ValueError(f"output_shape {list(output_shape)} does not have {nd} spatial values")
        else:
            target = [size * s for size, s in zip(in_shape, strides)]
        begin = []
        for full, out in zip(full_shape, target):
            total = full - out
            if total < 0:
                raise NotImplementedError(
                    f"ConvTranspose output size {out} exceeds the scatter extent {full} "
                    "(negative total padding): the spec does not say how to split a negative pad, "
                    "onnxruntime rejects such an output_shape and, for auto_pad SAME_*, clamps the "
                    "padding to 0 (output = extent, not input*stride)"
                )
            # Spec: SAME_UPPER puts the odd extra pad at the end; otherwise
            # (SAME_LOWER, or output_shape with NOTSET) at the start.
            # Explicit pads are ignored when output_shape is given.
            begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
        return begin, target
    if auto_pad == "VALID":
        return [0] * nd, list(full_shape)
    flat = _per_axis(pads, 0, 2 * nd, "pads")
    if any(p < 0 for p in flat):
        raise ValueError(f"negative pads are not supported: {flat}")
    out = [full - pb - pe for full, pb, pe in zip(full_shape, flat[:nd], flat[nd:])]
    if any(o <= 0 for o in out):
        raise ValueError(f"empty ConvTranspose output {out} for pads {flat}")
    return flat[:nd], out


def true_conv_transpose(
    x: np.ndarray,
    w: np.ndarray,
    b: Optional[np.ndarray] = None,
    *,
    strides: IntSeq = None,
    pads: IntSeq = None,
    dilations: IntSeq = None,
    group: Optional[int] = 1,
    output_padding: IntSeq = None,
    output_shape: IntSeq = None,
    auto_pad: Union[str, bytes, None] = "NOTSET",
    kernel_shape: IntSeq = None,
) -> np.ndarray:
    """Transposed convolution of a true-convolution backend.

    Semantics chosen: the backend's ConvTranspose is the adjoint (transpose)
    of its :func:`true_convolution` with the same kernel and geometry, just as
    ONNX ConvTranspose is the adjoint of ONNX Conv. Consequently it equals ONNX
    ConvTranspose with every kernel reversed along its spatial axes, so a
    ``--flip-kernels`` model keeps its function on such a backend.

    Scatter form, per spatial axis: input element ``i`` adds
    ``x[i] * K[m]`` at position ``i*stride + (k-1-m)*dilation`` of an
    uncropped buffer of extent ``stride*(in-1) + output_padding +
    (k-1)*dilation + 1`` (ONNX ConvTranspose would use ``i*stride +
    m*dilation``). The output is that buffer cropped by ``pads`` (begin, end).

    ``x``: ``[N, C, *in]``; ``w``: ``[C, M/group, *k]``; ``b``: ``[M]``.
    ``output_shape`` / ``auto_pad`` resolve the crop exactly as the ONNX
    spec says (and onnxruntime 1.32 does): with output_shape, or SAME_*
    (target ``in*stride``), ``total = extent - target``; SAME_UPPER crops
    ``total//2`` at the start, SAME_LOWER and NOTSET crop
    ``total - total//2``; explicit pads are then ignored. VALID crops nothing.
    A target larger than the extent raises NotImplementedError (ORT clamps
    it for SAME_* and rejects it for output_shape; the spec is silent).
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ValueError(f"expected x [N, C, *in] and w [C, M/group, *k] of equal rank, got {x.shape} and {w.shape}")
    _check_kernel_shape(kernel_shape, w)
    nd = x.ndim - 2
    group = 1 if group is None else int(group)
    n, c = x.shape[:2]
    if group < 1 or c % group or w.shape[0] != c:
        raise ValueError(f"group={group} is inconsistent with x {x.shape} and w {w.shape}")
    cg, mg = c // group, w.shape[1]
    m_out = mg * group
    kernel = list(w.shape[2:])
    in_shape = list(x.shape[2:])
    strides_ = _per_axis(strides, 1, nd, "strides")
    dilations_ = _per_axis(dilations, 1, nd, "dilations")
    # onnx.reference defaults output_padding to 2*nd zeros; only the first nd count.
    op_ = [0] * nd if output_padding is None else [int(v) for v in output_padding][:nd]
    if len(op_) != nd:
        raise ValueError(f"output_padding {list(output_padding or [])} does not have {nd} values")
    full_shape = [s * (i - 1) + o + (k - 1) * d + 1 for s, i, o, k, d in zip(strides_, in_shape, op_, kernel, dilations_)]
    crop, out_shape = _transpose_pads(in_shape, full_shape, strides_, pads, _norm_auto_pad(auto_pad), output_shape)

    p = int(np.prod(in_shape))
    xg = x.astype(np.float64).reshape(n, group, cg, p)
    # [C, Mg, *k] -> [G, Cg, Mg, *k] -> [G, Mg, Cg, *k]: contract over input channels.
    wg = w.astype(np.float64).reshape(group, cg, mg, *kernel).swapaxes(1, 2)
    full = np.zeros((n, m_out, *full_shape), dtype=np.float64)
    for tap in itertools.product(*(range(k) for k in kernel)):
        contrib = (wg[(slice(None), slice(None), slice(None)) + tap] @ xg).reshape(n, m_out, *in_shape)
        # Adjoint of "tap m reads window_end - m*dilation": scatter to
        # i*stride + (k-1-m)*dilation.
        dest = tuple(
            slice((k - 1 - t) * d, (k - 1 - t) * d + (i - 1) * s + 1, s)
            for k, t, d, i, s in zip(kernel, tap, dilations_, in_shape, strides_)
        )
        full[(slice(None), slice(None)) + dest] += contrib
    y = full[(slice(None), slice(None)) + tuple(slice(cb, cb + o) for cb, o in zip(crop, out_shape))]
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * nd)
    return np.ascontiguousarray(y).astype(x.dtype)


# -- onnx.reference operators ---------------------------------------------------
# ReferenceEvaluator keys new_ops by (op_domain, class __name__), so the class
# names must be exactly the ONNX op types. Attributes arrive as keyword
# arguments; absent ones come in as the schema default (auto_pad "NOTSET",
# group 1) or None where the default depends on the input.


class Conv(OpRun):
    """ONNX ``Conv`` node executed as a true convolution (:func:`true_convolution`)."""

    op_domain = ""

    def _run(  # type: ignore[override]
        self,
        X: np.ndarray,
        W: np.ndarray,
        B: Optional[np.ndarray] = None,
        auto_pad: Optional[str] = None,
        dilations: IntSeq = None,
        group: Optional[int] = None,
        kernel_shape: IntSeq = None,
        pads: IntSeq = None,
        strides: IntSeq = None,
    ) -> tuple[np.ndarray]:
        return (
            true_convolution(
                X, W, B, strides=strides, pads=pads, dilations=dilations, group=group,
                auto_pad=auto_pad, kernel_shape=kernel_shape,
            ),
        )


class ConvTranspose(OpRun):
    """ONNX ``ConvTranspose`` node executed as the adjoint of a true convolution."""

    op_domain = ""

    def _run(  # type: ignore[override]
        self,
        X: np.ndarray,
        W: np.ndarray,
        B: Optional[np.ndarray] = None,
        auto_pad: Optional[str] = None,
        dilations: IntSeq = None,
        group: Optional[int] = None,
        kernel_shape: IntSeq = None,
        output_padding: IntSeq = None,
        output_shape: IntSeq = None,
        pads: IntSeq = None,
        strides: IntSeq = None,
    ) -> tuple[np.ndarray]:
        return (
            true_conv_transpose(
                X, W, B, strides=strides, pads=pads, dilations=dilations, group=group,
                output_padding=output_padding, output_shape=output_shape, auto_pad=auto_pad,
                kernel_shape=kernel_shape,
            ),
        )


class TrueConvolutionEvaluator:
    """Run an ONNX model as a true-convolution backend would.

    ``Conv`` and ``ConvTranspose`` (default domain) use :func:`true_convolution`
    and :func:`true_conv_transpose`; every other op runs on onnx's reference
    implementation. Independent of onnxruntime by construction.

    >>> outputs = TrueConvolutionEvaluator(flipped_model).run({"x": x})
    """

    def __init__(self, model: Union[onnx.ModelProto, str, Path]) -> None:
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        self.model = model
        self.output_names = [o.name for o in model.graph.output]
        self._session = ReferenceEvaluator(model, new_ops=[Conv, ConvTranspose])

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """All graph outputs, by name."""
        results = self._session.run(None, dict(feeds))
        return dict(zip(self.output_names, (np.asarray(r) for r in results)))


class TrueConvolutionHybridEvaluator:
    """Run a model as a true-convolution backend would, node by node: Conv and
    ConvTranspose from their definition here, every other node on onnxruntime
    (one single-node session each, built once).

    ``onnx.reference`` disagrees with onnxruntime on some ops (pools, for one),
    so it is only the fallback for models whose control flow holds convs.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        import onnxruntime as ort  # the validator's runtime; imported only when validating

        self._ort = ort
        self.model = model
        self.output_names = [o.name for o in model.graph.output]
        self._initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        self._sessions: dict[int, Any] = {}

    @staticmethod
    def applicable(model: onnx.ModelProto) -> bool:
        """False when an If/Loop/Scan body holds a conv: a single-node onnxruntime
        session would run it as cross-correlation."""
        bodies = list(all_graphs(model.graph))[1:]
        return not any(node.op_type in ("Conv", "ConvTranspose") for body in bodies for node in body.node)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = dict(self._initializers)
        values.update({k: np.asarray(v) for k, v in feeds.items()})
        for index, node in enumerate(self.model.graph.node):
            inputs = [values[name] if name else None for name in node.input]
            if node.op_type in ("Conv", "ConvTranspose") and node.domain in ONNX_DOMAINS:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                function = true_convolution if node.op_type == "Conv" else true_conv_transpose
                results = [function(*inputs, **attrs)]
            else:
                results = self._session(index, node, inputs).run(None, {n: v for n, v in zip(node.input, inputs) if n})
            values.update({name: r for name, r in zip(node.output, results) if name})
        return {name: values[name] for name in self.output_names}

    def _session(self, index: int, node: onnx.NodeProto, inputs: list) -> Any:
        if index not in self._sessions:
            graph_inputs, seen = [], set()
            for name, value in zip(node.input, inputs):
                if name and name not in seen:
                    seen.add(name)
                    elem = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
                    graph_inputs.append(onnx.helper.make_tensor_value_info(name, elem, None))
            outputs = [onnx.ValueInfoProto(name=name) for name in node.output if name]
            graph = onnx.helper.make_graph([node], "node", graph_inputs, outputs)
            single = onnx.helper.make_model(
                graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version,
                functions=list(self.model.functions),
            )
            options = self._ort.SessionOptions()
            options.log_severity_level = 4
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self._sessions[index] = self._ort.InferenceSession(single.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return self._sessions[index]
