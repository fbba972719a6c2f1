"""``peer`` rules: the calling workload's certificate identity per path and method, alone
and together with JWT requirements."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from multidict import CIMultiDict

from tests.filters.jwt_authn.helpers import claims, local_provider, rsa_key
from wardgate.config import PolicyError, load_policy_text
from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.filters.identity import PeerIdentity
from wardgate.runtime import CompiledPolicy, RequestPipeline, compile_policy

K1 = rsa_key("k1")

BILLING = PeerIdentity(
    uri_sans=("spiffe://cluster.local/ns/shop/sa/billing",),
    dns_sans=("billing.shop.svc",),
    subject="CN=billing,O=shop",
    sha256="ab" * 32,
)
INTRUDER = PeerIdentity(
    uri_sans=("spiffe://cluster.local/ns/other/sa/intruder",),
    dns_sans=(),
    subject="CN=intruder",
    sha256="cd" * 32,
)

RULES: list[dict[str, Any]] = [
    {"match": {"prefix": "/healthz"}, "skip": True},
    {
        "match": {"prefix": "/admin", "methods": ["POST", "DELETE"]},
        "principals": [{"uri": {"exact": "spiffe://cluster.local/ns/ops/sa/admin"}}],
    },
    {
        "match": {"prefix": "/"},
        "principals": [
            {"uri": {"prefix": "spiffe://cluster.local/ns/shop/"}},
            {"dns": {"safeRegex": {"regex": r"[a-z-]+\.batch\.svc"}}},
            {"subject": {"exact": "CN=legacy,O=shop"}},
        ],
    },
]


def _policy(doc: dict[str, Any]) -> CompiledPolicy:
    return compile_policy(load_policy_text(yaml.safe_dump(doc)))


async def _send(
    policy: CompiledPolicy,
    peer: PeerIdentity | None,
    target: str = "/orders",
    method: str = "GET",
    token: str | None = None,
) -> tuple[LocalReply | None, HttpRequest]:
    headers: CIMultiDict[str] = CIMultiDict({"host": "orders.shop.svc"})
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    path, _, query = target.partition("?")
    request = HttpRequest(method, target, path, query, headers, peer=peer)
    return await RequestPipeline(policy, request).decode_headers(), request


async def test_principals_per_path_and_method() -> None:
    policy = _policy({"peer": {"rules": RULES}})
    reply, request = await _send(policy, BILLING)
    assert reply is None
    assert request.metadata["peer"]["principal"] == "spiffe://cluster.local/ns/shop/sa/billing"

    reply, _ = await _send(policy, INTRUDER)
    assert reply is not None and (reply.status, reply.reason) == (403, "principal_not_allowed")
    assert reply.filter == "peer"
    (violation,) = reply.violations
    assert violation.rule_id == "peer.rules[2]"
    assert "spiffe://cluster.local/ns/other/sa/intruder" in violation.message
    assert "URI SAN prefix 'spiffe://cluster.local/ns/shop/'" in violation.message

    # POST /admin needs the ops identity; GET /admin falls through to the general rule.
    reply, _ = await _send(policy, BILLING, "/admin/users", "POST")
    assert reply is not None and reply.violations[0].rule_id == "peer.rules[1]"
    reply, _ = await _send(policy, BILLING, "/admin/users", "GET")
    assert reply is None

    batch = PeerIdentity((), ("report-gen.batch.svc",), "CN=x", "00" * 32)
    assert (await _send(policy, batch))[0] is None
    legacy = PeerIdentity((), (), "CN=legacy,O=shop", "00" * 32)
    assert (await _send(policy, legacy))[0] is None
    not_quite = PeerIdentity((), ("report-gen.batch.svc.evil",), "CN=legacy,O=shop2", "00" * 32)
    assert (await _send(policy, not_quite))[0] is not None  # safeRegex must match whole


async def test_no_certificate_names_what_was_missing_and_skip_needs_none() -> None:
    policy = _policy({"peer": {"rules": RULES}})
    reply, _ = await _send(policy, None)
    assert reply is not None and (reply.status, reply.reason) == (403, "no_client_certificate")
    assert "requires a client certificate with URI SAN prefix" in reply.violations[0].message
    assert (await _send(policy, None, "/healthz"))[0] is None


async def test_no_rule_and_ambiguous_paths_are_refused() -> None:
    policy = _policy({"peer": {"rules": [{"match": {"prefix": "/public"}, "skip": True}]}})
    reply, _ = await _send(policy, BILLING, "/private")
    assert reply is not None and (reply.status, reply.reason) == (403, "no_rule")
    reply, _ = await _send(policy, None, "/public%2F..%2Fprivate")
    assert reply is not None and (reply.status, reply.reason) == (400, "ambiguous_path")


async def test_service_identity_and_end_user_together() -> None:
    doc = {
        "peer": {"rules": RULES},
        "jwt": {
            "providers": {"idp": local_provider(K1)},
            "rules": [
                {"match": {"prefix": "/healthz"}, "skip": True},
                {"match": {"prefix": "/"}, "requires": {"providerName": "idp"}},
            ],
        },
    }
    policy = _policy(doc)
    token = K1.sign(claims())
    assert (await _send(policy, BILLING, token=token))[0] is None
    reply, _ = await _send(policy, BILLING)  # right workload, no user
    assert reply is not None and (reply.filter, reply.status) == ("jwt_authn", 401)
    reply, _ = await _send(policy, INTRUDER, token=token)  # a user, wrong workload
    assert reply is not None and (reply.filter, reply.reason) == ("peer", "principal_not_allowed")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"match": {"prefix": "/"}}, "exactly one of `principals` or `skip: true`"),
        (
            {"match": {"prefix": "/"}, "skip": True, "principals": [{"uri": {"exact": "a"}}]},
            "exactly one",
        ),
        ({"match": {"prefix": "/"}, "principals": []}, "at least 1"),
        ({"match": {"prefix": "/"}, "principals": [{}]}, "exactly one of: uri, dns, subject"),
        (
            {
                "match": {"prefix": "/"},
                "principals": [{"uri": {"exact": "a"}, "dns": {"exact": "b"}}],
            },
            "exactly one of",
        ),
    ],
)
def test_schema_refuses_unclear_rules(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(yaml.safe_dump({"peer": {"rules": [rule]}}))
    assert message in str(info.value.report())


def test_bad_regex_is_a_compile_error_with_its_path() -> None:
    doc = {
        "peer": {
            "rules": [
                {"match": {"prefix": "/"}, "principals": [{"uri": {"safeRegex": {"regex": "(a"}}}]}
            ]
        }
    }
    with pytest.raises(Exception) as info:
        _policy(doc)
    assert "peer.rules[0].principals[0].uri.safeRegex.regex" in str(info.value)


async def test_require_client_certificate_applies_before_rules() -> None:
    policy = _policy({"peer": {"requireClientCertificate": True, "rules": RULES}})
    reply, _ = await _send(policy, None, "/healthz")  # even where a rule skips
    assert reply is not None and (reply.status, reply.reason) == (403, "no_client_certificate")
    assert reply.violations[0].rule_id == "peer.requireClientCertificate"
    assert (await _send(policy, BILLING, "/healthz"))[0] is None

    only = _policy({"peer": {"requireClientCertificate": True}})
    assert (await _send(only, INTRUDER, "/anything"))[0] is None  # any verified caller
    assert (await _send(only, None, "/anything"))[0] is not None


def test_an_empty_peer_section_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text("peer: {}\n")
    assert "requireClientCertificate" in info.value.report()


def test_a_baseline_makes_mutual_tls_mandatory() -> None:
    from wardgate.config.baseline import SecurityBaselineSpec
    from wardgate.config.baseline_merge import apply_baselines

    baseline = SecurityBaselineSpec.model_validate({"peer": {"requireClientCertificate": True}})
    outcome = apply_baselines(load_policy_text(""), [("mtls", baseline)])
    assert outcome.effective is not None and outcome.effective.peer is not None
    assert outcome.effective.peer.require_client_certificate
    assert [(f.kind, f.path) for f in outcome.findings] == [
        ("clamp", "peer.requireClientCertificate")
    ]
    # An app that writes false explicitly is told it violates the floor; its rules stay.
    app = load_policy_text(
        yaml.safe_dump({"peer": {"requireClientCertificate": False, "rules": RULES}})
    )
    outcome = apply_baselines(app, [("mtls", baseline)])
    assert outcome.effective is not None and outcome.effective.peer is not None
    assert outcome.effective.peer.require_client_certificate
    assert len(outcome.effective.peer.rules) == len(RULES)
    assert [f.kind for f in outcome.findings] == ["violation"]


async def test_explain_offline_with_a_described_peer() -> None:
    from wardgate.runtime.explain import explain, parse_request_description

    policy = _policy({"peer": {"rules": RULES}})
    allowed = parse_request_description(
        b"method: GET\npath: /orders\nheaders: {x-forwarded-client-cert: By=forged}\n"
        b"peer: {uri: ['spiffe://cluster.local/ns/shop/sa/billing'], subject: CN=billing}\n"
    )
    result = await explain(policy, allowed)
    assert result["decision"] == "allow"
    xfcc = result["upstreamHeaders"]["x-forwarded-client-cert"]
    assert "URI=spiffe://cluster.local/ns/shop/sa/billing" in xfcc and "forged" not in xfcc
    refused = await explain(policy, parse_request_description(b"path: /orders\n"))
    assert (refused["decision"], refused["reason"]) == ("deny", "no_client_certificate")
