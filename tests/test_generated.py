"""Generated files are committed and must match their generators (the registry in
:mod:`tools.generated`; ``make generate`` writes them, ``make verify`` checks them)."""

from __future__ import annotations

import pytest
from tools.generated import ROOT, drifted, registry, stale_files

FILES = registry()


@pytest.mark.parametrize("path", sorted(FILES))
def test_generated_file_is_current(path: str) -> None:
    assert not drifted(path, FILES[path]), f"{path}: run `make generate` and commit the result"


def test_no_stale_file_in_generated_directories() -> None:
    assert stale_files(FILES) == [], "run `make generate` and commit the result"


def test_the_registry_covers_every_generated_file() -> None:
    # The files the chart and the docs ship that are built from code, by path.
    expected = {
        "docs/configuration.md",
        "docs/policy.schema.json",
        "charts/wardgate/values.schema.json",
        "charts/wardgate/files/dashboard.json",
    }
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "crds").glob("*.yaml")}
    expected |= {
        str(p.relative_to(ROOT)) for p in (ROOT / "charts/wardgate/files/crds").glob("*.yaml")
    }
    assert expected <= set(FILES)
