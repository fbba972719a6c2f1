"""The ``peer`` filter config and per-request filter (see the package docstring)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wardgate.config.jwt import StringMatcherSpec
from wardgate.config.peer import PeerSpec, PrincipalSpec
from wardgate.config.policy import PolicySpec
from wardgate.filters.api import (
    FilterCompileError,
    FilterConfig,
    HttpFilter,
    HttpRequest,
    LocalReply,
    Violation,
)
from wardgate.filters.identity import PeerIdentity
from wardgate.filters.matching import RequestPredicate, first_rule, route_matcher, string_matcher

NAME = "peer"
METADATA_KEY = "peer"

PeerPredicate = Callable[[PeerIdentity], bool]

_DETAILS = {
    "no_client_certificate": "a verified client certificate is required",
    "principal_not_allowed": "the calling workload is not allowed here",
    "no_rule": "no peer rule covers this request",
    "ambiguous_path": "the request path is ambiguous",
}


def _describe(spec: StringMatcherSpec) -> str:
    """A short, human description of a matcher for refusal messages (policy text only)."""
    if spec.safe_regex is not None:
        return f"matching /{spec.safe_regex.regex}/"
    for kind in ("exact", "prefix", "suffix", "contains"):
        value = getattr(spec, kind)
        if value is not None:
            return f"{kind} {value!r}" if kind != "exact" else repr(value)
    return "?"  # pragma: no cover - the schema requires one kind


def _principal(spec: PrincipalSpec, where: str) -> tuple[PeerPredicate, str]:
    if spec.uri is not None:
        uri = string_matcher(spec.uri, f"{where}.uri")
        return (lambda p: any(uri(v) for v in p.uri_sans)), f"URI SAN {_describe(spec.uri)}"
    if spec.dns is not None:
        dns = string_matcher(spec.dns, f"{where}.dns")
        return (lambda p: any(dns(v) for v in p.dns_sans)), f"DNS SAN {_describe(spec.dns)}"
    assert spec.subject is not None
    subject = string_matcher(spec.subject, f"{where}.subject")
    return (lambda p: subject(p.subject)), f"subject {_describe(spec.subject)}"


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    match: RequestPredicate
    principals: tuple[PeerPredicate, ...] | None  # None: skip
    accepted: str  # what the rule accepts, for refusal messages


def _rule_match(rule: Rule) -> RequestPredicate:
    return rule.match


class PeerConfig(FilterConfig):
    """Compiled ``peer`` section: route matchers and principal predicates (RE2 for
    ``safeRegex``)."""

    name = NAME

    def __init__(self, spec: PeerSpec) -> None:
        problems: list[str] = []
        rules: list[Rule] = []
        for index, rule in enumerate(spec.rules):
            where = f"peer.rules[{index}]"
            try:
                matcher = route_matcher(rule.match, f"{where}.match")
                compiled = (
                    [
                        _principal(p, f"{where}.principals[{i}]")
                        for i, p in enumerate(rule.principals)
                    ]
                    if rule.principals is not None
                    else None
                )
            except FilterCompileError as exc:
                problems.extend(exc.problems)
                continue
            rules.append(
                Rule(
                    index,
                    matcher,
                    tuple(c[0] for c in compiled) if compiled is not None else None,
                    " or ".join(c[1] for c in compiled) if compiled is not None else "",
                )
            )
        if problems:
            raise FilterCompileError(problems)
        self.rules = tuple(rules)
        self.require_client_certificate = spec.require_client_certificate
        self._filter = PeerFilter(self)

    def create_filter(self) -> HttpFilter:
        return self._filter  # stateless

    def limitations(self) -> tuple[str, ...]:
        return (
            "caller identities come from the verified client certificate: the listener "
            "needs mutual TLS (wardgate run --tls-client-ca); under gRPC ext_authz Envoy "
            "must send it (include_peer_certificate: true); HTTP ext_authz and ext_proc "
            "never carry it, so peer rules needing a principal refuse there",
        )


class PeerFilter(HttpFilter):
    """Stateless; one instance serves every request of a policy generation."""

    def __init__(self, config: PeerConfig) -> None:
        self.config = config

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        peer = request.peer
        config = self.config
        if peer is None and config.require_client_certificate:
            return _refuse(
                403,
                "no_client_certificate",
                "peer.requireClientCertificate",
                "connection",
                "every request needs a verified client certificate (mutual TLS)",
            )
        if config.rules:
            reply = self._check_rules(request, peer)
            if reply is not None:
                return reply
        if peer is not None:
            request.metadata[METADATA_KEY] = _metadata(peer)
        return None

    def _check_rules(self, request: HttpRequest, peer: PeerIdentity | None) -> LocalReply | None:
        rule = first_rule(self.config.rules, _rule_match, request)
        if rule == "ambiguous":
            return _refuse(400, "ambiguous_path", "peer.rules", "path", None)
        if rule is None:
            return _refuse(403, "no_rule", "peer.rules", "path", None)
        assert isinstance(rule, Rule)
        rule_id = f"peer.rules[{rule.index}]"
        if rule.principals is not None:
            if peer is None:
                return _refuse(
                    403,
                    "no_client_certificate",
                    rule_id,
                    "connection",
                    f"requires a client certificate with {rule.accepted}",
                )
            if not any(accepts(peer) for accepts in rule.principals):
                return _refuse(
                    403,
                    "principal_not_allowed",
                    rule_id,
                    "connection",
                    f"caller {peer.principal!r} is not one of: {rule.accepted}",
                )
        return None


@functools.lru_cache(maxsize=4096)
def _metadata(peer: PeerIdentity) -> dict[str, Any]:
    """``request.metadata["peer"]``, built once per identity and shared: read it, never
    modify it."""
    return {
        "principal": peer.principal,
        "uriSans": list(peer.uri_sans),
        "dnsSans": list(peer.dns_sans),
        "subject": peer.subject,
        "sha256": peer.sha256,
    }


def _refuse(
    status: int, reason: str, rule_id: str, location: str, message: str | None
) -> LocalReply:
    detail = _DETAILS[reason]
    return LocalReply(
        status=status,
        filter=NAME,
        reason=reason,
        detail=detail,
        violations=(Violation(rule_id, location, (message or detail)[:1024]),),
    )


def compile(policy: PolicySpec) -> PeerConfig | None:
    """The filter is in the chain when the policy has a ``peer`` section."""
    if policy.peer is None:
        return None
    return PeerConfig(policy.peer)
