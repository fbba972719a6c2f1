"""The ``wardgate`` command line: validate, schema, explain."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, run_wardgate


def test_validate_accepts_the_examples_and_names_every_error(tmp_path: Path):
    ok = run_wardgate("validate", str(ROOT / "examples/demo/policy.yaml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid (digest sha256:" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "limits:\n  maxHeadersCount: 0\n  allowedMethods: [GET, get]\n"
        "proxy:\n  timeouts: {connect: 5}\nextra: 1\n"
    )
    result = run_wardgate("validate", str(ROOT / "examples/demo/policy.yaml"), str(bad))
    assert result.returncode == 1
    for expected in (
        "limits.maxHeadersCount",
        "limits.allowedMethods[1]",
        "proxy.timeouts.connect",
        "extra: unknown field",
    ):
        assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_reports_unreadable_and_non_yaml_files(tmp_path: Path):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"limits: [unclosed\n")
    result = run_wardgate("validate", str(garbage), str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "not valid YAML" in result.stdout
    assert "cannot read the file" in result.stdout


def test_schema_is_the_policy_json_schema():
    result = run_wardgate("schema")
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert "maxHeadersCount" in json.dumps(schema)


def test_explain_allow_and_deny(tmp_path: Path):
    allowed = tmp_path / "get.yaml"
    allowed.write_text("method: GET\npath: /echo?a=1\nheaders:\n  Authorization: Bearer s3cr3t\n")
    result = run_wardgate(
        "explain", "--policy", str(ROOT / "examples/demo/policy.yaml"), "--request", str(allowed)
    )
    assert result.returncode == 0
    decision = json.loads(result.stdout)
    assert decision["decision"] == "allow"
    assert decision["upstreamHeaders"]["Authorization"] == "[redacted]"
    assert "s3cr3t" not in result.stdout
    raw = b"TRACE /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    result = run_wardgate(
        "explain", "--policy", str(ROOT / "examples/demo/policy.yaml"), "--request", "-", input_=raw
    )
    assert result.returncode == 1
    decision = json.loads(result.stdout)
    assert (decision["status"], decision["filter"], decision["reason"]) == (
        405,
        "limits",
        "method_not_allowed",
    )


def test_explain_rejects_unreadable_requests(tmp_path: Path):
    bad = tmp_path / "req.yaml"
    bad.write_text("method: GET\npath: relative\n")
    result = run_wardgate("explain", "--request", str(bad))
    assert result.returncode == 2 and "path must start with '/'" in result.stderr
