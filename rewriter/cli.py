"""``onnx-poolrewrite``: a thin command line over :mod:`rewriter`'s Python API.

Exit codes: 0 success (including "nothing to rewrite"), 1 validation failed,
2 usage error or unreadable/invalid input (also an ``--only``/``--exclude`` name
that matches no pool node, an unknown ``--allow`` op, or a bad ``--target``), 3 pool nodes kept under
``--fail-on-kept`` (OUT not written). Errors are one line on stderr; the table
goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .model_io import (
    InputError,
    LoadedModel,
    check_output_path,
    copy_model_files,
    first_line,
    load_model_with_sources,
    save_model,
    write_atomically,
)
from .audit import audit_ops, audit_table
from .fit import FitError, audit_violations, audit_violations_table
from .graphs import all_graphs, functions_containing
from .lower import SITE_OPS
from .passes import PoolRewritePass
from .profile import Profile
from .refusals import mark_refused, validation_refusals
from .target import Target
from .report import dumps
from .input_dims import declared_dims, graph_inputs, suggested_dims
from .shapes import ShapeError, overwrite_input_shapes, parse_shape_options, shapes_for
from .columns import NOTE_WIDTH, format_columns
from .selection import SelectionError, kept_by_request
from .profiles import BUILTIN_NAMES, load_profile

EXIT_OK, EXIT_VALIDATION_FAILED, EXIT_USAGE, EXIT_KEPT = 0, 1, 2, 3

DESCRIPTION = """\
Replace every MaxPool, AveragePool, GlobalMaxPool and GlobalAveragePool node by
an exact subgraph of depthwise Conv, Relu, Add and Concat, validated against the
original with onnxruntime. Nodes that cannot be rewritten exactly are kept, and
the table says why. The table goes to stdout; progress and errors to stderr."""

EPILOG = """\
exit codes:
  0  success; also when there is nothing to rewrite (OUT is then a copy of IN)
  1  validation failed; OUT is not written (with --compare: the models are not equal)
  2  usage error, or an unreadable or invalid input; OUT is not written. Also a name
     in --only/--exclude that matches no pool node, an unknown op in --allow, or a
     --target that is no built-in profile or a profile file that breaks the format
  3  --fail-on-kept and some pool node was kept (not for nodes --only/--exclude
     leave out, nor pools the --target runs natively); OUT is not written, the
     table and --report say which and why

