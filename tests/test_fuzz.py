"""A bounded, seeded fuzz corpus through the real CLI (see scripts/fuzz.py for long campaigns).

Every mutation kind is covered, with the variants that matter most named
explicitly (invalid pool attributes, odd element types, escaping external
data). The cases run as CLI subprocesses, two at a time, and each is checked
against every invariant of :func:`fuzz.check_case`; a failure names the
mutation, the seed/index and the exact command to reproduce it.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import fuzz  # noqa: E402

SEED = 20240607
TIMEOUT_S = 60.0

#: (kind, variant or None for a seeded random one, how many)
PLAN: list[tuple[str, str | None, int]] = [
    ("byte_flip", None, 2),
    ("truncate", None, 2),
    ("append_garbage", None, 2),
    ("zero_range", None, 2),
    ("dup_chunk", None, 2),
    *[("pool_attr", v, 1) for v in ("kernel_zero", "kernel_negative", "kernel_huge", "kernel_wrong_len", "strides_zero",
                                    "pads_gt_kernel", "auto_pad_garbage", "ceil_mode_7", "dilations_zero")],
    ("unknown_op", None, 2),
    ("drop_input", None, 2),
    ("dangling_output", None, 2),
    *[("elem_type", v, 1) for v in ("INT8", "DOUBLE", "STRING", "BFLOAT16")],
    *[("input_dim", v, 1) for v in ("minus_one", "zero", "dim_param")],
    *[("opset_version", v, 1) for v in ("opset_1", "opset_99")],
    *[("external_data", v, 1) for v in ("abs_etc_passwd", "dotdot_etc_passwd", "abs_canary", "symlink_file_escape",
                                        "sparse_cwd_relative", "missing_inside", "valid_inside")],
]
#: cases that must run with validation (it is onnxruntime, during validation, that would read the data)
WITH_VALIDATION = [("external_data", "sparse_cwd_relative"), ("external_data", "sparse_constant_cwd_relative")]
FLAG_CYCLE = ([], [], ["--no-validate"], ["--dry-run"])


def _corpus() -> list[tuple[int, str, str | None, list[str], bool]]:
    cases, index = [], 0
    for kind, variant, count in PLAN:
        for _ in range(count):
            cases.append((index, kind, variant, list(FLAG_CYCLE[index % len(FLAG_CYCLE)]), index % 3 == 0))
            index += 1
    for kind, variant in WITH_VALIDATION:
        cases.append((index, kind, variant, [], False))
        index += 1
    return cases


CORPUS = _corpus()


def _case_id(case) -> str:
    index, kind, variant, flags, precreate = case
    return f"{index:02d}-{kind}-{variant or 'random'}{'-' + flags[0].lstrip('-') if flags else ''}{'-precreated' if precreate else ''}"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[int, tuple[fuzz.Case, fuzz.Result]]:
    seeds = fuzz.load_seeds()
    root = tmp_path_factory.mktemp("fuzz")
    cases = [
        fuzz.make_case(SEED, index, seeds, root / f"case-{index:05d}", kind=kind, variant=variant, flags=flags, precreate=pre)
        for index, kind, variant, flags, pre in CORPUS
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda c: fuzz.run_case(c, timeout_s=TIMEOUT_S), cases))
    return {c.index: (c, r) for c, r in zip(cases, done)}


@pytest.mark.slow  # its module fixture runs the whole corpus through the CLI, one subprocess a case
@pytest.mark.parametrize("case", CORPUS, ids=[_case_id(c) for c in CORPUS])
def test_fuzz_case_keeps_invariants(results, case):
    index = case[0]
    c, r = results[index]
    if r.violations:
        lines = [
            f"{r.kind}/{r.variant} (seed {SEED}, index {index}, seed model {r.seed_model}) violates {len(r.violations)} invariant(s):",
            *(f"  * {v}" for v in r.violations),
            f"mutation: {r.detail}",
            f"flags: {' '.join(r.flags) or '(none)'}; pre-created OUT: {c.precreate is not None}; exit code: {r.returncode}",
            f"stderr: {r.stderr.rstrip() or '(empty)'}",
            f"reproduce: {r.command}",
        ]
        pytest.fail("\n".join(lines), pytrace=False)


def test_corpus_covers_every_mutation_kind():
    assert {kind for _, kind, _, _, _ in CORPUS} == set(fuzz.KINDS)
    assert 35 <= len(CORPUS) <= 45


def test_mutations_are_reproducible(tmp_path):
    seeds = fuzz.load_seeds()
    for index, kind in enumerate(fuzz.KINDS):
        a = fuzz.make_case(7, index, seeds, tmp_path / "a", kind=kind)
        b = fuzz.make_case(7, index, seeds, tmp_path / "b", kind=kind)
        assert (a.seed_model, a.mutant.variant, a.flags, a.precreate) == (b.seed_model, b.mutant.variant, b.flags, b.precreate), kind
        if "canary" not in a.mutant.variant:  # those embed the case folder's absolute path
            assert a.mutant.data == b.mutant.data, f"{kind}/{a.mutant.variant} is not reproducible"
