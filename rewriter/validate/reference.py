"""Validation's reference: the original's outputs on every suite, recorded once
(Polygraphy's saved run results), with the activations node checks start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import onnx

from .. import model_io
from ..graphs import clear_negative_dims, weightless_copy
from ..input_dims import graph_inputs
from ..model_io import first_line
from . import memory
from .inputs import (
    DEFAULT_SUITES, InputDescription, InputSuite, ValidationSetupError, describe_inputs, feed_bytes, make_feeds, smaller_shape_hint,
)
from .localize import Localize, recorded_starts
from .noise import (
    NOISE_OPTIMIZATION, ROUNDING_EPSILON, OutputNoise, judge_optimizer_floor, noise_of_run, output_noise, perturbed, rounding_targets,
    suspect,
)
from .quantized import AS_WRITTEN, INTEGER_KERNELS, QUANTIZED_LEVELS, exact_outputs, is_quantized
from .runners import OrtRunner, stale_value_info


@dataclass
class ReferenceRun:
    """What the original computed on every suite (Polygraphy's saved run results).
    Recorded once and compared with any number of candidates, so the original's
    weights need not stay in memory while a candidate runs.

    Nothing big is held for all suites at once: a suite's inputs are regenerated
    from its seed when asked for (:meth:`suite_feeds`; the user's inputs are kept
    as given), an exposed tensor that is a graph input is that run's input, and
    recorded arrays of :data:`memory.SPILL_MIN_BYTES` or more wait in a temporary
    folder, loaded one at a time (:meth:`recorded_output`)."""

    skeleton: onnx.ModelProto  # the original's graph without its large weights
    suites: list[InputSuite]
    seed: int
    inputs: list[InputDescription]  # what every suite fills
    user_inputs: Optional[dict[str, np.ndarray]]
    recorded: list[dict[str, Any]]  # per run: graph outputs and exposed tensors, arrays or files of ``spill``
    exposed: list[str]  # the tensors node checks start from (see recorded_starts)
    types: dict[str, int]
    spill: memory.SpillFolder = field(default_factory=memory.SpillFolder)
    # Per suite, each graph output's rounding noise (empty when not measured).
    noise: list[dict[str, OutputNoise]] = field(default_factory=list)
    # The levels candidates run at: as written, and for a quantized model also with
    # onnxruntime's integer kernels (see :mod:`rewriter.validate.quantized`).
    levels: list[str] = field(default_factory=lambda: [AS_WRITTEN])
    exact: list[str] = field(default_factory=list)  # the graph outputs compared exactly
    # Per run, the graph outputs of the original at INTEGER_KERNELS (quantized models only).
    optimized: list[dict[str, Any]] = field(default_factory=list)
    # Said once to the user: the original disagreeing with itself, stale value_info ignored.
    warnings: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def run_names(self) -> list[str]:
        """One name per run: the suites', then ``"user"`` for the user's inputs."""
        return [s.name for s in self.suites] + (["user"] if self.user_inputs else [])

    def suite_feeds(self, index: int) -> dict[str, np.ndarray]:
        """The inputs of run ``index`` (see :attr:`run_names`), made anew for a suite."""
        if 0 <= index < len(self.suites):
            return make_feeds(self.inputs, self.suites[index], self.seed)
        if self.user_inputs and index == len(self.suites):
            return dict(self.user_inputs)
        raise IndexError(f"run {index} of {len(self.run_names)}")

    def recorded_output(self, index: int, name: str, level: str = AS_WRITTEN) -> np.ndarray:
        """What the original computed for ``name`` (a graph output or an exposed tensor) on run
        ``index``, at graph-optimization ``level`` (another level than as written: graph outputs only)."""
        if level != AS_WRITTEN:
            if level != INTEGER_KERNELS or index >= len(self.optimized) or name not in self.optimized[index]:
                raise KeyError(f"{name} at {level}")
            return memory.SpillFolder.load(self.optimized[index][name])
        kept = self.recorded[index].get(name)
        if kept is not None:
            return memory.SpillFolder.load(kept)
        if name in self.exposed:  # a graph input: the run's own input
            return self.suite_feeds(index)[name]
        raise KeyError(name)

    @property
    def feeds(self) -> Sequence[tuple[str, dict[str, np.ndarray]]]:
        """``(run name, inputs)`` per run, made when indexed (a lazy sequence: keep one at a time)."""
        return _LazySequence(len(self.run_names), lambda i: (self.run_names[i], self.suite_feeds(i)))

    @property
    def outputs(self) -> Sequence[Mapping[str, np.ndarray]]:
        """Per run, a mapping of what :meth:`recorded_output` gives, loaded on first lookup."""
        return _LazySequence(len(self.recorded), lambda i: _RecordedRun(self, i))

    def held_bytes(self) -> int:
        """Bytes of arrays this object holds in memory (not counting files)."""
        arrays = [v for run in self.recorded for v in run.values() if isinstance(v, np.ndarray)]
        return sum(a.nbytes for a in arrays + list((self.user_inputs or {}).values()))

    def close(self) -> None:
        """Remove the recorded files now (they also go when this object is collected)."""
        self.spill.close()


class _LazySequence(Sequence):
    def __init__(self, length: int, make: Callable[[int], Any]) -> None:
        self._length, self._make = length, make

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._make(index)


class _RecordedRun(Mapping):
    """One run's recorded tensors, each loaded on first lookup and kept while this object lives."""

    def __init__(self, reference: ReferenceRun, index: int) -> None:
        self._reference, self._index, self._loaded = reference, index, {}
        inputs = [n for n in reference.exposed if n not in reference.recorded[index]]
        self._names = list(reference.recorded[index]) + inputs

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._loaded:
            self._loaded[name] = self._reference.recorded_output(self._index, name)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def record_reference(
    original: onnx.ModelProto,
    *,
    suites: Iterable[InputSuite] = DEFAULT_SUITES,
    user_inputs: Optional[Mapping[str, np.ndarray]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    localize: Optional[Localize] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    measure_noise: bool = True,
) -> ReferenceRun:
    """Run the original on onnxruntime over every suite (and the user's inputs).

    ``localize`` says which nodes will be checked one by one later (see
    :func:`~rewriter.validate.localize.recorded_starts`): the tensors their checks
    start from are recorded too (default: every pool node's input).
    ``measure_noise`` also runs the original with all graph optimizations, to
    measure each output's own rounding noise (:mod:`rewriter.validate.noise`).
    A quantized original is always also run that way, and its outputs kept: a
    candidate runs at both levels, each compared with the original at its own
    (:mod:`rewriter.validate.quantized`).
    Raises :class:`ValidationSetupError` when the original does not run, or when
    validation would need more memory than is available (checked before anything
    big is allocated, see :func:`~rewriter.validate.memory.estimate_validation_memory`).
    """
    suites = list(suites)
    user_inputs = dict(user_inputs) if user_inputs else None
    user_shapes = {k: v.shape for k, v in (user_inputs or {}).items()}
    inputs = describe_inputs(original, {**user_shapes, **dict(input_shapes or {})}) if suites else []
    types, sizes, ranks = _inferred_tensors(original, inputs)
    expose = recorded_starts(original, localize, ranks)
    needed = graph_inputs(original)
    to_record = [name for name in expose if name not in needed]  # a graph input is each run's own input
    runs = len(suites) + bool(user_inputs)
    _check_memory(inputs, user_inputs, sizes, [o.name for o in original.graph.output] + to_record, runs)
    try:
        runner = OrtRunner(original, expose=to_record, elem_types=types)
    except Exception as err:  # onnxruntime raises several unrelated types
        raise ValidationSetupError(f"the original model does not load in onnxruntime: {first_line(err)}") from err
    reference = ReferenceRun(weightless_copy(original), suites, seed, inputs, user_inputs, [], expose, types, ranks=ranks)
    if stale_value_info(original):
        reference.warnings.append(
            "the original's value_info holds dims computed from -1 or 0 (a dynamic dim written as a number): "
            "validation runs both models without it (onnxruntime's optimizer trusts it and can miscompute the model; --overwrite-input-shape writes a model without it)"
        )
    for index, suite_name in enumerate(reference.run_names):
        if progress:
            progress(f"validating: the original on {suite_name} inputs ({index + 1}/{runs})")
        feeds = reference.suite_feeds(index)
        try:
            outputs = runner.run(feeds)
        except Exception as err:
            raise ValidationSetupError(f"the original model fails on {suite_name} inputs: {first_line(err)}") from err
        del feeds
        reference.recorded.append({name: reference.spill.keep(outputs.pop(name)) for name in list(outputs)})
        del outputs
    del runner
    model_io.release_freed_memory()
    if is_quantized(original):
        reference.levels, reference.exact = list(QUANTIZED_LEVELS), exact_outputs(original, types)
    if measure_noise or INTEGER_KERNELS in reference.levels:
        noise = _measure_noise(original, reference, progress, keep=INTEGER_KERNELS in reference.levels)
        reference.noise = noise if measure_noise else []
    return reference


def _measure_noise(
    original: onnx.ModelProto, reference: "ReferenceRun", progress: Optional[Callable[[str], None]], keep: bool = False
) -> list[dict[str, OutputNoise]]:
    """Each graph output's gap between the original optimized and as written, per run;
    ``keep`` also keeps the optimized outputs in ``reference.optimized`` (it is the
    reference of a quantized candidate's run at that level)."""
    names = [o.name for o in original.graph.output]
    try:
        runner = OrtRunner(original, optimization=NOISE_OPTIMIZATION)
    except Exception as err:  # an optimizer failure is onnxruntime's problem: no floor, strict tolerance
        if keep:
            raise ValidationSetupError(f"the original model does not load in onnxruntime at {NOISE_OPTIMIZATION}: {first_line(err)}") from err
        return []
    noise = []
    rounding = RoundingFloor(original, reference)
    for index, run_name in enumerate(reference.run_names):
        if progress:
            progress(f"validating: the original's own rounding noise on {run_name} inputs ({index + 1}/{len(reference.run_names)})")
        try:
            optimized = runner.run(reference.suite_feeds(index))
        except Exception as err:
            if keep:
                raise ValidationSetupError(f"the original model fails on {run_name} inputs at {NOISE_OPTIMIZATION}: {first_line(err)}") from err
            noise.append({})
            continue
        expected = {name: reference.recorded_output(index, name) for name in names}
        floors = noise_of_run(expected, optimized, names)
        suspects = [name for name, floor in floors.items() if suspect(floor, expected[name])]
        if suspects:
            moved = rounding.measure(index, expected, suspects)
            floors.update({name: judge_optimizer_floor(floors[name], moved.get(name)) for name in suspects})
        noise.append(floors)
        if keep:
            reference.optimized.append({name: reference.spill.keep(optimized[name]) for name in names})
        del optimized, expected
    del runner, rounding
    model_io.release_freed_memory()
    faults = _fault_warning(reference, noise)
    if faults:
        reference.warnings.append(faults)
    return noise


class RoundingFloor:
    """How far rounding-sized errors where the network computes move the original's outputs
    (see :mod:`rewriter.validate.noise`): its perturbed session is made on the first
    measurement and reused for every run."""

    def __init__(self, original: onnx.ModelProto, reference: ReferenceRun) -> None:
        self.original, self.reference = original, reference
        self._runner: Any = None
        self._scalars: dict[str, np.ndarray] = {}
        self._broken = False

    def measure(self, index: int, expected: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, float]:
        """The floor of each of ``names`` on run ``index``; empty when it cannot be measured."""
        if self._runner is None and not self._broken:
            self._start()
        if self._runner is None:
            return {}
        try:
            moved = self._runner.run({**self.reference.suite_feeds(index), **self._scalars})
        except Exception:  # a model the perturbation breaks: the optimizer's floor stays unjudged
            return {}
        return {name: output_noise(expected[name], moved[name]).max_abs for name in names if name in moved}

    def _start(self) -> None:
        targets = rounding_targets(self.original, self.reference.types, self.reference.ranks)
        try:
            if not targets:
                raise ValueError("nothing to move")
            with perturbed(self.original, targets, relative=True) as model:
                self._runner = OrtRunner(model)
        except Exception:
            self._broken = True
            return
        for t in targets:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            self._scalars[t.spread], self._scalars[t.shift] = np.array(ROUNDING_EPSILON, dtype), np.array(0.0, dtype)


def _fault_warning(reference: ReferenceRun, noise: Sequence[Mapping[str, OutputNoise]]) -> str:
    """One line naming the outputs on which the optimized original disagreed with itself beyond rounding."""
    worst: dict[str, tuple[float, float, str]] = {}
    for index, floors in enumerate(noise):
        for name, floor in floors.items():
            if floor.fault is None:
                continue
            scale = float(np.max(np.abs(reference.recorded_output(index, name)), initial=0.0))
            ratio = floor.fault / scale if scale > 0 else float("inf")
            if name not in worst or ratio > worst[name][0]:
                worst[name] = (ratio, floor.fault / floor.rounding if floor.rounding else float("inf"), reference.run_names[index])
    if not worst:
        return ""
    shown = ", ".join(f"'{name}' by {ratio:.3g}x its max |value| ({times:.3g}x what rounding does, {suite} inputs)"
                      for name, (ratio, times, suite) in list(worst.items())[:3])
    more = f" and {len(worst) - 3} more output(s)" if len(worst) > 3 else ""
    return (
        f"the original disagrees with itself: onnxruntime at {NOISE_OPTIMIZATION} vs as written differs on {shown}{more}; "
        "that is a fault, not rounding (likely value_info computed from -1 or 0 dims, or an onnxruntime optimizer bug), "
        "so it widens no tolerance: outputs are judged against the floors that remain"
    )


def _inferred_tensors(
    model: onnx.ModelProto, inputs: Sequence[InputDescription]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Element type, size in bytes where the shape is static, and rank, of every
    tensor shape inference resolves with the inputs at the shapes validation feeds."""
    light = weightless_copy(model)
    clear_negative_dims(light)  # before the inputs are fixed: it drops value_info computed from a -1
    fixed = {i.name: i.shape for i in inputs}
    for value in light.graph.input:
        if value.name in fixed:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for d in fixed[value.name]:
                shape.dim.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception:
        inferred = light
    ig = inferred.graph
    types, sizes, ranks = {}, {}, {}
    for v in list(ig.input) + list(ig.value_info) + list(ig.output):
        tt = v.type.tensor_type
        types[v.name] = tt.elem_type
        if tt.HasField("shape"):
            ranks[v.name] = len(tt.shape.dim)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if tt.HasField("shape") and None not in dims and tt.elem_type not in (0, onnx.TensorProto.STRING):
            try:
                itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
            except (KeyError, TypeError, ValueError):  # a type numpy cannot hold: size unknown
                continue
            sizes[v.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types, sizes, ranks


def _check_memory(
    inputs: Sequence[InputDescription],
    user_inputs: Optional[Mapping[str, np.ndarray]],
    sizes: Mapping[str, int],
    recorded: Sequence[str],
    runs: int,
) -> None:
    """Refuse, before allocating anything big, a validation that cannot fit in memory."""
    available = memory.available_memory_bytes()
    if available is None:
        return
    suite_bytes = sum(feed_bytes(i) for i in inputs)
    estimate = memory.estimate_validation_memory(
        suite_bytes,
        sum(a.nbytes for a in (user_inputs or {}).values()),
        max([*sizes.values(), *(feed_bytes(i) for i in inputs)], default=0),
        [sizes.get(name, 0) for name in recorded],
        runs,
    )
    if estimate.total > available:
        raise ValidationSetupError(
            f"validation would need about {memory.gib(estimate.total)} of memory ({estimate.describe()}), "
            f"{memory.gib(available)} is available{smaller_shape_hint(inputs)}"
        )