examples:
  onnx-poolrewrite model.onnx model.conv.onnx
  onnx-poolrewrite model.onnx out.onnx --report report.json
  onnx-poolrewrite model.onnx --dry-run --only MaxPool
  onnx-poolrewrite model.onnx out.onnx --exclude head/pool,GlobalAveragePool
  onnx-poolrewrite model.onnx out.onnx --overwrite-input-shape images:1,3,640,640
  onnx-poolrewrite model.onnx out.onnx --fail-on-kept --report report.json   # CI: every pool or exit 3
  onnx-poolrewrite model.onnx out.onnx --input-shape images:1,3,640,640 --inputs sample.npz
  onnx-poolrewrite --compare original.onnx candidate_from_another_tool.onnx --report check.json"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="onnx-poolrewrite",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --flip must not quietly mean --flip-kernels
    )
    p.add_argument("input", metavar="IN", help="the ONNX model to rewrite; it is never modified")
    p.add_argument(
        "output", metavar="OUT", nargs="?",
        help="where the rewritten model goes (not needed with --dry-run): written atomically, and only if "
        "validation passes; may not be IN unless --in-place. A model with external data is written the same way, "
        "its weights in OUT.data beside OUT",
    )
    p.add_argument(
        "--report", metavar="FILE.json",
        help="write the JSON report: per-node results, totals, notes, audit, validation (also with --dry-run)",
    )
    p.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison (not recommended)")
    p.add_argument(
        "--rewrite-double", action="store_true",
        help="also rewrite float64 pools; needs --no-validate, as onnxruntime has no float64 Conv to check them with",
    )
    p.add_argument(
        "--only", metavar="NAMES", action="append", default=None,
        help="rewrite only these nodes: comma-separated node names, output tensor names or op types (repeatable). "
        "A name that matches no pool node (in the main graph, subgraphs or inlined functions) is an error listing them",
    )
    p.add_argument(
        "--exclude", metavar="NAMES", action="append", default=None,
        help="never rewrite these nodes (the same names, and the same check, as --only)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and write no model (--report is still written)")
    p.add_argument(
        "--fail-on-kept", action="store_true",
        help="exit 3 and write no OUT when any pool node is kept (nodes left out by --only/--exclude do not count); "
        "the table and --report say which and why. Works with --dry-run",
    )
    p.add_argument("--in-place", action="store_true", help="allow OUT to be IN (still written atomically, and only after validation)")
    p.add_argument(
        "--overwrite-input-shape", metavar="NAME:D0,D1,...", action="append",
        help="give an input static dims, e.g. images:1,3,640,640, for the rewrite and in OUT (repeatable; -1 keeps the "
        "model's dim, a dynamic batch becomes 1): pools kept for dynamic dims can then be rewritten. Shapes are "
        "re-inferred: stale value_info and output dims are replaced, unresolved ones left dynamic. Validation uses "
        "these shapes (with --compare, both models get them)",
    )
    t = p.add_argument_group("target")
    t.add_argument(
        "--target", metavar="NAME|FILE.json",
        help=f"the accelerator the output is for: a built-in profile ({', '.join(BUILTIN_NAMES)}) or your own "
        "profile file (docs/targets.md). Pools it runs natively are kept as they are; its ops replace "
        "Conv/Relu/Add/Concat (--allow adds to them). Without it, every pool is rewritten into the strict op set",
    )
    t.add_argument(
        "--allow", metavar="OPS", action="append",
        help="ops the target has beyond Conv/Relu/Add/Concat, comma-separated, case-sensitive (repeatable); the "
        "lowering then uses Max (bit-exact pairwise max), Pad (edge padding), Div or Mul (average divisors), Reshape "
        "(a reduction acting as a global pool whose rank changes) where "
        "allowed; other ONNX ops may be listed for --audit. A name that is no ONNX op is an error",
    )
    t.add_argument(
        "--audit", action="store_true",
        help="list every op type of the output model outside the target set, with counts and node names (the "
        "report always has it as \"audit\"); works on models with nothing to rewrite",
    )
    t.add_argument(
        "--flip-kernels", action="store_true",
        help="for true-convolution backends: store every Conv/ConvTranspose kernel reversed, record "
        "conv_semantics=convolution in metadata, and validate with a numpy true-convolution reference (with "
        "--compare: check the candidate on that reference)",
    )
    p.add_argument(
        "--keep-tie-averages", action="store_true",
        help="quantized (QDQ) models: keep the averages whose window means can land on a QuantizeLinear rounding tie "
        "(onnxruntime's own two levels round those outputs differently), and validate every quantized output bit for "
        "bit against onnxruntime at both levels. Default: they are rewritten, and validation allows one step at the "
        "tie outputs and what that causes downstream (docs/validation.md)",
    )
    p.add_argument(
        "--compare", action="store_true",
        help="validate only: IN is the original, OUT an existing candidate made by any tool; nothing is rewritten or "
        "written except --report",
    )
    v = p.add_argument_group("validation inputs and tolerance")
    v.add_argument(
        "--inputs", metavar="PATH",
        help="also validate on your own inputs: .npz (name -> array), .npy (single-input models), a TensorProto .pb, "
        "or a test_data_set_N/ folder of input_*.pb; unnamed tensors map to the inputs in order",
    )
    v.add_argument(
        "--input-shape", metavar="NAME:D0,D1,...", action="append",
        help="fix an input's dynamic dims for validation only, e.g. images:1,3,224,224 (repeatable; -1 keeps the model's "
        "dim, a dynamic batch defaults to 1); any other dynamic dim without it is an error. To rewrite and write "
        "static dims, use --overwrite-input-shape",
    )
    v.add_argument(
        "--rtol", type=float,
        help="a fixed tolerance per output and node: max abs error <= ATOL + RTOL * max |reference| (default 1e-5 "
        "float32, 1e-2 float16, and outputs also allowed 4x the original's own rounding noise; any of "
        "--rtol/--atol/--ulps turns that floor off)",
    )
    v.add_argument("--atol", type=float, help="absolute tolerance added to the relative one (default 0)")
    v.add_argument("--ulps", type=float, help="instead of --rtol: tolerance in ulps of max |reference| per output and node")
    v.add_argument("--seed", type=int, default=0, help="seed of the generated input suites (default 0)")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="also print each MaxPool's strategy per axis, every validation comparison and node check")
    p.add_argument("--debug", action="store_true", help="show a traceback on an unexpected internal error")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _names(values: Optional[list[str]]) -> Optional[list[str]]:
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


