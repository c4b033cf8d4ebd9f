"""Where node checks start: the pass records it, the validator follows it, and the
validator itself knows nothing of the lowering (it imports nothing from it)."""

from __future__ import annotations

import ast
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from rewriter import rewrite_model
from rewriter.lower import RULES
from rewriter.lower.reduce_pool import ReducePoolRule
from rewriter.ops import REDUCE_POOL_OPS, SITE_OPS
from rewriter.validate import NodeCheckStart, own_inputs, validate_models

VALIDATOR = Path(__file__).resolve().parents[1] / "rewriter" / "validate"
LOWERING_MODULES = ("rewriter.lower", "rewriter.site", "rewriter.passes", "rewriter.builder", "rewriter.check_starts")


def sppf(relu: bool = False) -> onnx.ModelProto:
    """x (-> Relu) -> three chained 5x5 "same" MaxPools y0, y1, y2 (YOLO's SPPF)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")] if relu else []
    source = "r" if relu else "x"
    for i in range(3):
        nodes.append(helper.make_node("MaxPool", [source], [f"y{i}"], name=f"pool{i}", kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
        source = f"y{i}"
    shape = [1, 3, 12, 11]
    graph = helper.make_graph(
        nodes, "sppf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, shape) for i in range(3)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def imported_modules(path: Path) -> set[str]:
    package = "rewriter.validate"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names.add(".".join(part for part in (base, node.module or "") if part))
            names.update(f"{base}.{a.name}" for a in node.names if node.level and not node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_validator_imports_nothing_of_the_lowering():
    modules = sorted(VALIDATOR.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        lowering = [m for m in imported_modules(path) if m.startswith(LOWERING_MODULES)]
        assert not lowering, f"{path.name} imports {lowering}"


def test_only_the_exact_mean_reads_the_spec():
    """The validator reads pool semantics from rewriter.spec (the one reader of raw attributes)
    in one place: the exact mean, which is cross-checked against onnxruntime before it judges."""
    readers = sorted(p.name for p in VALIDATOR.glob("*.py") if any(m.startswith("rewriter.spec") for m in imported_modules(p)))
    assert readers == ["exact.py"]


def test_the_shared_op_names_are_the_rules_own():
    assert SITE_OPS == {op for rule in RULES for op in rule.op_types}
    assert REDUCE_POOL_OPS == set(ReducePoolRule.op_types)


def test_the_report_says_where_each_check_starts():
    _, signed = rewrite_model(sppf())
    assert [(n.checked_from, n.checked_nonnegative) for n in signed.rewritten] == [("x", False)] * 3
    _, after_relu = rewrite_model(sppf(relu=True))
    assert [(n.checked_from, n.checked_nonnegative) for n in after_relu.rewritten] == [("r", True)] * 3
    assert all(n.checked_from == "" for n in signed.kept)


def test_checks_start_where_they_are_told():
    """Given the chain's start, the last pool passes; told to start at its own input
    (a validator knowing nothing of the lowering), its check feeds the pool inputs
    that are no max over the reach it was lowered for, and it fails, by name."""
    model = sppf()
    new, report = rewrite_model(model)
    told = {n.output: NodeCheckStart(n.checked_from, n.checked_nonnegative) for n in report.rewritten if n.output == "y2"}
    result = validate_models(model, new, localize=told)
    assert result.passed and [(n.name, n.passed) for n in result.nodes] == [("pool2", True)]
    naive = validate_models(model, new, localize=["y2"], check_starts=own_inputs)
    assert [n.name for n in naive.failed_nodes] == ["pool2"]
