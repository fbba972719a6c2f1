"""The engine package stays readable: the sizes issue 18 asks for, and every operator the
rule loader accepts is one the engine knows how to run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from wardgate.filters.waf import engine, operators
from wardgate.filters.waf.engine.plan import compile_plan
from wardgate.filters.waf.rules import parse_rule_file

PACKAGE = Path(engine.__file__).parent
MODULES = [*sorted(PACKAGE.glob("*.py")), Path(operators.__file__)]


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_module_over_600_lines_and_no_function_over_80(module: Path):
    text = module.read_text(encoding="utf-8")
    assert text.count("\n") <= 600
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno + 1 <= 80, node.name


@pytest.mark.parametrize("operator", sorted(operators.OPERATORS))
def test_every_registered_operator_loads_and_compiles(operator: str):
    spec = operators.OPERATORS[operator]
    assert (spec.compile is None) != (spec.detect is None)
    argument = {"pattern": 'pattern: "evil"', "phrases": "phrases: [evil]", None: ""}
    text = f"""
family: sqli
rules:
  - id: "999001"
    targets: [ARGS]
    operator: {operator}
    {argument[spec.argument]}
    message: test rule
"""
    (rule,) = parse_rule_file("t.yaml", text)
    plan = compile_plan([rule])
    (group,) = plan.groups
    assert len(group.expressions) + len(group.detectors) >= 1
