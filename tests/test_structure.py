"""Size and shape limits of the source (issue 18, item 8), checked on the code so they only
shrink: no module over 600 lines, no function over 80, no import cycle (imports made only
for type checking and imports inside functions included: a cycle hidden behind
``TYPE_CHECKING`` or a lazy import is still two modules that cannot be understood apart).

The exceptions are listed by name; each entry goes when its module is split. Adding one
needs a reason in the review, not just a larger number."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

SOURCES = (ROOT / "gateway", ROOT / "operator")
PACKAGES = ("wardgate", "wardgate_operator")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

LONG_MODULES: dict[str, int] = {
    # path -> its length today; it may only get shorter.
}
LONG_FUNCTIONS: dict[str, int] = {
    # path:function -> its length today; it may only get shorter.
}
CYCLES: list[set[str]] = [
    # modules of each import cycle that still exists
]


def _modules() -> Iterator[tuple[str, Path]]:
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            parts = path.relative_to(source).with_suffix("").parts
            if parts[0] not in PACKAGES:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_module_over_the_limit() -> None:
    over = {}
    for _, path in _modules():
        lines = len(path.read_text().splitlines())
        if lines > LONG_MODULES.get(_where(path), MAX_MODULE_LINES):
            over[_where(path)] = lines
    assert over == {}, f"split these modules (limit {MAX_MODULE_LINES} lines): {over}"


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_over_the_limit() -> None:
    over = {}
    for _, path in _modules():
        for node in _functions(ast.parse(path.read_text())):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            assert node.end_lineno is not None
            lines = node.end_lineno - first + 1
            key = f"{_where(path)}:{node.name}"
            if lines > LONG_FUNCTIONS.get(key, MAX_FUNCTION_LINES):
                over[key] = lines
    assert over == {}, f"split these functions (limit {MAX_FUNCTION_LINES} lines): {over}"


def test_the_exceptions_are_still_needed() -> None:
    # An exception whose module or function shrank below the limit must go (so the lists
    # only shrink); a stale one would let the next change grow back to the old size.
    modules = dict(_modules())
    lengths = {_where(p): len(p.read_text().splitlines()) for p in modules.values()}
    stale = [p for p in LONG_MODULES if lengths.get(p, 0) <= MAX_MODULE_LINES]
    functions = {}
    for _, path in modules.items():
        for node in _functions(ast.parse(path.read_text())):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            assert node.end_lineno is not None
            functions[f"{_where(path)}:{node.name}"] = node.end_lineno - first + 1
    stale += [f for f in LONG_FUNCTIONS if functions.get(f, 0) <= MAX_FUNCTION_LINES]
    assert stale == [], f"remove these exceptions from tests/test_structure.py: {stale}"


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` depends on the module (as import-linter counts
            # it), ``from module import name`` on the module.
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            # The deepest project module the name refers to (a module, or an attribute of one).
            target = name
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    modules = dict(_modules())
    known = set(modules)
    graph = {name: _imported(name, path, known) for name, path in modules.items()}
    found = _cycles(graph)
    unexpected = [sorted(c) for c in found if c not in CYCLES]
    assert unexpected == [], f"import cycles: {unexpected}"
    assert [sorted(c) for c in CYCLES if c not in found] == [], "remove fixed cycles from CYCLES"


def test_the_lint_exceptions_are_still_needed() -> None:
    # pyproject.toml lists the files still over ruff's branch and statement limits; an entry
    # whose file no longer needs it must go, so the list only shrinks.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ignores = config["tool"]["ruff"]["lint"]["per-file-ignores"]
    limits = {"PLR0912", "PLR0915"}
    listed = {path: set(codes) & limits for path, codes in ignores.items() if set(codes) & limits}
    listed = {p: c for p, c in listed.items() if p.startswith(("gateway/", "operator/"))}
    ruff = Path(sys.executable).parent / "ruff"
    stale = {}
    for path, codes in listed.items():
        report = subprocess.run(
            [str(ruff), "check", "--isolated", "--select", ",".join(sorted(limits)), path],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        unneeded = {code for code in codes if code not in report}
        if unneeded:
            stale[path] = sorted(unneeded)
    assert stale == {}, f"remove from [tool.ruff.lint.per-file-ignores]: {stale}"
