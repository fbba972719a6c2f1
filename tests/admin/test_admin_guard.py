"""The admin port refuses state-changing requests from browsers (cross-origin POSTs, DNS
rebinding) and warns when it is bound beyond loopback (issue 19, smaller items)."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from wardgate.admin.guard import refusal, warn_if_exposed


@pytest.mark.parametrize(
    ("headers", "bind", "refused"),
    [
        ({}, "127.0.0.1", False),
        ({"host": "127.0.0.1:9901"}, "127.0.0.1", False),
        ({"host": "localhost:19901"}, "127.0.0.1", False),  # kubectl port-forward
        ({"host": "[::1]:9901"}, "::1", False),
        ({"host": "10.1.2.3:9901"}, "0.0.0.0", False),
        ({"host": "evil.example:9901"}, "127.0.0.1", True),  # DNS rebinding
        ({"host": "evil.example"}, "0.0.0.0", True),
        ({"host": "10.1.2.3:9901"}, "127.0.0.1", True),
        ({"host": "127.0.0.1:9901", "origin": "http://127.0.0.1:9901"}, "127.0.0.1", False),
        ({"host": "127.0.0.1:9901", "origin": "http://evil.example"}, "127.0.0.1", True),
        ({"host": "127.0.0.1:9901", "origin": "null"}, "127.0.0.1", True),
        ({"host": "127.0.0.1:9901", "sec-fetch-site": "cross-site"}, "127.0.0.1", True),
        ({"host": "127.0.0.1:9901", "sec-fetch-site": "same-origin"}, "127.0.0.1", False),
    ],
)
def test_refusal_rules(headers, bind, refused):
    assert (refusal("POST", headers, bind) is not None) is refused
    assert refusal("GET", headers, bind) is None  # reads stay open


async def test_foreign_posts_change_nothing(upstream, gateway):
    gw = await gateway(upstream)
    url = gw.admin_url + "/healthcheck/fail"
    async with aiohttp.ClientSession() as session:
        for headers in (
            {"Host": "rebound.evil.example:9901"},
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            async with session.post(url, headers=headers) as resp:
                assert resp.status == 403, headers
            async with session.get(gw.admin_url + "/ready") as resp:
                assert resp.status == 200  # still LIVE: the POST did nothing
        async with session.post(url) as resp:
            assert resp.status == 200
        async with session.get(gw.admin_url + "/ready") as resp:
            assert resp.status == 503


@pytest.mark.parametrize(
    ("host", "warns"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("10.0.0.7", True),
    ],
)
def test_only_a_loopback_admin_is_quiet(caplog, host, warns):
    with caplog.at_level(logging.WARNING, logger="wardgate.admin"):
        warn_if_exposed(host)
    assert bool(caplog.records) is warns


def test_admin_beyond_loopback_warns_at_start(gateway_process):
    gw = gateway_process("--upstream", "http://127.0.0.1:9", "--admin", "0.0.0.0:0")
    assert any("admin port is reachable from the network" in line for line in gw.stderr_lines)
