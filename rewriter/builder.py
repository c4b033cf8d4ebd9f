"""A small subgraph builder over onnx-graphsurgeon.

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

from .spec import PoolSpec
from .target import PROFILE_OPS, STRICT_OPS, Target

__all__ = ["PROFILE_OPS", "STRICT_OPS", "SubgraphBuilder"]


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
        self._counter = 0

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
        """Convolve every channel with the same spatial ``kernel`` (cross-correlation)."""
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != self.rank:
            raise ValueError(f"kernel rank {kernel.ndim} != spatial rank {self.rank}")
        weights = np.broadcast_to(kernel.astype(self.dtype), (self.channels, 1) + kernel.shape).copy()
        w = self._constant(hint + "_w", weights)
        attrs = {
            "group": self.channels,
            "kernel_shape": list(kernel.shape),
            "strides": list(strides or [1] * self.rank),
            "dilations": list(dilations or [1] * self.rank),
            "pads": list(pads or [0] * (2 * self.rank)),
        }
        return self._emit("Conv", [x, w], attrs, hint)

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
        """A 1-D depthwise conv along spatial ``axis``; the other axes are untouched."""
        shape = [1] * self.rank
        shape[axis] = len(taps)
        strides, dilations, pads = [1] * self.rank, [1] * self.rank, [0] * (2 * self.rank)
        strides[axis], dilations[axis] = stride, dilation
        pads[axis], pads[axis + self.rank] = pad_begin, pad_end
        kernel = np.asarray(taps, dtype=np.float64).reshape(shape)
        return self.depthwise_conv(x, kernel, strides=strides, dilations=dilations, pads=pads, hint=hint)

    def relu(self, x: gs.Tensor) -> gs.Variable:
        return self._emit("Relu", [x])

    def add(self, a: gs.Tensor, b: gs.Tensor) -> gs.Variable:
        return self._emit("Add", [a, b])

    def concat(self, parts: Sequence[gs.Tensor], axis: int) -> gs.Variable:
        """Concatenate along spatial ``axis``."""
        return self._emit("Concat", list(parts), {"axis": axis + 2})

    # -- ops a profile may allow ----------------------------------------------
    def max(self, a: gs.Tensor, b: gs.Tensor) -> gs.Variable:
        return self._emit("Max", [a, b])

    def pad_edge(self, x: gs.Tensor, axis: int, begin: int, end: int) -> gs.Variable:
        """Pad(mode=edge) along spatial ``axis``."""
        pads = [0] * (2 * (self.rank + 2))
        pads[axis + 2], pads[axis + 2 + self.rank + 2] = begin, end
        if self.opset < 11:  # Pad-2 takes pads as an attribute
            return self._emit("Pad", [x], {"mode": "edge", "pads": pads}, "pad")
        return self._emit("Pad", [x, self._constant("pads", np.array(pads, np.int64))], {"mode": "edge"}, "pad")

    def scale_by_map(self, x: gs.Tensor, op: str, values: np.ndarray) -> gs.Variable:
        """Mul or Div by a constant map over the spatial positions (broadcast over N and C)."""
        values = np.asarray(values, dtype=np.float64).reshape((1, 1) + tuple(values.shape))
        return self._emit(op, [x, self._constant(op.lower() + "_map", values.astype(self.dtype))], hint=op.lower())

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
        y = self._emit(op, [x], attrs, hint or op.lower(), native=True)
        self.shapes[x.name] = (None, self.channels) + tuple(a.size for a in spec.axes)
        self.shapes[y.name] = (None, self.channels) + spec.out_shape
        return y

    # -- results -------------------------------------------------------------
    def bind_output(self, produced: gs.Tensor, target: gs.Variable, source: gs.Tensor) -> None:
        """Make the subgraph write ``target`` (the replaced node's output tensor).

        When the lowering produced nothing (``produced is source``), a one-tap
        selection conv copies the input so that the output tensor still exists.
        Nodes of the subgraph that read ``produced`` (one pool built from another)
        read ``target`` instead.
        """
        if produced is source:
            produced = self.depthwise_conv(source, np.ones([1] * self.rank), hint="copy")
        for node in self.nodes:
            for tensors in (node.outputs, node.inputs):
                for i, tensor in enumerate(tensors):
                    if tensor is produced:
                        tensors[i] = target  # keeps graphsurgeon's producer and consumer links in sync

    def op_counts(self) -> Counter:
        return Counter(node.op for node in self.nodes)

    def summary(self) -> str:
        """E.g. ``8 Conv, 4 Relu, 4 Add`` for the report's "became" column."""
        counts = self.op_counts()
        order = ["Conv", "Relu", "Add", "Concat"] + sorted(set(counts) - STRICT_OPS)
        return ", ".join(f"{counts[op]} {op}" for op in order if counts[op]) or "nothing"


