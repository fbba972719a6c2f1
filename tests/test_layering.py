"""Architecture rules that import-linter cannot express, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# The admin port is an HTTP server shared by both adapters (wardgate.admin).
ADAPTERS = ("wardgate/proxy/", "wardgate/envoy/", "wardgate/admin/")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_adapters_import_aiohttp_web():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "gateway" / "wardgate").rglob("*.py")
        if not any(part in path.as_posix() for part in ADAPTERS)
        and any(name == "aiohttp.web" or name.startswith("aiohttp.web") for name in _imports(path))
    ]
    assert offenders == []


def test_import_linter_contracts_hold():
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(linter)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": f"{ROOT / 'gateway'}:{ROOT / 'operator'}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_contracts_are_checked_and_only_the_admission_server_serves_http():
    """The operator's import rules are in the import-linter configuration (so the test
    above checks them), and the webhook server is the one operator module using aiohttp.web."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert "wardgate_operator" in config["root_packages"]
    names = [c["name"] for c in config["contracts"]]
    assert any(n.startswith("Operator: kopf only in the handlers") for n in names)
    assert any(
        n.startswith("Operator: evaluation, rendering and injection are pure") for n in names
    )
    package = ROOT / "operator" / "wardgate_operator"
    servers = sorted(
        path.name
        for path in package.glob("*.py")
        if any(name.startswith("aiohttp.web") for name in _imports(path))
    )
    assert servers == ["admission.py"]
