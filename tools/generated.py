"""Every generated file in the repository, in one registry: path -> generator.

``make generate`` (``python -m tools.generated``) writes them all; ``make verify``
(``python -m tools.generated --check``) fails naming each file that differs from its
generator, and ``tests/test_generated.py`` runs the same check per file. Generated files are
committed so that users read them on GitHub and ``helm`` finds them in the chart; a change to
a generator (a model, a docstring, a metric) is finished when ``make generate`` has run.

A directory listed in :data:`OWNED_DIRECTORIES` holds generated files only: a file there that
no generator writes (a CRD that was renamed) is drift too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Generator = Callable[[], str]


def _policy_schema() -> str:
    from wardgate.config import policy_json_schema

    return json.dumps(policy_json_schema(), indent=2) + "\n"


def _configuration_reference() -> str:
    from wardgate.config.reference import render_reference

    return render_reference()


def _crd(name: str) -> Generator:
    def render() -> str:
        from wardgate_operator.crds import all_crds, render_file

        return render_file(all_crds()[name])

    return render


def _values_schema() -> str:
    from tools.values_schema import render

    return render()


def _dashboard() -> str:
    from tools.dashboard import render

    return render()


CRD_DIRECTORIES = ("crds", "charts/wardgate/files/crds")
"""The CRDs go to the repository (``kubectl apply -f crds/``) and into the chart."""

OWNED_DIRECTORIES = dict.fromkeys(CRD_DIRECTORIES, "*.yaml")
"""Directories (and the glob) holding nothing but generated files."""


def registry() -> dict[str, Generator]:
    """Repository-relative path -> the function returning the file's committed text."""
    from wardgate_operator.crds import all_crds

    files: dict[str, Generator] = {
        "docs/policy.schema.json": _policy_schema,
        "docs/configuration.md": _configuration_reference,
        "charts/wardgate/values.schema.json": _values_schema,
        "charts/wardgate/files/dashboard.json": _dashboard,
    }
    for directory in CRD_DIRECTORIES:
        for name in all_crds():
            files[f"{directory}/{name}"] = _crd(name)
    return files


def stale_files(files: dict[str, Generator]) -> list[str]:
    """Files in :data:`OWNED_DIRECTORIES` that no generator writes."""
    return sorted(
        str(path.relative_to(ROOT))
        for directory, pattern in OWNED_DIRECTORIES.items()
        for path in (ROOT / directory).glob(pattern)
        if str(path.relative_to(ROOT)) not in files
    )


def drifted(path: str, generator: Generator) -> bool:
    """Whether the committed ``path`` differs from what ``generator`` writes (or is missing)."""
    target = ROOT / path
    return not target.is_file() or target.read_text(encoding="utf-8") != generator()


def generate() -> list[str]:
    """Write every generated file and remove stale ones; what changed, one line each."""
    files = registry()
    changed = []
    for path, generator in files.items():
        text = generator()
        target = ROOT / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            changed.append(f"wrote {path}")
    for path in stale_files(files):
        (ROOT / path).unlink()
        changed.append(f"removed {path} (no generator writes it)")
    return changed


def check() -> list[str]:
    """The generated files that differ from their generators, and stale ones."""
    files = registry()
    return [p for p, g in files.items() if drifted(p, g)] + stale_files(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.generated", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for path in stale:
            print(f"{path}: differs from its generator", file=sys.stderr)
        if stale:
            print("run `make generate` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for line in generate():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