class _Console:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.monotonic()
        self.warned: set[str] = set()

    def out(self, text: str) -> None:
        if self.quiet:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:  # e.g. piped into `head`: stop printing, keep working
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.quiet = True

    def warn(self, text: str) -> None:
        """A warning goes to stderr, once, even with -q: it is about the user's model."""
        if text not in self.warned:
            self.warned.add(text)
            sys.stdout.flush()
            print(f"onnx-poolrewrite: warning: {text}", file=sys.stderr, flush=True)

    def progress(self, text: str) -> None:
        """Progress goes to stderr, and only once work has run a moment; stdout is
        flushed first, so a terminal shows both in the order they were written."""
        if not self.quiet and time.monotonic() - self.started > 1.0:
            sys.stdout.flush()
            print(text, file=sys.stderr, flush=True)


def _input_shapes(values: Optional[list[str]]) -> dict[str, list[int]]:
    return parse_shape_options(values, "--input-shape")


def _overwrite_shapes(args: argparse.Namespace, model, names_in_original=None):
    """``--overwrite-input-shape``, applied to ``model`` in place (see :func:`overwrite_input_shapes`)."""
    shapes = parse_shape_options(args.overwrite_input_shape)
    if not shapes:
        return model
    if names_in_original is not None:
        shapes = shapes_for(model, shapes, names_in_original)
    try:
        return overwrite_input_shapes(model, shapes, in_place=True)
    except ShapeError as err:
        raise InputError(f"--overwrite-input-shape {err}") from err


def _record_reference(args: argparse.Namespace, original, console: _Console):
    """Run the original once with the command line's input options (see :func:`record_reference`)."""
    from .validate import DEFAULT_SUITES, ValidationSetupError, load_user_inputs, record_reference

    user_inputs = load_user_inputs(args.inputs, original) if args.inputs else None
    try:
        return record_reference(
            original, suites=DEFAULT_SUITES, user_inputs=user_inputs, input_shapes=_input_shapes(args.input_shape),
            seed=args.seed, progress=console.progress, measure_noise=_calibrated(args),
        )
    except ValidationSetupError as err:
        raise _setup_error(args, err) from err


def _calibrated(args: argparse.Namespace) -> bool:
    """Without an explicit tolerance, outputs are judged against the network's own rounding noise."""
    return args.rtol is None and args.atol is None and args.ulps is None


def _setup_error(args: argparse.Namespace, err: Exception) -> InputError:
    hint = "" if args.compare else " (or pass --no-validate)"
    return InputError(f"cannot validate: {err}{hint}")


def _compare(args: argparse.Namespace, reference, candidate, console: _Console, localize=None, true_convolution=False):
    """Compare a candidate with the recorded original, with the command line's tolerance options."""
    from .validate import OrtRunner, ToleranceComparator, TrueConvolutionRunner, ValidationSetupError, compare_with_reference

    comparator = ToleranceComparator.explicit(rtol=args.rtol, atol=args.atol, ulps=args.ulps)
    try:
        validation = compare_with_reference(
            reference, candidate, comparator=comparator, localize=localize, progress=console.progress,
            candidate_runner=TrueConvolutionRunner if true_convolution else OrtRunner, allow_ties=not args.keep_tie_averages,
        )
    except ValidationSetupError as err:
        raise _setup_error(args, err) from err
    for warning in validation.warnings:
        console.warn(warning)
    if validation.comparisons:
        console.out(validation.output_table())
    if args.verbose:
        console.out(_verbose_rows(validation))
    return validation


def _check_starts(report):
    """The rewritten nodes to check, each from where the pass says its check starts."""
    from .validate import NodeCheckStart

    return {n.output: NodeCheckStart(n.checked_from, n.checked_nonnegative) for n in report.rewritten}


