"""``--access-log envoy --access-log-format '...'``: Envoy's format operators, the WAF's
reason and rules in the line, and never a secret (a header that may carry one is refused
at start-up, not printed)."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import aiohttp
import pytest

from tests.conftest import run_wardgate
from tests.observability.records import REFUSED
from wardgate.observability.access_format import FormatError, compile_format
from wardgate.observability.logs import AccessLog, envoy_access, envoy_wardgate_access

ENVOY_DEFAULT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)
WARDGATE_FIELDS = (
    ' "%DYNAMIC_METADATA(wardgate:replied_by)%" "%DYNAMIC_METADATA(wardgate:reason)%"'
    ' "%DYNAMIC_METADATA(wardgate:rule_ids)%" "%DYNAMIC_METADATA(wardgate:locations)%"'
    ' "%DYNAMIC_METADATA(wardgate:detected)%"'
)


def test_envoys_default_format_string_prints_the_fixed_envoy_line():
    render = compile_format(ENVOY_DEFAULT)
    assert render(REFUSED) == envoy_access(REFUSED)
    allowed = dataclasses.replace(REFUSED, status=200, upstream_service_time_ms=12)
    assert render(allowed) == envoy_access(allowed)


def test_the_metadata_operators_print_what_envoy_wardgate_prints():
    render = compile_format(ENVOY_DEFAULT.rstrip("\n") + WARDGATE_FIELDS)
    assert render(REFUSED) == envoy_wardgate_access(REFUSED)


def test_a_short_format_with_rules_lengths_and_a_literal_percent():
    render = compile_format(
        "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% 100%% "
        "%DYNAMIC_METADATA(wardgate:rules)% %REQ(USER-AGENT):4% "
        "%START_TIME(%Y-%m-%d)% %DYNAMIC_METADATA(envoy.filters.http.ext_authz:wardgate:reason)%"
    )
    assert render(REFUSED) == (
        "/search 403 UAEX 100% waf.942100,waf.942190 curl 2023-11-14 attack_detected"
    )
    empty = dataclasses.replace(REFUSED, rule_ids=(), response_flags="", reason="")
    assert render(empty) == "/search 403 - 100% - curl 2023-11-14 -"


def test_the_whole_metadata_namespace_is_one_json_object():
    line = compile_format("%DYNAMIC_METADATA(wardgate)%")(REFUSED)
    assert '"reason": "attack_detected"' in line and '"rule_ids": "waf.942100,waf.942190"' in line


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%REQ(AUTHORIZATION)%", "never prints 'authorization'"),
        ("%REQ(COOKIE)%", "never prints 'cookie'"),
        ("%REQ(X-FORWARDED-FOR?X-API-KEY)%", "never prints 'x-api-key'"),
        ("%RESP(SET-COOKIE)%", "unknown or unsupported operator"),
        ("%REQUESTED_SERVER_NAME%", "unknown or unsupported operator"),
        ("%DYNAMIC_METADATA(wardgate:password)%", "no metadata key 'password'"),
        ("%DYNAMIC_METADATA(other:reason)%", "namespace is wardgate"),
        ("%RESPONSE_CODE", "unterminated operator"),
        ("%REQ(:PATH):ten%", "expected :LENGTH"),
    ],
)
def test_a_bad_or_secret_bearing_operator_is_an_error(fmt, message):
    with pytest.raises(FormatError, match=message):
        compile_format(fmt)


def test_client_text_cannot_forge_a_line():
    stream = io.StringIO()
    forged = dataclasses.replace(REFUSED, path="/a\nfake 200", user_agent="x\r\ny")
    AccessLog("envoy", stream, compile_format("%REQ(:PATH)% %REQ(USER-AGENT)%")).write(forged)
    assert stream.getvalue().count("\n") == 1


def test_the_cli_refuses_a_bad_format_before_listening():
    result = run_wardgate(
        "run",
        "--upstream",
        "http://127.0.0.1:9",
        "--access-log",
        "envoy",
        "--access-log-format",
        "%REQ(AUTHORIZATION)%",
    )
    assert result.returncode == 2 and "never prints 'authorization'" in result.stderr
    result = run_wardgate(
        "run", "--upstream", "http://127.0.0.1:9", "--access-log-format", "%RESPONSE_CODE%"
    )
    assert result.returncode == 2 and "needs --access-log envoy" in result.stderr


async def test_a_refusal_logs_its_reason_and_rules_and_no_secret(upstream, gateway_process):
    fmt = (
        "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% "
        '"%DYNAMIC_METADATA(wardgate:reason)%" "%DYNAMIC_METADATA(wardgate:rules)%" '
        '"%DYNAMIC_METADATA(wardgate:locations)%"'
    )
    gw = gateway_process(
        "--upstream", upstream, "--access-log", "envoy", "--access-log-format", fmt
    )
    secrets = {"Authorization": "Bearer s3cr3t-t0ken", "Cookie": "sid=c00kie-s3cr3t"}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            gw.url + "/echo?q=%3Cscript%3Ealert(1)%3C/script%3E&token=q-s3cr3t", headers=secrets
        ) as resp:
            assert resp.status == 403
        async with http.get(gw.url + "/echo?token=q-s3cr3t", headers=secrets) as resp:
            assert resp.status == 200
    for _ in range(100):  # the lines reach the pipe after the responses
        if len(gw.stdout_lines) >= 2:
            break
        await asyncio.sleep(0.1)
    refused, allowed = gw.stdout_lines[:2]
    assert refused.startswith('GET /echo 403 UAEX "attack_detected" "waf.941')
    rules, locations = refused.split('" "')[1:3]
    # One location per rule, in the same order (what `wardgate tune` pairs up).
    assert len(rules.split(",")) == len(locations.split(","))
    assert set(locations.strip('"').split(",")) == {"query:q"}
    assert allowed == 'GET /echo 200 - "-" "-" "-"'
    text = "\n".join(gw.stdout_lines + gw.stderr_lines)
    for secret in ("s3cr3t-t0ken", "c00kie-s3cr3t", "q-s3cr3t", "script"):
        assert secret not in text
