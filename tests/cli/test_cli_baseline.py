"""``wardgate validate --baseline``: the operator's baseline check, offline, for CI."""

from __future__ import annotations

from pathlib import Path

from wardgate.cli import main

BASELINE = """\
apiVersion: wardgate.dev/v1alpha1
kind: SecurityBaseline
metadata: {name: prod}
spec:
  limits: {maxUrlBytes: 4096, allowedMethods: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS]}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_policy_meeting_the_baseline_passes_with_clamped_defaults_as_notes(tmp_path, capsys):
    base = write(tmp_path, "b.yaml", BASELINE)
    policy = write(tmp_path, "p.yaml", "limits: {maxHeadersCount: 50}\n")
    assert main(["validate", "--baseline", base, policy]) == 0
    out = capsys.readouterr().out
    assert "meets the baselines" in out
    assert "note: limits.maxUrlBytes: 8192 is over the maximum 4096" in out


def test_policy_weakening_the_baseline_fails_naming_the_floor(tmp_path, capsys):
    base = write(tmp_path, "b.yaml", BASELINE)
    policy = write(tmp_path, "p.yaml", "limits: {maxUrlBytes: 9000}\n")
    assert main(["validate", "--baseline", base, policy]) == 1
    out = capsys.readouterr().out
    assert "weakens a baseline" in out
    assert "violation: limits.maxUrlBytes: 9000 is over the maximum 4096" in out
    assert "(baseline prod)" in out


def test_bad_baseline_file_is_reported_with_paths(tmp_path, capsys):
    base = write(tmp_path, "b.yaml", BASELINE.replace("maxUrlBytes", "maxUrlByte"))
    policy = write(tmp_path, "p.yaml", "")
    assert main(["validate", "--baseline", base, policy]) == 2
    assert "prod: spec.limits.maxUrlByte: unknown field" in capsys.readouterr().out


def test_invalid_policy_still_reported_with_baseline(tmp_path, capsys):
    base = write(tmp_path, "b.yaml", BASELINE)
    policy = write(tmp_path, "p.yaml", "limits: {maxHeadersCount: 0}\n")
    assert main(["validate", "--baseline", base, policy]) == 1
    assert "limits.maxHeadersCount" in capsys.readouterr().out