def _verbose_rows(validation) -> str:
    """``-v``: every output comparison, then every node check, as aligned columns (with the
    onnxruntime level each ran at, when a quantized model ran at two)."""
    levels = len(validation.levels) > 1
    outputs = [
        [c.output, c.suite] + ([c.level] if levels else [])
        + ["ok" if c.passed else "FAIL", f"{c.max_abs_error:.3g}", f"{c.rel_error:.3g}", f"{c.ulp_error:.3g}", c.note]
        for c in validation.comparisons
    ]
    shift = 1 if levels else 0
    headers = ["output", "suite"] + (["level"] if levels else []) + ["result", "max abs", "rel", "ulps", "note"]
    lines = format_columns(headers, outputs, right=(3 + shift, 4 + shift, 5 + shift), indent="  ")
    if validation.nodes:
        ties = any(n.tie_outputs for n in validation.nodes)  # quantized averages at QuantizeLinear ties
        nodes = [
            [n.name or n.output, n.op_type, {True: "ok", False: "FAIL", None: "n/a"}[n.passed], f"{n.rel_error:.3g}",
             f"{n.ulp_error:.3g}", _against_exact(n), n.worst_suite] + ([" and ".join(n.levels)] if levels else [])
            + ([f"{n.tie_outputs_rounded_otherwise}/{n.tie_outputs}" if n.tie_outputs else "-"] if ties else []) + [n.note]
            for n in validation.nodes
        ]
        headers = (["node", "op", "result", "rel", "ulps", "vs exact mean", "worst suite"] + (["levels"] if levels else [])
                   + (["ties off/at"] if ties else []) + ["note"])
        lines += format_columns(headers, nodes, right=(3, 4), indent="  ")
    return "\n".join(lines)


def _against_exact(node) -> str:
    """An average's errors against its exact value, e.g. ``rewrite 3.6e-07, onnxruntime 5.4e-06``."""
    if node.exact_error is None:
        return "-"
    return f"rewrite {node.exact_error:.2g}, onnxruntime {node.runtime_error:.2g}"


def _static_shape_hint(model, report) -> Optional[str]:
    """A ready-made ``--overwrite-input-shape`` when pools were kept for dynamic dims."""
    if not any("--overwrite-input-shape" in (n.reason or "") for n in report.kept):
        return None
    dynamic = [v for v in graph_inputs(model).values() if None in (declared_dims(v) or [])]
    if not dynamic:
        return None
    flags = " ".join(f"--overwrite-input-shape {v.name}:{suggested_dims(v)}" for v in dynamic)
    return f"pools kept for dynamic dims can be rewritten at static shapes: {flags} (your deployment's sizes)"


def _kept_failure(report) -> Optional[str]:
    """``--fail-on-kept``: the one-line complaint when a pool node was kept, else None."""
    kept = [n for n in report.kept if not kept_by_request(n.reason)]
    if not kept:
        return None
    shown = "; ".join(f"{n.name or n.output} ({n.reason})" for n in kept[:3])
    more = f"; and {len(kept) - 3} more" if len(kept) > 3 else ""
    return f"{len(kept)} pool node(s) kept (--fail-on-kept): {shown}{more}"


def _write_report(path: Optional[str], data: dict) -> None:
    if path:
        text = dumps(data) + "\n"
        write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def compare(args: argparse.Namespace) -> int:
    """``--compare ORIGINAL CANDIDATE``: validate a candidate made by anything."""
    console = _Console(args.quiet)
    if not args.output:
        raise InputError("--compare needs two models: ORIGINAL CANDIDATE")
    if args.report:
        check_output_path(args.report, args.input)
    def load(path: str):
        # Big weights stay in their files unless the numpy true-convolution reference needs them.
        return load_model_with_sources(path, weights_on_disk=not args.flip_kernels).model

    original = _overwrite_shapes(args, load(args.input))
    names = list(graph_inputs(original))  # a candidate may rename them: matched by position
    reference = _record_reference(args, original, console)  # its results are arrays: one model in memory at a time
    del original
    candidate = _overwrite_shapes(args, load(args.output), names)
    validation = _compare(args, reference, candidate, console, true_convolution=args.flip_kernels)
    _write_report(args.report, {"validation": validation.to_dict()})
    if not validation.passed:
        print(f"onnx-poolrewrite: not equal: {validation.summary()}", file=sys.stderr)
        return EXIT_VALIDATION_FAILED
    console.out(validation.summary())
    return EXIT_OK


