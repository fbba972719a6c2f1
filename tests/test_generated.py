"""Generated files are committed and must match their generators (``make docs``)."""

from __future__ import annotations

import json

from tests.conftest import ROOT
from wardgate.config import policy_json_schema
from wardgate.config.reference import render_reference


def test_configuration_reference_is_current():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_reference(), "run `make docs` and commit the result"


def test_policy_json_schema_is_current():
    committed = json.loads((ROOT / "docs" / "policy.schema.json").read_text())
    assert committed == policy_json_schema(), "run `make docs` and commit the result"


def test_crd_manifests_are_current():
    from wardgate_operator.crds import all_crds, render_file

    for directory in (ROOT / "crds", ROOT / "charts" / "wardgate" / "files" / "crds"):
        expected = {name: render_file(crd) for name, crd in all_crds().items()}
        committed = {p.name: p.read_text() for p in directory.glob("*.yaml")}
        assert committed == expected, f"{directory}: run `make docs` and commit the result"
