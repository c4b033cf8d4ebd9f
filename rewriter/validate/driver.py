"""Validation's driver: the candidate against the recorded original, output by
output and then node by node (:func:`compare_with_reference`), or both runs in
one call (:func:`validate_models`)."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import onnx

from .. import model_io
from ..input_dims import graph_inputs
from ..model_io import first_line
from .arrays import all_finite
from .comparator import OutputComparison, ToleranceComparator, compare_exact
from .inputs import DEFAULT_SUITES, InputSuite
from .localize import CheckStarts, Localize, Paths, check_node, check_starts_for, nodes_to_check
from .noise import PERTURBATION_METHOD, OutputNoise, PerturbedTarget, output_noise, perturbed
from .quantized import AS_WRITTEN, EXACT_REFERENCE, INTEGER_KERNELS
from .reference import ReferenceRun, record_reference
from .result import ValidationResult
from .runners import OrtRunner
from .ties import allow_tie_effects, tie_sites


def compare_with_reference(
    reference: ReferenceRun,
    candidate: onnx.ModelProto,
    *,
    comparator: Optional[ToleranceComparator] = None,
    localize: Optional[Localize] = None,
    progress: Optional[Callable[[str], None]] = None,
    candidate_runner: Callable[..., Any] = OrtRunner,
    check_starts: Optional[CheckStarts] = None,
    allow_ties: bool = True,
) -> ValidationResult:
    """Run the candidate on the recorded inputs and compare every graph output,
    then localize: each recorded pool node of the original against the candidate's
    computation between the same tensors. ``candidate_runner`` executes the
    candidate: :class:`OrtRunner`, or :class:`TrueConvolutionRunner` for a model
    meant for a true-convolution backend.

    ``localize`` lists the output names of the nodes to check (default: every pool
    node the candidate rewrote), or maps each to the :class:`NodeCheckStart` its
    check starts from; names of a list start where ``check_starts`` (default:
    :func:`default_check_starts`) says. ``allow_ties``: quantized averages may round their
    outputs at QuantizeLinear ties the other way, and the exact outputs may differ by
    what that causes downstream (:mod:`rewriter.validate.ties`); False: exact."""
    started = time.monotonic()
    comparator = comparator or ToleranceComparator()
    original = reference.skeleton
    result = ValidationResult(passed=True, tolerance=comparator.describe(), suites=[s.name for s in reference.suites])
    result.warnings = list(reference.warnings)
    if INTEGER_KERNELS in reference.levels:
        result.exact_outputs, result.exact_reference = list(reference.exact), EXACT_REFERENCE
    try:
        tested = candidate_runner(candidate)
    except Exception as err:
        result.comparisons.append(OutputComparison.failure("<session>", "-", f"candidate does not load: {first_line(err)}"))
        result.passed = False
        result.seconds = time.monotonic() - started
        return result
    graph_outputs = [o.name for o in original.graph.output]
    # Another tool may rename inputs or outputs; with the same count, match them by position.
    output_map = _name_map(graph_outputs, [o.name for o in candidate.graph.output])
    input_map = _name_map(list(graph_inputs(original)), list(graph_inputs(candidate)))
    missing = [name for name in graph_outputs if output_map.get(name) not in tested.output_names]
    if missing:
        result.comparisons.append(OutputComparison.failure(missing[0], "-", f"candidate lacks graph output(s) {missing}"))
        result.passed = False

    _compare_runs(result, tested, reference, AS_WRITTEN, input_map, output_map, comparator, progress)

    del tested  # peak memory: the candidate's session is done before the node checks start theirs
    model_io.release_freed_memory()
    if INTEGER_KERNELS in reference.levels:
        _compare_with_integer_kernels(result, reference, candidate, comparator, input_map, output_map, progress, candidate_runner)
    checks = nodes_to_check(original, candidate, localize, check_starts, set(reference.exposed))
    if progress and checks:
        progress(f"validating: {len(checks)} node(s) one by one")
    if checks:
        # Loaded one run at a time when a node check gets to it.
        activations = [(name, functools.partial(reference.recorded_output, index)) for index, name in enumerate(reference.run_names)]
        original_paths, candidate_paths = Paths(original, reference.types), Paths(candidate, reference.types)
        result.nodes = [
            check_node(
                node, original_paths, candidate_paths, activations, comparator, candidate_runner,
                reference.suites, reference.seed, start, integer_kernels=INTEGER_KERNELS in reference.levels,
                allow_ties=allow_ties,
            )
            for node, start in checks
        ]
    result.passed &= not result.failed_nodes
    if allow_ties and not result.passed and not result.failed_nodes and checks:
        allow_tie_effects(result, reference, candidate, tie_sites(original, checks), input_map, output_map, progress)
    if not result.passed and not result.failed_nodes and comparator.noise_factor is not None and any(n.passed for n in result.nodes):
        _relax_by_pool_noise(result, reference, candidate, candidate_runner, comparator, input_map, output_map, progress)
    result.seconds = time.monotonic() - started
    return result


def _compare_runs(
    result: ValidationResult,
    tested: Any,
    reference: ReferenceRun,
    level: str,
    input_map: Mapping[str, str],
    output_map: Mapping[str, str],
    comparator: ToleranceComparator,
    progress: Optional[Callable[[str], None]],
) -> None:
    """Every run of ``reference`` through the candidate's session ``tested``, each graph
    output compared with the original's at the same onnxruntime ``level``: the exact
    outputs of a quantized model exactly, the others within tolerance."""
    graph_outputs = [o.name for o in reference.skeleton.graph.output]
    exact = set(reference.exact)
    at = "" if level == AS_WRITTEN else f" at {level}"

    def add(comparison: OutputComparison) -> None:
        comparison.level = level
        result.comparisons.append(comparison)
        result.passed &= comparison.passed

    for index, suite_name in enumerate(reference.run_names):
        if progress:
            progress(f"validating: the candidate{at} on {suite_name} inputs ({index + 1}/{len(reference.run_names)})")
        try:
            actual = tested.run({input_map.get(k, k): v for k, v in reference.suite_feeds(index).items()})
        except Exception as err:  # the candidate does not run: that is a failed validation
            add(OutputComparison.failure("<run>", suite_name, f"candidate fails to run{at}: {first_line(err)}"))
            continue
        if level == AS_WRITTEN:
            expected = reference.outputs[index]
        else:
            expected = {name: reference.recorded_output(index, name, level) for name in graph_outputs}
        if suite_name != "user" and not all_finite(expected[name] for name in graph_outputs):
            # Overflow upstream (wide ranges through deep or float16 models): conv-based
            # selection turns inf into NaN, so these inputs cannot judge a rewrite.
            note = "inconclusive: the original's outputs are not all finite on these inputs"
            add(OutputComparison("<all>", suite_name, True, 0.0, 0.0, 0.0, note))
            continue
        floors = reference.noise[index] if index < len(reference.noise) else {}
        for name in graph_outputs:
            if output_map.get(name) in actual:
                if name in exact:
                    add(compare_exact(name, suite_name, expected[name], actual[output_map[name]]))
                else:
                    add(comparator.compare(name, suite_name, expected[name], actual[output_map[name]], floors.get(name)))
        del actual, expected


def _compare_with_integer_kernels(
    result: ValidationResult,
    reference: ReferenceRun,
    candidate: onnx.ModelProto,
    comparator: ToleranceComparator,
    input_map: Mapping[str, str],
    output_map: Mapping[str, str],
    progress: Optional[Callable[[str], None]],
    candidate_runner: Callable[..., Any],
) -> None:
    """A quantized model's second run: the candidate at ``ORT_ENABLE_ALL`` (onnxruntime's
    integer kernels) against the original at the same level (see
    :mod:`rewriter.validate.quantized`)."""
    if candidate_runner is not OrtRunner:
        return  # another backend (true convolution) has no onnxruntime optimization levels
    try:
        tested = OrtRunner(candidate, optimization=INTEGER_KERNELS)
    except Exception as err:
        result.comparisons.append(OutputComparison.failure("<session>", "-", f"candidate does not load at {INTEGER_KERNELS}: {first_line(err)}"))
        result.comparisons[-1].level = INTEGER_KERNELS
        result.passed = False
        return
    result.levels = [AS_WRITTEN, INTEGER_KERNELS]
    _compare_runs(result, tested, reference, INTEGER_KERNELS, input_map, output_map, comparator, progress)
    del tested
    model_io.release_freed_memory()


def _relax_by_pool_noise(
    result: ValidationResult,
    reference: ReferenceRun,
    candidate: onnx.ModelProto,
    candidate_runner: Callable[..., Any],
    comparator: ToleranceComparator,
    input_map: Mapping[str, str],
    output_map: Mapping[str, str],
    progress: Optional[Callable[[str], None]],
) -> None:
    """Judge the failing outputs again, against the larger of the optimizer's floor and
    the rewritten nodes' own measured rounding carried to the outputs (see
    :mod:`rewriter.validate.noise`). Only a candidate whose every checked node matches gets here."""
    checked = [n for n in result.nodes if n.passed]
    targets = [PerturbedTarget(n.output, reference.types.get(n.output) or onnx.TensorProto.FLOAT) for n in checked]
    if any(not c.passed and (c.exact or c.level != AS_WRITTEN) for c in result.comparisons):
        return  # an exact comparison has no floor, and the floor is measured at the first level only
    failing = [i for i, c in enumerate(result.comparisons) if not c.passed and np.isfinite(c.max_abs_error)]
    if not failing or len(failing) != sum(not c.passed for c in result.comparisons):
        return  # a shape, dtype or non-finite mismatch: no floor excuses it
    try:
        with perturbed(candidate, targets) as model:
            runner = candidate_runner(model)
    except Exception:
        return
    runs = {c.suite for i, c in enumerate(result.comparisons) if i in failing}
    for index, run_name in enumerate(reference.run_names):
        if run_name not in runs:
            continue
        if progress:
            progress(f"validating: the rewritten nodes' own rounding on {run_name} inputs")
        feeds = {input_map.get(k, k): v for k, v in reference.suite_feeds(index).items()}

        def moved(spread: bool, shift: bool, runner: Any = runner) -> dict[str, np.ndarray]:
            scalars = {}
            for node, t in zip(checked, targets):
                error, magnitude = node.errors_by_run.get(run_name, (0.0, 0.0))
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
                amplitude = max(error, float(np.spacing(dtype.type(magnitude))))
                scalars[t.spread] = np.array(amplitude if spread else 0.0, dtype)
                scalars[t.shift] = np.array(amplitude if shift else 0.0, dtype)
            return runner.run({**feeds, **scalars})

        try:
            base, spread, shift = moved(False, False), moved(True, False), moved(False, True)
        except Exception:
            continue
        for i in failing:
            c = result.comparisons[i]
            name = output_map.get(c.output, c.output)
            if c.suite != run_name or name not in base:
                continue
            pool = max(output_noise(base[name], spread[name]).max_abs, output_noise(base[name], shift[name]).max_abs)
            optimizer = c.noise_floor or 0.0
            again = comparator.compare(
                c.output, c.suite, reference.recorded_output(index, c.output), base[name], OutputNoise(max(optimizer, pool))
            )
            again.pool_noise = pool
            result.comparisons[i] = again
        del base, spread, shift
    del runner
    result.tolerance = {**result.tolerance, "pool_noise_floor": PERTURBATION_METHOD}
    result.passed = all(c.passed for c in result.comparisons) and not result.failed_nodes


def validate_models(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    *,
    suites: Iterable[InputSuite] = DEFAULT_SUITES,
    user_inputs: Optional[Mapping[str, np.ndarray]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    comparator: Optional[ToleranceComparator] = None,
    localize: Optional[Localize] = None,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    candidate_runner: Callable[..., Any] = OrtRunner,
    check_starts: Optional[CheckStarts] = None,
    allow_ties: bool = True,
) -> ValidationResult:
    """Run both models on every suite (and the user's inputs) and compare every graph output:
    :func:`record_reference` on the original, then :func:`compare_with_reference`.

    ``localize`` lists output tensor names of original pool nodes to check one by
    one (default: every pool node whose output the candidate also has), or maps
    them to where their checks start; ``check_starts`` says that for a list
    (default: :func:`default_check_starts`). The original always runs on onnxruntime.
    ``allow_ties``: see :func:`compare_with_reference`.
    """
    started = time.monotonic()
    if localize is not None:  # only the starts asked for are recorded
        localize = check_starts_for(original, localize, check_starts)
    reference = record_reference(
        original, suites=suites, user_inputs=user_inputs, input_shapes=input_shapes, localize=localize, seed=seed,
        progress=progress, measure_noise=comparator is None or comparator.noise_factor is not None,
    )
    result = compare_with_reference(
        reference, candidate, comparator=comparator, localize=localize, progress=progress, candidate_runner=candidate_runner,
        check_starts=check_starts, allow_ties=allow_ties,
    )
    result.seconds = time.monotonic() - started
    return result


def _name_map(original: list[str], candidate: list[str]) -> dict[str, str]:
    """Original name -> candidate name: by name, or by position when every name differs."""
    if set(original) <= set(candidate) or len(original) != len(candidate):
        return {name: name for name in original}
    return dict(zip(original, candidate))