def _has_pool_ops(model) -> bool:
    return any(n.op_type in SITE_OPS for g in all_graphs(model.graph) for n in g.node) or bool(functions_containing(model, SITE_OPS))


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return compare(args)
    if not args.dry_run and not args.output:
        raise InputError("OUT is required (or pass --dry-run)")
    if args.rewrite_double and not args.no_validate:
        raise InputError("--rewrite-double needs --no-validate: onnxruntime has no float64 Conv to validate with")
    if args.output:
        check_output_path(args.output, args.input, allow_input=args.in_place)
    if args.report:
        check_output_path(args.report, args.input)
    _input_shapes(args.input_shape)  # malformed is an error even when nothing gets validated
    profile = load_profile(args.target) if args.target else None  # a bad profile fails before the model loads

    # Big weights stay in their file until the output is written (not --flip-kernels: it edits conv weights).
    return _rewrite(args, load_model_with_sources(args.input, weights_on_disk=not args.flip_kernels), _Console(args.quiet), profile)


def _pool_pass(args: argparse.Namespace, allow: list, profile: Optional[Profile], refused: Sequence[str] = ()) -> PoolRewritePass:
    """The pass the command line asks for; ``refused``: outputs of nodes validation refused, kept too."""
    exclude = _names(args.exclude)
    if refused:
        exclude = (exclude or []) + list(refused)
    return PoolRewritePass(only=_names(args.only), exclude=exclude, allow=allow, rewrite_double=args.rewrite_double, target=profile,
                           keep_tie_averages=args.keep_tie_averages)


def _final_model(args: argparse.Namespace, model, report, allow: list, profile: Optional[Profile], console: "_Console"):
    """What gets written: the rewritten model, its kernels flipped with ``--flip-kernels``;
    its ops audited against the target into ``report``."""
    final = model
    if args.flip_kernels:
        from .flip import FlipError, flip_conv_kernels

        try:
            final, flipped = flip_conv_kernels(final)
        except FlipError as err:
            raise InputError(f"--flip-kernels: {err}") from err
        report.flip = {"convs": flipped.flipped, "tensors": flipped.tensors, "inlined_functions": flipped.inlined, "validation": None}
        console.out(f"flipped the kernels of {len(flipped.flipped)} conv(s) for a true-convolution backend")
    target = Target.of(allow, profile=profile)
    if target.profile is None:
        report.audit = audit_ops(final, allow)
        if args.audit:
            console.out(audit_table(report.audit, allow))
    else:  # rule by rule, the model's own nodes included: reported, never failed
        report.audit = {"target": target.profile.name, "violations": audit_violations(final, target)}
        if args.audit:
            console.out(audit_violations_table(report.audit["violations"], target.profile.name))

    return final


