"""Decision parity: for the same policy and the same request, native ``wardgate run``,
Envoy + HTTP ext_authz, Envoy + gRPC ext_authz and Envoy + ext_proc give the same
allow/deny and status (and the same reason on refusals).

Table-driven: to cover a new filter, append a :class:`ParityCase` with a policy that turns
it on and requests on both sides of its decision. Requests near a header-count or
header-size limit do not belong here: Envoy adds its own headers (``x-request-id``,
``x-forwarded-proto``, ``x-envoy-*``) before the check, see docs/envoy.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import aiohttp
import pytest


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(frozen=True)
class ParityCase:
    name: str
    policy: str
    probes: tuple[Probe, ...] = field(default_factory=tuple)


CASES = [
    ParityCase(
        "default-policy",
        "",
        (
            Probe("GET", "/echo"),
            Probe("POST", "/echo", body=b'{"a": 1}'),
            Probe("TRACE", "/echo"),
            Probe("GET", "/echo?" + "q" * 9000),
        ),
    ),
    ParityCase(
        "limits",
        """
limits:
  maxUrlBytes: 256
  maxHeaderValueBytes: 128
  maxRequestBodyBytes: 1000
  allowedMethods: [GET, POST, PUT]
""",
        (
            Probe("GET", "/echo?x=1"),
            Probe("GET", "/echo?" + "x" * 300),
            Probe("DELETE", "/echo"),
            Probe("PUT", "/echo", body=b"z" * 999),
            Probe("POST", "/echo", body=b"z" * 1001),
            Probe("GET", "/echo", headers=(("x-big", "v" * 200),)),
            Probe("GET", "/echo", headers=(("x-small", "v" * 100),)),
        ),
    ),
    ParityCase(
        "headers",
        """
headers:
  request:
    add: [{name: x-added, value: "1"}]
    remove: [x-drop]
  response:
    add: [{name: x-frame-options, value: DENY}]
""",
        (
            Probe("GET", "/echo", headers=(("x-drop", "secret"),)),
            Probe("TRACE", "/echo"),
        ),
    ),
]


async def _status(url: str, probe: Probe) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            probe.method, url + probe.path, headers=dict(probe.headers), data=probe.body
        ) as resp:
            body = await resp.read()
            reason = ""
            if resp.content_type == "application/problem+json":
                reason = json.loads(body)["reason"]
            return resp.status, reason


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_same_decision_on_every_door(case, upstream, gateway, envoy_stack):
    native = await gateway(upstream, case.policy)
    grpc = await envoy_stack("ext-authz-grpc.yaml", case.policy)
    http = await envoy_stack("ext-authz-http.yaml", case.policy)
    proc = await envoy_stack("ext-proc.yaml", case.policy)
    statuses = set()
    for probe in case.probes:
        want = await _status(native.url, probe)
        statuses.add(want[0])
        assert await _status(grpc.url, probe) == want, f"gRPC ext_authz differs on {probe}"
        assert await _status(http.url, probe) == want, f"HTTP ext_authz differs on {probe}"
        assert await _status(proc.url, probe) == want, f"ext_proc differs on {probe}"
    assert 200 in statuses and len(statuses) > 1  # each case exercises allow and deny
