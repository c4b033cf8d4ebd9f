"""Validation's runners: each executes one model, built once and run on any number of feeds.

:class:`OrtRunner` is onnxruntime on CPU; :class:`TrueConvolutionRunner` runs a
model as a true-convolution backend would. Any callable ``(model) -> runner``
with ``output_names`` and ``run(feeds)`` can stand in for either.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import onnx

from .. import weights_on_disk



# Graph optimizations off: we validate the graph as written, node by node, so
# that onnxruntime's own fusions can neither hide nor cause a difference.
ORT_OPTIMIZATION = "ORT_DISABLE_ALL"


# Models at least this big reach onnxruntime as a file with external data (see OrtRunner).
SESSION_FROM_FILE_MIN_BYTES = 32 << 20


class OrtRunner:
    """One onnxruntime CPU session for one model, built once and reused.

    ``expose`` names intermediate tensors to return as extra outputs, with
    their element types in ``elem_types`` where known.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        expose: Sequence[str] = (),
        elem_types: Optional[Mapping[str, int]] = None,
        optimization: str = ORT_OPTIMIZATION,
    ) -> None:
        import onnxruntime as ort  # imported lazily: the CLI starts fast without validation

        ort.set_default_logger_severity(4)  # failures reach us as exceptions; keep stderr to one line
        options = ort.SessionOptions()
        options.log_severity_level = 4
        # Prepacking keeps a second, reordered copy of every Conv/MatMul weight: a few
        # runs do not need the speed, and peak memory is at least a copy smaller.
        options.add_session_config_entry("session.disable_prepacking", "1")
        # The memory pattern plans one block for a run's intermediates, about twice what
        # the arena reuses without it (measured on a rewritten MaxPool); a few runs need no plan.
        options.enable_mem_pattern = False
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
        with _without_stale_value_info(model):
            self._start(ort, options, model, expose, elem_types)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _start(self, ort, options, model: onnx.ModelProto, expose: Sequence[str], elem_types: Optional[Mapping[str, int]]) -> None:
        if not weights_on_disk.has_weights_on_disk(model) and weights_on_disk.serialized_size(model) < SESSION_FROM_FILE_MIN_BYTES:
            data = _serialize_with_outputs(model, expose, elem_types or {})
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        else:
            # A big model (or one past protobuf's 2 GiB): hand onnxruntime a file with
            # external data. It maps the weights from the file instead of holding a
            # serialized copy and a copy of its own next to ours (peak memory).
            with tempfile.TemporaryDirectory(prefix="onnx-poolrewrite-") as folder:
                path = _save_with_outputs(model, expose, elem_types or {}, Path(folder))
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, dict(feeds))))


class TrueConvolutionRunner:
    """Runs a model as a true-convolution backend would (``--flip-kernels`` output):
    Conv and ConvTranspose from their definition in numpy, every other node on
    onnxruntime one by one (on onnx's reference evaluator when control flow holds
    convs). The convs never touch onnxruntime."""

    def __init__(self, model: onnx.ModelProto, expose: Sequence[str] = (), elem_types: Optional[Mapping[str, int]] = None) -> None:
        from ..true_conv import TrueConvolutionEvaluator, TrueConvolutionHybridEvaluator

        copy = onnx.ModelProto()
        copy.ParseFromString(_serialize_with_outputs(model, expose, elem_types or {}))
        if TrueConvolutionHybridEvaluator.applicable(copy):
            self.evaluator = TrueConvolutionHybridEvaluator(copy)
        else:
            self.evaluator = TrueConvolutionEvaluator(copy)
        self.output_names = self.evaluator.output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.evaluator.run(feeds)


def stale_value_info(model: onnx.ModelProto) -> bool:
    """Whether the main graph's value_info was computed from dims written as numbers
    that are not sizes: a -1 anywhere, or a graph input dim of 0 (how some exporters
    write "dynamic"). Shape inference takes them literally (1 + (-1 - 3) // 2 = -1, then
    0, ...), and onnxruntime's optimizer trusts the result: measured on a Paddle-style
    detector, its NCHWc run was off by 0.84 of the output's magnitude."""
    g = model.graph
    if not g.value_info:
        return False

    def dims(values: Sequence[onnx.ValueInfoProto]) -> Iterator[int]:
        for v in values:
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                yield from (d.dim_value for d in v.type.tensor_type.shape.dim if d.HasField("dim_value"))

    return any(d <= 0 for d in dims(g.input)) or any(d < 0 for d in dims(list(g.value_info) + list(g.output)))


@contextmanager
def _without_stale_value_info(model: onnx.ModelProto) -> Iterator[None]:
    """``model`` without its value_info while a session is made, when that value_info is stale
    (:func:`stale_value_info`): onnxruntime infers the shapes again. Restored on exit."""
    if not stale_value_info(model):
        yield
        return
    kept = list(model.graph.value_info)
    del model.graph.value_info[:]
    try:
        yield
    finally:
        model.graph.value_info.extend(kept)


@contextmanager
def _extra_outputs(model: onnx.ModelProto, names: Sequence[str], elem_types: Mapping[str, int]) -> Iterator[None]:
    """Temporarily expose ``names`` as graph outputs of ``model`` (no copy of its weights)."""
    existing = {o.name for o in model.graph.output}
    added = [n for n in names if n not in existing]
    for name in added:
        value = model.graph.output.add()
        value.name = name
        if elem_types.get(name):  # onnxruntime also takes an untyped output
            value.type.tensor_type.elem_type = elem_types[name]
    try:
        yield
    finally:
        if added:
            del model.graph.output[len(model.graph.output) - len(added):]


def _serialize_with_outputs(model: onnx.ModelProto, names: Sequence[str], elem_types: Mapping[str, int]) -> bytes:
    with _extra_outputs(model, names, elem_types):
        return model.SerializeToString()


def _save_with_outputs(model: onnx.ModelProto, names: Sequence[str], elem_types: Mapping[str, int], folder: Path) -> Path:
    """Write ``model`` (plus extra outputs) into ``folder``, its large weights in one
    external file that onnxruntime maps; ``model`` ends as it began."""
    path = folder / "model.onnx"
    with _extra_outputs(model, names, elem_types):
        weights_on_disk.save_with_external_data(model, path, "weights.bin")
    return path