def _rewrite(args: argparse.Namespace, loaded: LoadedModel, console: _Console, profile: Optional[Profile]) -> int:
    model = _overwrite_shapes(args, loaded.model)  # the loaded model is ours: edited in place
    protect = () if args.in_place else (*loaded.external_files, loaded.path)
    console.progress(f"loaded {args.input}")
    allow = _names(args.allow) or []
    rewrite = _pool_pass(args, allow, profile)
    # Peak memory: the original runs first and its results are kept as arrays, so
    # the rewrite can then change the model in place (no second copy of the weights).
    reference, reference_error = None, None
    if not args.no_validate and not args.dry_run and _has_pool_ops(model):
        try:
            reference = _record_reference(args, model, console)
        except InputError as err:  # an error only if something gets validated
            reference_error = err
    result = rewrite.run(model, progress=console.progress, in_place=not args.dry_run)
    report = result.report
    if args.overwrite_input_shape:
        report.notes.append(f"input shapes overwritten: {', '.join(args.overwrite_input_shape)}")
    if report.invalid:
        bad = report.invalid[0]
        raise InputError(f"node '{bad.name or bad.output}' ({bad.op_type}): {bad.reason}")
    console.out(report.table(strategies=args.verbose) if report.nodes else "no pool nodes found")
    hint = _static_shape_hint(model, report)
    if hint:
        report.notes.append(hint)
        console.out(textwrap.fill(f"note: {hint}", NOTE_WIDTH, subsequent_indent="      ", break_long_words=False, break_on_hyphens=False))

    final = _final_model(args, result.model, report, allow, profile, console)

    def finish(code: int) -> int:
        _write_report(args.report, report.to_dict())
        return code

    kept_failure = _kept_failure(report) if args.fail_on_kept else None
    if kept_failure:
        report.validation = {"passed": None, "skipped": "--fail-on-kept: pool nodes kept", "worst": None}
        print(f"onnx-poolrewrite: {kept_failure}; {args.output or 'OUT'} not written", file=sys.stderr)
        return finish(EXIT_KEPT)
    if args.dry_run:
        report.validation = {"passed": None, "skipped": "--dry-run", "worst": None}
        console.out("dry run: nothing written")
        return finish(EXIT_OK)
    if not report.rewritten and not args.flip_kernels:
        report.validation = {"passed": True, "skipped": "nothing rewritten", "worst": None}
        if args.overwrite_input_shape:  # the copy must carry the new shapes
            save_model(model, args.output, external_data=bool(loaded.external_files), protect=protect)
            console.out(f"nothing to rewrite: wrote {args.output} with the new input shapes")
        else:
            copy_model_files(loaded, args.output)
            console.out(f"nothing to rewrite: wrote an unchanged copy to {args.output}")
        return finish(EXIT_OK)

    if args.no_validate:
        report.validation = {"passed": None, "skipped": "--no-validate", "worst": None}
    else:
        if reference_error is not None and (report.rewritten or args.flip_kernels):
            raise reference_error
        if report.rewritten:
            validation = _compare(args, reference, result.model, console, localize=_check_starts(report))
            refused = {} if validation.passed else validation_refusals(validation, report)
            if refused:  # exact or refused: those nodes are kept, the rest rewritten and validated again
                console.out(f"validation failed on {len(refused)} rewritten node(s): keeping them, rewriting the rest again")
                model = _overwrite_shapes(args, load_model_with_sources(args.input, weights_on_disk=not args.flip_kernels).model)
                result = _pool_pass(args, allow, profile, refused).run(model, progress=console.progress, in_place=True)
                result.report.notes = report.notes
                report = result.report
                mark_refused(report, refused)
                console.out(report.table(strategies=args.verbose))
                final = _final_model(args, result.model, report, allow, profile, console)
                kept_failure = _kept_failure(report) if args.fail_on_kept else None
                if kept_failure:
                    report.validation = {"passed": False, "skipped": "--fail-on-kept: pool nodes kept after validation", "worst": None}
                    print(f"onnx-poolrewrite: {kept_failure}; {args.output} not written", file=sys.stderr)
                    return finish(EXIT_KEPT)
                validation = _compare(args, reference, result.model, console, localize=_check_starts(report))
            report.validation = validation.to_dict()
            if not validation.passed:
                print(f"onnx-poolrewrite: {validation.summary()}; {args.output} not written", file=sys.stderr)
                return finish(EXIT_VALIDATION_FAILED)
            console.out(validation.summary())
        else:
            report.validation = {"passed": True, "skipped": "nothing rewritten", "worst": None}
        if args.flip_kernels:
            console.progress("validating the flipped model on the true-convolution reference")
            if reference is None:  # a model without pools: nothing was recorded yet
                reference = _record_reference(args, result.model, console)
            flipped_check = _compare(args, reference, final, console, localize=[], true_convolution=True)
            report.flip["validation"] = flipped_check.to_dict()
            if not flipped_check.passed:
                print(f"onnx-poolrewrite: true-convolution {flipped_check.summary()}; {args.output} not written", file=sys.stderr)
                return finish(EXIT_VALIDATION_FAILED)
            console.out(f"true-convolution {flipped_check.summary()}")
    save_model(final, args.output, external_data=bool(loaded.external_files), protect=protect)
    console.out(f"wrote {args.output}")
    return finish(EXIT_OK)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except FitError as err:  # a bug of ours, caught before anything is written
        print(f"onnx-poolrewrite: error: internal error: {err}; nothing written", file=sys.stderr)
        return EXIT_USAGE
    except (InputError, SelectionError) as err:
        print(f"onnx-poolrewrite: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("onnx-poolrewrite: interrupted; nothing written", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # a bug of ours: still one line, unless --debug
        if args.debug:
            raise
        print(f"onnx-poolrewrite: error: internal error ({type(err).__name__}: {first_line(err)}); rerun with --debug", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
