"""A small subgraph builder over onnx-graphsurgeon.

In quantized mode (:meth:`SubgraphBuilder.quantized`, for a pool in a QDQ region)
every value is an integer count of the input's steps, stored at the input's scale
``s`` (one scale for every tensor, as the model's own QDQ pairs around a pool have):
each op reads its data through a DequantizeLinear (the model's own, for the pool's
input), each Conv its weights as an int8 initializer through one, and each Conv,
Add or Concat result is requantized (scale ``s``, a zero point that holds its whole
range) before anything else reads it, directly or through one Relu. A float result
is within a few float32 roundings of ``s`` times an integer below 2^9, so its
QuantizeLinear recovers that integer exactly. The ranges are tracked per tensor, so
a tensor whose range does not fit 8 bits is an error, not a silent saturation.

The strict op set is depthwise Conv, Relu, Add and Concat. Every conv maps C
channels to C channels with ``group = C`` and weights of shape ``[C, 1, *k]``:
cost and weight size grow with C, never with C squared. A target
(:class:`~rewriter.target.Target`) may allow more ops; lowerings ask
:meth:`SubgraphBuilder.can` before using one, and the builder refuses any op
outside the target. The only pools it emits are those the target runs natively
(:meth:`SubgraphBuilder.native_max_pool`).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from .legalize import INPUT, Conv, ConvMap, Program, Sum, direct_layout, plan_conv
from .profile import concat_violations, conv_violations
from .site import QdqRegion, Quantization
from .spec import PoolSpec
from .target import PROFILE_OPS, QDQ_OPS, STRICT_OPS, Target

__all__ = ["PROFILE_OPS", "STRICT_OPS", "SubgraphBuilder"]


# The weight scale of the int8 127 that stands for a weight 1: 127 * fl32(1/127) is exactly 1.0.
UNIT_WEIGHT_SCALE = np.float32(1 / 127)
assert np.float32(127) * UNIT_WEIGHT_SCALE == np.float32(1.0)


class QuantizedRangeError(ValueError):
    """A quantized lowering would need a tensor whose range 8 bits do not hold (or an op
    with no exact quantized form): the pool is kept, with this as its reason."""


class SubgraphBuilder:
    """Collects the nodes and constants of one replacement subgraph.

    ``rank`` is the number of spatial axes; spatial axis ``i`` is tensor axis
    ``i + 2``. Names start with ``prefix`` and are unique within the builder;
    the caller picks a prefix that no tensor of the graph already uses.
    ``target`` says what may be emitted; without one, the strict op set plus
    ``allowed`` at ``opset``.
    """

    def __init__(
        self,
        prefix: str,
        channels: int,
        dtype: np.dtype,
        rank: int,
        *,
        allowed: Iterable[str] = (),
        opset: int = 22,
        conv_layout_inputs: Iterable[str] = (),
        target: Optional[Target] = None,
    ) -> None:
        self.prefix = prefix
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.rank = rank
        self.target = target if target is not None else Target.of(allowed, opset)
        self.allowed = self.target.allowed
        self.opset = self.target.opset
        self.conv_layout_inputs = frozenset(conv_layout_inputs)  # graph tensors that come out of a conv
        self.nodes: list[gs.Node] = []
        self.constants: list[gs.Constant] = []
        # Shapes of tensors whose spatial extents a node's check needs (a native pool's input).
        self.shapes: dict[str, tuple] = {}
        # Spatial extents of the tensors whose sizes are known: what laying a conv out
        # within a profile's limits needs (:mod:`rewriter.legalize`).
        self.extents: dict[str, tuple[int, ...]] = {}
        self.fitted_to: set[str] = set()  # the conv rules that made a conv be laid out again
        self.fitted_nodes: set[str] = set()  # names of the nodes of those laid-out programs
        self.conv_macs = 0  # multiply-adds of the convs whose extents are known
        # (tensor, strides): every 1-D conv reading that tensor also applies these strides
        # on its other axes (a pool's last axis taking all its strides at once).
        self.strided_reads: Optional[tuple[str, tuple[int, ...]]] = None
        self._counter = 0
        self.quantization: Optional[Quantization] = None  # set by :meth:`quantized`
        self._source: Optional[tuple[str, str]] = None  # (the pool's float input, its integer tensor)
        self._source_is_dequantized = False  # the pool's input is the model's DQ output itself
        self._source_copy: Optional[gs.Tensor] = None  # how the subgraph reads it (:meth:`_single_read`)
        self._scale = 1.0  # quantized mode: the input's scale, at which every value is stored
        self._rescaled = False  # quantized mode: the model's Q after the pool quantizes otherwise
        self._ranges: dict[str, tuple[int, int]] = {}  # integer range, in input steps, of each value
        self._dequantized: set[str] = set()  # tensors that are a DequantizeLinear's output
        self._requantized: dict[str, tuple[gs.Tensor, int]] = {}  # raw result -> (its Q, the zero point)
        self._read_as: dict[str, gs.Tensor] = {}  # tensor -> the DQ float ops read it through
        self._relu_read: set[str] = set()  # raw results a Relu reads directly
        self.model_scale_source = ""  # set by :meth:`at_model_scale`
        self._model_scale_input: Optional[gs.Tensor] = None  # the source requantized (scale-sharing ops before)
        self._model_scale_output: Optional[Quantization] = None  # requantize the result (scale-sharing ops after)

    # -- quantized mode --------------------------------------------------------
    def quantized(self, source: gs.Tensor, int_input: str, q: Quantization, rescaled: bool = False) -> None:
        """Build in quantized mode: ``source`` (the pool's input) is the model's
        ``DequantizeLinear(int_input)`` with quantization ``q``, and every value of the
        subgraph is an integer count of ``q``'s steps, stored at ``q``'s scale. An empty
        ``int_input`` (the DQ is reached through scale-sharing ops): ``source``
        requantized with ``q``, which gives back the model's integers exactly.
        ``rescaled``: the output's QuantizeLinear has another scale or zero point
        (:meth:`_model_output`)."""
        self.quantization = q
        self._rescaled = rescaled
        self._scale = float(q.scale)
        self.allowed = self.allowed | QDQ_OPS
        self._source_is_dequantized = bool(int_input)
        if not int_input:
            int_input = self.quantize(source, self._scale, q.zero_point, q.dtype).name
        self._source = (source.name, int_input)
        self._ranges[source.name] = q.steps

    def at_model_scale(self, source: gs.Tensor, region: QdqRegion) -> None:
        """Build one conv on ``source``, the model's own DequantizeLinear output, with its
        weights an int8 initializer through DequantizeLinear; the model's QuantizeLinear
        reads the result (:class:`~rewriter.lower.qdq_average.ModelScalePlan`). Through
        scale-sharing ops, the conv reads ``source`` requantized and dequantized, and its
        result is requantized with the (one) output quantization before they read it.
        Any other node, or a conv reading anything else, is an error."""
        assert region.input is not None
        self.allowed = self.allowed | QDQ_OPS
        self.model_scale_source = source.name
        self._dequantized.add(source.name)
        if not region.int_input:
            q = region.input
            requantized = self.quantize(source, float(q.scale), q.zero_point, q.dtype)
            self._model_scale_input = self.dequantize(requantized, float(q.scale), q.zero_point, q.dtype)
        if region.output_through:
            if any(o != region.outputs[0] for o in region.outputs):
                raise QuantizedRangeError("quantized lowering: the mean reaches QuantizeLinear nodes of different "
                                          "quantizations through scale-sharing ops")
            self._model_scale_output = region.outputs[0]

    @property
    def one_conv_per_mean(self) -> bool:
        """In a QDQ region a mean is one conv: a second would round a partial mean."""
        return self.is_quantized or bool(self.model_scale_source)

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None

    @property
    def value_range(self) -> tuple[int, int]:
        """The range of the pool's values, in input steps (quantized mode)."""
        assert self.quantization is not None
        return self.quantization.steps

    def quantize(self, x: gs.Tensor, scale: float, zero_point: int, dtype: np.dtype) -> gs.Variable:
        """QuantizeLinear with a per-tensor ``scale`` and ``zero_point`` of ``dtype``."""
        s = self._constant("q_scale", np.array(scale, dtype=np.float32))
        z = self._constant("q_zero", np.array(zero_point, dtype=dtype))
        return self._same_extents(self._emit("QuantizeLinear", [x, s, z], hint="q"), x)

    def dequantize(self, q: gs.Tensor, scale: float, zero_point: int, dtype: np.dtype) -> gs.Variable:
        """DequantizeLinear with a per-tensor ``scale`` and ``zero_point`` of ``dtype``."""
        s = self._constant("dq_scale", np.array(scale, dtype=np.float32))
        z = self._constant("dq_zero", np.array(zero_point, dtype=dtype))
        y = self._emit("DequantizeLinear", [q, s, z], hint="dq")
        self._dequantized.add(y.name)
        return self._same_extents(y, q)

    def _zero_point_for(self, lo: int, hi: int, name: str) -> int:
        """A zero point of the input's type that holds ``[lo, hi]`` steps: the
        input's own when it does (values stay in the model's integers)."""
        assert self.quantization is not None
        qmin, qmax = self.quantization.int_range
        if qmin <= lo + self.quantization.zero_point and hi + self.quantization.zero_point <= qmax:
            return self.quantization.zero_point
        if hi - lo > qmax - qmin:
            raise QuantizedRangeError(f"quantized lowering: {name} spans [{lo}, {hi}] steps, more than 8 bits hold")
        return qmin - lo

    def _read(self, t: gs.Tensor) -> gs.Tensor:
        """``t`` as a float op may read it in quantized mode: through a DequantizeLinear
        (the pool's input is the model's own; a raw result is requantized first)."""
        if self._model_scale_input is not None and t.name == self.model_scale_source:
            return self._model_scale_input
        if not self.is_quantized or t.name in self._dequantized:
            return t
        if self._source is not None and t.name == self._source[0] and self._source_is_dequantized:
            return self._single_read(t)
        if t.name not in self._read_as:
            q, zp = self._integers(t)
            dq = self.dequantize(q, self._scale, zp, self.quantization.dtype)  # type: ignore[union-attr]
            self._ranges[dq.name] = self._ranges[t.name]
            if t.name in self.extents:
                self.extents[dq.name] = self.extents[t.name]
            self._read_as[t.name] = dq
        return self._read_as[t.name]

    def _single_read(self, source: gs.Tensor) -> gs.Tensor:
        """The model's DequantizeLinear output as the subgraph reads it: through one copy
        conv (one-tap, requantized), so that the model's tensor keeps the one reader the
        pool was. onnxruntime's graph-level QDQ passes look at readers: a DQ read by two
        convs is duplicated, and the int8-to-uint8 conversion then skips the Q before it,
        which unfuses a neighbouring kept QLinearAveragePool and changes its rounding."""
        if self._source_copy is None:
            self._source_copy = source  # what the copy conv itself reads
            self._source_copy = self._read(self.copy(source))
        return self._source_copy

    def _integers(self, t: gs.Tensor) -> tuple[gs.Tensor, int]:
        """``t``'s integers at the input's scale and their zero point: the pool's input's
        own, or a raw result requantized (once)."""
        assert self.quantization is not None
        if self._source is not None and t.name == self._source[0]:
            return gs.Variable(self._source[1]), self.quantization.zero_point
        if t.name not in self._requantized:
            if t.name in self._relu_read:
                raise QuantizedRangeError(f"quantized lowering: {t.name} is read by a Relu and by another op")
            lo, hi = self._ranges[t.name]
            zp = self._zero_point_for(lo, hi, t.name)
            self._requantized[t.name] = (self.quantize(t, self._scale, zp, self.quantization.dtype), zp)
        return self._requantized[t.name]

    def _weights(self, hint: str, weights: np.ndarray) -> gs.Tensor:
        """A conv's weights: the float constant, or in a QDQ region an int8 initializer
        through DequantizeLinear. Weights of one magnitude ``m`` (±1 of a max, a mean's
        1/K at the model's scales) are ±127 at scale ``m``/127, the full int8 range as
        symmetric per-channel quantizers keep weights (rknn-toolkit2 computes ±1 at scale
        1 one step off on about half the values); ±1 dequantizes to exactly ±1.0. Other
        weights (an average's 2^-k in integers, where ties must stay exact at every
        level) are integers times the one power of two that makes them so."""
        if not self.is_quantized and not self.model_scale_source:
            return self._constant(hint + "_w", weights)
        magnitudes = np.unique(np.abs(weights[weights != 0]))
        if len(magnitudes) == 1 and (self.model_scale_source or magnitudes[0] == 1.0):
            scale = UNIT_WEIGHT_SCALE if magnitudes[0] == 1.0 else np.float32(float(magnitudes[0]) / 127)
            return self._int8_weights(hint, (np.sign(weights) * 127).astype(np.int8), float(scale))
        scale = 1.0
        while not np.array_equal(weights / scale, np.round(weights / scale)) and scale > 2.0 ** -24:
            scale /= 2  # 1/K of a power-of-two average: the int8 1 times 2^-k
        ints = np.round(weights / scale)
        if not np.array_equal(ints * scale, weights) or np.abs(ints).max(initial=0) > 127:
            raise QuantizedRangeError("quantized lowering: conv weights are not int8 times a power of two")
        return self._int8_weights(hint, ints.astype(np.int8), scale)

    def _int8_weights(self, hint: str, ints: np.ndarray, scale: float) -> gs.Tensor:
        """``ints`` as an int8 initializer through a DequantizeLinear of ``scale``."""
        w = self.dequantize(self._constant(hint + "_wq", ints), scale, 0, np.dtype(np.int8))
        self.shapes[w.name] = tuple(ints.shape)  # what the fit check reads the kernel from
        return w

    def _conv_range(self, x: gs.Tensor, kernel: np.ndarray, padded: bool) -> tuple[int, int]:
        lo, hi = self._ranges[x.name]
        if padded:  # a padded tap reads 0
            lo, hi = min(lo, 0), max(hi, 0)
        k = kernel.reshape(-1)
        return int(np.floor(np.sum(np.minimum(k * lo, k * hi)))), int(np.ceil(np.sum(np.maximum(k * lo, k * hi))))

    def know_extents(self, t: gs.Tensor, extents: Optional[Sequence[object]]) -> None:
        """Record ``t``'s spatial extents, if they are static."""
        if extents is not None and len(extents) == self.rank and all(isinstance(e, int) and e >= 0 for e in extents):
            self.extents[t.name] = tuple(int(e) for e in extents)  # type: ignore[arg-type]

    # -- names ---------------------------------------------------------------
    def _name(self, hint: str) -> str:
        self._counter += 1
        return f"{self.prefix}/{hint}_{self._counter}"

    def in_conv_layout(self, t: gs.Tensor) -> bool:
        """Whether ``t`` comes out of a conv: ours (every op we emit ends up fused into
        one), or an input the caller vouches for. onnxruntime keeps such tensors in its
        blocked layout and fuses an Add into a conv only when the other operand is one."""
        return t.name.startswith(self.prefix + "/") or t.name in self.conv_layout_inputs

    def can(self, op: str) -> bool:
        """Whether the target allows ``op`` at this opset (:meth:`Target.can`)."""
        return self.target.can(op)

    def _constant(self, hint: str, values: np.ndarray) -> gs.Constant:
        c = gs.Constant(self._name(hint), np.asarray(values))
        self.constants.append(c)
        return c

    def _emit(self, op: str, inputs: list[gs.Tensor], attrs: dict | None = None, hint: str = "", native: bool = False) -> gs.Variable:
        # Concat: the blocks of a mean with windows of different counts, each requantized first.
        if self.model_scale_source and op not in ("Conv", "QuantizeLinear", "DequantizeLinear", "Concat"):
            raise QuantizedRangeError(f"quantized lowering: the model-scale mean is one conv, and would need a {op}")
        if op not in self.allowed and not native:
            raise ValueError(f"{op} is outside the target op set {sorted(self.allowed)}")
        out = gs.Variable(self._name((hint or op.lower()) + "_out"))
        self.nodes.append(gs.Node(op=op, name=self._name(hint or op.lower()), attrs=attrs or {}, inputs=inputs, outputs=[out]))
        return out

    # -- ops -----------------------------------------------------------------
    def depthwise_conv(
        self,
        x: gs.Tensor,
        kernel: np.ndarray,
        *,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        pads: Sequence[int] | None = None,
        hint: str = "conv",
    ) -> gs.Variable:
        """Convolve every channel with the same spatial ``kernel`` (cross-correlation).

        On a profile, a conv outside its limits is laid out again, or rewritten into
        legal convs and Adds computing the same thing (:func:`rewriter.legalize.plan_conv`),
        when ``x``'s extents are known; otherwise it is emitted as asked, and the fit
        check names the limit it breaks."""
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != self.rank:
            raise ValueError(f"kernel rank {kernel.ndim} != spatial rank {self.rank}")
        strides = tuple(strides or [1] * self.rank)
        dilations = tuple(dilations or [1] * self.rank)
        pads = tuple(pads or [0] * (2 * self.rank))
        limits = self.target.conv_limits
        sizes = self.extents.get(x.name)
        broken = conv_violations(kernel.shape, strides, dilations, pads, True, limits) if self.target.profile is not None else []
        if broken and sizes is not None:
            program = plan_conv(ConvMap.of_conv(kernel, strides, dilations, pads, sizes), limits)
            if program is not None:
                self.fitted_to.update(v.rule for v in broken)
                start = len(self.nodes)
                y = self._emit_program(x, program, hint)
                self.fitted_nodes.update(n.name for n in self.nodes[start:])
                return y
        return self._emit_conv(x, kernel, strides, dilations, pads, hint)

    def copy(self, x: gs.Tensor) -> gs.Variable:
        """A new tensor equal to ``x``: a one-tap conv, laid out within the target's limits
        (never elided as the identity it is: the caller needs a tensor of its own)."""
        one = np.ones([1] * self.rank)
        sizes = self.extents.get(x.name)
        if self.target.profile is not None and sizes is not None:
            identity = ConvMap((((0,) * self.rank, 1.0),), (1,) * self.rank, sizes, sizes)
            layout = direct_layout(identity, self.target.conv_limits)
            if layout is not None:
                return self._emit_conv(x, layout.kernel, layout.strides, layout.dilations, layout.pads, "copy")
        return self._emit_conv(x, one, (1,) * self.rank, (1,) * self.rank, (0,) * (2 * self.rank), "copy")

    def _emit_conv(
        self, x: gs.Tensor, kernel: np.ndarray, strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int], hint: str
    ) -> gs.Variable:
        weights = np.broadcast_to(kernel.astype(self.dtype), (self.channels, 1) + kernel.shape).copy()
        if self.model_scale_source and x.name != self.model_scale_source:
            raise QuantizedRangeError("quantized lowering: the model-scale mean is one conv, and would need a second")
        w = self._weights(hint, weights)
        x = self._read(x)
        attrs = {
            "group": self.channels,
            "kernel_shape": list(kernel.shape),
            "strides": list(strides),
            "dilations": list(dilations),
            "pads": list(pads),
        }
        y = self._emit("Conv", [x, w], attrs, hint)
        if self.is_quantized:
            self._ranges[y.name] = self._conv_range(x, kernel, any(pads))
        sizes = self.extents.get(x.name)
        if sizes is not None:
            r = self.rank
            out = [(sizes[a] + pads[a] + pads[a + r] - (kernel.shape[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in range(r)]
            self.know_extents(y, out)
            self.conv_macs += self.channels * int(np.prod(out)) * int(np.prod(kernel.shape))
        return y

    def _emit_program(self, x: gs.Tensor, program: Program, hint: str) -> gs.Tensor:
        if isinstance(program, Conv):
            source = self._emit_program(x, program.source, hint)
            layout = program.layout
            return self._emit_conv(source, layout.kernel, layout.strides, layout.dilations, layout.pads, hint)
        if isinstance(program, Sum):
            return self.add(self._emit_program(x, program.left, hint), self._emit_program(x, program.right, hint))
        assert program is INPUT
        return x

    def conv_along(
        self,
        x: gs.Tensor,
        axis: int,
        taps: Sequence[float],
        *,
        stride: int = 1,
        dilation: int = 1,
        pad_begin: int = 0,
        pad_end: int = 0,
        hint: str = "conv",
    ) -> gs.Variable:
        """A 1-D depthwise conv along spatial ``axis``; the other axes are untouched,
        unless ``x`` is the tensor :attr:`strided_reads` names: then they are strided too."""
        shape = [1] * self.rank
        shape[axis] = len(taps)
        strides, dilations, pads = [1] * self.rank, [1] * self.rank, [0] * (2 * self.rank)
        if self.strided_reads is not None and x.name == self.strided_reads[0]:
            strides = list(self.strided_reads[1])
        strides[axis], dilations[axis] = stride, dilation
        pads[axis], pads[axis + self.rank] = pad_begin, pad_end
        kernel = np.asarray(taps, dtype=np.float64).reshape(shape)
        return self.depthwise_conv(x, kernel, strides=strides, dilations=dilations, pads=pads, hint=hint)

    def relu(self, x: gs.Tensor) -> gs.Variable:
        """Relu; in quantized mode it reads a raw Conv or Add result directly (the one
        Relu between it and its QuantizeLinear), anything else through a DQ."""
        if self.is_quantized:
            direct = x.name in self._ranges and x.name not in self._requantized and x.name not in self._dequantized
            direct = direct and not (self._source is not None and x.name == self._source[0])
            if direct:
                self._relu_read.add(x.name)
            lo, hi = self._ranges[x.name]
            y = self._emit("Relu", [x if direct else self._read(x)])
            self._ranges[y.name] = (max(lo, 0), max(hi, 0))
            return self._same_extents(y, x)
        return self._same_extents(self._emit("Relu", [x]), x)

    def add(self, a: gs.Tensor, b: gs.Tensor, *, within: Optional[tuple[int, int]] = None) -> gs.Variable:
        """``a + b``. ``within``: in quantized mode, the range the sum is known to lie in
        when it is tighter than the sum of the operands' ranges."""
        if self.is_quantized:
            (la, ha), (lb, hb) = self._ranges[a.name], self._ranges[b.name]
            y = self._emit("Add", [self._read(a), self._read(b)])
            self._ranges[y.name] = within if within is not None else (la + lb, ha + hb)
            return self._same_extents(y, a, b)
        return self._same_extents(self._emit("Add", [a, b]), a, b)

    def max_step(self, gain: gs.Tensor, base: gs.Tensor) -> gs.Variable:
        """``base + gain`` where ``gain = relu(other - base)``: ``max(other, base)``, a
        value of the pool (in quantized mode its range is the pool's, not the sum's)."""
        return self.add(gain, base, within=self.value_range if self.is_quantized else None)

    def _same_extents(self, y: gs.Variable, *inputs: gs.Tensor) -> gs.Variable:
        for t in inputs:
            if t.name in self.extents:
                self.extents[y.name] = self.extents[t.name]
                break
        return y

    def concat_runs_natively(self, axis: int) -> bool:
        """Whether the target runs a Concat along spatial ``axis`` (always without a profile)."""
        if self.target.profile is None:
            return True
        return "Concat" in self.target.ops and not concat_violations(axis + 2, self.rank + 2, self.target.concat_axes)

    def concat(self, parts: Sequence[gs.Tensor], axis: int) -> gs.Tensor:
        """Concatenate along spatial ``axis``. A target that does not concatenate on it
        gets the same tensor as a sum of the parts, each padded into place by a conv."""
        known = [self.extents.get(p.name) for p in parts]
        if not self.concat_runs_natively(axis) and all(k is not None for k in known):
            total = sum(k[axis] for k in known)  # type: ignore[index]
            out, start = None, 0
            self.fitted_to.add("ops" if "Concat" not in self.target.ops else "concat_axes")
            for part, sizes in zip(parts, known):
                placed = self.conv_along(part, axis, [1.0], pad_begin=start, pad_end=total - start - sizes[axis], hint="place")  # type: ignore[index]
                out = placed if out is None else self.add(out, placed, within=self._hull(out, placed))  # disjoint supports
                start += sizes[axis]  # type: ignore[index]
            return out  # type: ignore[return-value]
        y = self._emit("Concat", [self._read(p) for p in parts], {"axis": axis + 2})
        if self.is_quantized:
            self._ranges[y.name] = self._hull(*parts)
        if all(k is not None for k in known):
            sizes = list(known[0])  # type: ignore[arg-type]
            sizes[axis] = sum(k[axis] for k in known)  # type: ignore[index]
            self.know_extents(y, sizes)
        return y

    def _hull(self, *parts: gs.Tensor) -> Optional[tuple[int, int]]:
        if not self.is_quantized:
            return None
        ranges = [self._ranges[p.name] for p in parts]
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)

    def _same_range(self, y: gs.Variable, *inputs: gs.Tensor) -> gs.Variable:
        if self.is_quantized:
            self._ranges[y.name] = self._hull(*inputs)  # type: ignore[assignment]
        return y

    def channel_conv(self, x: gs.Tensor, weights: np.ndarray, hint: str = "channel_conv") -> gs.Variable:
        """A group-1 Conv with ``weights`` of shape ``[M, C, *k]`` (no stride, pad or
        dilation), ``C`` the channels ``x`` has: it mixes the channels, which a depthwise
        conv never does (a reduction over a channels-last tensor's H, read as the channel
        axis). Its output has ``M`` channels, so nothing depthwise may read it. Not in a
        QDQ region."""
        if self.is_quantized or self.model_scale_source:
            raise QuantizedRangeError("quantized lowering: no channel-mixing conv in a QDQ region")
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != self.rank + 2:
            raise ValueError(f"channel conv weights {weights.shape} do not have {self.rank} spatial axes")
        kernel = list(weights.shape[2:])
        attrs = {"group": 1, "kernel_shape": kernel, "strides": [1] * self.rank, "dilations": [1] * self.rank, "pads": [0] * (2 * self.rank)}
        w = self._constant(hint + "_w", weights.astype(self.dtype))
        y = self._emit("Conv", [x, w], attrs, hint)
        sizes = self.extents.get(x.name)
        if sizes is not None:
            out = [n - k + 1 for n, k in zip(sizes, kernel)]
            self.know_extents(y, out)
            self.conv_macs += int(np.prod(weights.shape)) * int(np.prod(out))
        return y

    def reshape(self, x: gs.Tensor, shape: Sequence[int], extents: Optional[Sequence[int]] = None) -> gs.Variable:
        """Reshape to ``shape`` (0 copies the input's dim, as for a dynamic batch), where the
        target allows Reshape: a reduction's rank change. ``extents``: the result's spatial
        extents, when later convs read it."""
        if not self.can("Reshape"):
            raise ValueError("Reshape is outside the target op set")
        y = self._emit("Reshape", [self._read(x), self._constant("shape", np.array(list(shape), np.int64))], hint="reshape")
        self.know_extents(y, extents)
        return y

    # -- ops a profile may allow ----------------------------------------------
    def max(self, a: gs.Tensor, b: gs.Tensor) -> gs.Variable:
        return self._same_range(self._same_extents(self._emit("Max", [self._read(a), self._read(b)]), a, b), a, b)

    def pad_edge(self, x: gs.Tensor, axis: int, begin: int, end: int) -> gs.Variable:
        """Pad(mode=edge) along spatial ``axis``."""
        pads = [0] * (2 * (self.rank + 2))
        pads[axis + 2], pads[axis + 2 + self.rank + 2] = begin, end
        if self.opset < 11:  # Pad-2 takes pads as an attribute
            y = self._emit("Pad", [self._read(x)], {"mode": "edge", "pads": pads}, "pad")
        else:
            y = self._emit("Pad", [self._read(x), self._constant("pads", np.array(pads, np.int64))], {"mode": "edge"}, "pad")
        self._same_range(y, x)
        if x.name in self.extents:
            sizes = list(self.extents[x.name])
            sizes[axis] += begin + end
            self.know_extents(y, sizes)
        return y

    def scale_by_map(self, x: gs.Tensor, op: str, values: np.ndarray) -> gs.Variable:
        """Mul or Div by a constant map over the spatial positions (broadcast over N and C)."""
        if self.is_quantized:
            raise QuantizedRangeError(f"quantized lowering: no {op} by a constant map in a QDQ region")
        values = np.asarray(values, dtype=np.float64).reshape((1, 1) + tuple(values.shape))
        y = self._emit(op, [x, self._constant(op.lower() + "_map", values.astype(self.dtype))], hint=op.lower())
        return self._same_extents(y, x)

    def native_max_pool(self, x: gs.Tensor, spec: PoolSpec, hint: str = "maxpool") -> gs.Variable:
        """A MaxPool node with exactly ``spec``'s attributes (explicit pads, auto_pad NOTSET),
        only if the target runs it natively (:meth:`Target.native_pool_refusal`)."""
        return self.native_pool("MaxPool", x, spec, hint)

    def native_pool(self, op: str, x: gs.Tensor, spec: PoolSpec, hint: str = "") -> gs.Variable:
        """A MaxPool, AveragePool, GlobalMaxPool or GlobalAveragePool node computing ``spec``
        (explicit pads, auto_pad NOTSET; count_include_pad written when set), only if the
        target runs exactly it natively; ``spec.axes`` give the input's extents."""
        why = self.target.native_pool_refusal(op, spec)
        if why is not None:
            raise ValueError(f"{op} {spec.describe()} is not native on the target: {why}")
        if spec.auto_pad != "NOTSET" or spec.ceil_mode:
            raise ValueError(f"a native {op} is emitted with explicit pads and no ceil_mode")
        attrs: dict = {}
        if not op.startswith("Global"):
            attrs = {
                "kernel_shape": [a.kernel for a in spec.axes],
                "strides": [a.stride for a in spec.axes],
                "pads": [a.pad_begin for a in spec.axes] + [a.pad_end for a in spec.axes],
            }
            if any(a.dilation != 1 for a in spec.axes):
                attrs["dilations"] = [a.dilation for a in spec.axes]
            if op == "AveragePool" and spec.count_include_pad:
                attrs["count_include_pad"] = 1
        if self.is_quantized and op not in ("MaxPool", "GlobalMaxPool"):
            raise QuantizedRangeError(f"quantized lowering: a native {op} would round its own way")
        y = self._same_range(self._emit(op, [self._read(x)], attrs, hint or op.lower(), native=True), x)
        self.shapes[x.name] = (None, self.channels) + tuple(a.size for a in spec.axes)
        self.shapes[y.name] = (None, self.channels) + spec.out_shape
        self.know_extents(y, spec.out_shape)
        return y

    # -- results -------------------------------------------------------------
    def bind_output(self, produced: gs.Tensor, target: gs.Variable, source: gs.Tensor) -> None:
        """Make the subgraph write ``target`` (the replaced node's output tensor).

        When the lowering produced nothing (``produced is source``), a one-tap
        selection conv copies the input so that the output tensor still exists.
        Nodes of the subgraph that read ``produced`` (one pool built from another)
        read ``target`` instead.
        """
        if produced is source or produced.name in self._dequantized:
            produced = self.copy(source)
        if self.is_quantized:
            produced = self._model_output(produced)
        if self._model_scale_output is not None:
            q = self._model_scale_output
            produced = self.dequantize(self.quantize(produced, float(q.scale), q.zero_point, q.dtype), float(q.scale), q.zero_point, q.dtype)
        for node in self.nodes:
            for tensors in (node.outputs, node.inputs):
                for i, tensor in enumerate(tensors):
                    if tensor is produced:
                        tensors[i] = target  # keeps graphsurgeon's producer and consumer links in sync

    def _model_output(self, produced: gs.Tensor) -> gs.Tensor:
        """The float the model's QuantizeLinear reads: the result requantized with the
        input's zero point, dequantized with the input's scale. That is exactly the value
        the original pool returns (one of its DQ'd inputs, for a max).

        When that Q has another scale (``rescaled``), onnxruntime would merge a final
        ``Q(s) -> DQ(s)`` pair into it and round our last Add straight at the output's
        scale (QLinearAdd, not bit-exact). So the result's integers go through scale 1
        first: a one-tap conv with the int8 weight 127 at weight scale 1/(127 s), requantized at
        scale 1 (``k * s * fl(1/s)`` is within 5e-5 of the integer ``k``), then dequantized
        at ``s``: no pair to merge."""
        q = self.quantization
        assert q is not None
        _, zp = self._integers(produced)  # requantized: with the input's zero point for a value of the pool
        if zp != q.zero_point:
            raise QuantizedRangeError(f"quantized lowering: the result spans {self._ranges[produced.name]} steps, not the input's")
        if not self._rescaled:
            return self._read(produced)
        one = np.full((self.channels, 1) + (1,) * self.rank, 127, np.int8)
        weights = self._int8_weights("unit", one, float(np.float32(1.0 / (127 * self._scale))))
        r = self.rank
        attrs = {"group": self.channels, "kernel_shape": [1] * r, "strides": [1] * r, "dilations": [1] * r, "pads": [0] * (2 * r)}
        x = self._read(produced)
        unit = self._same_extents(self._emit("Conv", [x, weights], attrs, "unit_scale"), x)
        return self.dequantize(self.quantize(unit, 1.0, zp, q.dtype), self._scale, zp, q.dtype)

    def op_counts(self) -> Counter:
        return Counter(node.op for node in self.nodes)

    def summary(self) -> str:
        """E.g. ``8 Conv, 4 Relu, 4 Add`` for the report's "became" column."""
        counts = self.op_counts()
        order = ["Conv", "Relu", "Add", "Concat"] + sorted(set(counts) - STRICT_OPS - QDQ_OPS) + sorted(QDQ_OPS)
        return ", ".join(f"{counts[op]} {op}" for op in order if counts[op]) or "nothing"


