"""Logs: ECS JSON and Envoy format, and never a secret, cookie, query or body in them."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import aiohttp

from tests.observability.records import REFUSED
from wardgate.observability.logs import AccessLog, envoy_access

SECRETS = ("Bearer-s3cr3t-token", "session=c00kie-value", "q-s3cr3t", "b0dy-s3cr3t")


async def _send_secrets(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + "/echo?access_token=q-s3cr3t",
            data=b"password=b0dy-s3cr3t",
            headers={"Authorization": "Bearer-s3cr3t-token", "Cookie": "session=c00kie-value"},
        ) as resp:
            assert resp.status == 200
        async with session.request(
            "TRACE",
            url + "/x?access_token=q-s3cr3t",
            headers={"Authorization": "Bearer-s3cr3t-token", "Cookie": "session=c00kie-value"},
        ) as resp:
            assert resp.status == 405


async def test_ecs_access_log_has_decision_fields_and_no_secrets(upstream, gateway, capsys):
    gw = await gateway(upstream)
    await _send_secrets(gw.url)
    text = gw.access_log.getvalue()
    for secret in SECRETS:
        assert secret not in text
    allowed, refused = gw.access_records()
    assert allowed["url.path"] == "/echo" and allowed["http.response.status_code"] == 200
    assert allowed["http.request.bytes"] == len("password=b0dy-s3cr3t")
    assert refused["wardgate"]["replied_by"] == "limits"
    assert refused["wardgate"]["reason"] == "method_not_allowed"
    assert refused["wardgate"]["rule_ids"] == ["limits.allowedMethods"]
    assert refused["wardgate"]["policy"]["digest"] == gw.process.holder.current.short_digest
    assert refused["wardgate"]["response_flags"] == "UAEX"
    captured = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in captured.out + captured.err


async def test_envoy_format_access_log(upstream, gateway):
    gw = await gateway(upstream)
    stream = io.StringIO()
    gw.process.access_log.format = "envoy"
    gw.process.access_log.stream = stream
    gw.process.access_log._render = envoy_access  # as --access-log envoy selects
    await _send_secrets(gw.url)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    pattern = re.compile(
        r'^\[\S+\] "(\S+) (\S+) HTTP/1.1" (\d{3}) (\S+) (\d+) (\d+) (\d+) (\S+) '
        r'"[^"]*" "[^"]*" "[0-9a-f-]{36}" "127.0.0.1:\d+" "[^"]*"$'
    )
    first, second = (pattern.match(line) for line in lines)
    assert first and first.groups()[:4] == ("POST", "/echo", "200", "-")
    assert second and second.groups()[:4] == ("TRACE", "/x", "405", "UAEX")
    for secret in SECRETS:
        assert secret not in stream.getvalue()


def test_client_text_cannot_forge_log_lines():
    record = dataclasses.replace(
        REFUSED, path="/a\nfake", user_agent='x"\n[fake] "GET', status=200, replied_by="upstream"
    )
    stream = io.StringIO()
    AccessLog("envoy", stream).write(record)
    AccessLog("ecs", stream).write(record)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["url.path"] == "/a\\nfake"


def test_envoy_wardgate_format_carries_the_reason_and_rules():
    record = dataclasses.replace(REFUSED, locations=("query:q", 'header:x-"odd"\nname'))
    stream = io.StringIO()
    AccessLog("envoy-wardgate", stream).write(record)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert line.rstrip("\n").endswith(
        '"waf" "attack_detected" "waf.942100,waf.942190" '
        '"query:q,header:x-%22odd%22\\nname" "waf.931100@query:next"'
    )
    stream = io.StringIO()
    AccessLog("envoy", stream).write(record)
    assert "attack_detected" not in stream.getvalue()  # the default format stays Envoy's
