"""The ``jwt_authn`` filter config and per-request filter (see the package docstring for
the contract with the upstream and later filters)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from wardgate.config.jwt import JwtSpec
from wardgate.config.policy import PolicySpec
from wardgate.filters.api import (
    FilterCompileError,
    FilterConfig,
    HttpFilter,
    HttpRequest,
    LocalReply,
    Violation,
)
from wardgate.filters.jwt_authn import stats
from wardgate.filters.jwt_authn.claims import ClaimChecks
from wardgate.filters.jwt_authn.extract import remove, vouched_headers
from wardgate.filters.jwt_authn.matching import RequestPredicate, route_matcher
from wardgate.filters.jwt_authn.provider import Failure, Provider
from wardgate.filters.jwt_authn.requirements import Context, Node, compile_requirement
from wardgate.filters.matching import first_rule

NAME = "jwt_authn"
METADATA_KEY = "jwt_authn"

log = logging.getLogger("wardgate.jwt_authn")

_DETAILS = {
    "missing": "Jwt is missing",
    "jwks_unavailable": "the token issuer's keys are not available",
    "insufficient_claims": "the token does not grant access to this resource",
    "no_rule": "no JWT rule covers this request",
    "ambiguous_path": "the request path is ambiguous",
}


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    match: RequestPredicate
    node: Node | None  # None: skip
    claims: ClaimChecks | None


class JwtAuthnConfig(FilterConfig):
    """Compiled ``jwt`` section: providers (keys loaded or remote caches bound), rules
    (matchers and requirement trees)."""

    name = NAME

    def __init__(self, spec: JwtSpec) -> None:
        problems: list[str] = []
        providers: dict[str, Provider] = {}
        for name, provider_spec in spec.providers.items():
            try:
                providers[name] = Provider(name, provider_spec, spec.max_token_bytes)
            except FilterCompileError as exc:
                problems.extend(exc.problems)
        rules: list[Rule] = []
        if not problems:
            for index, rule in enumerate(spec.rules):
                try:
                    matcher = route_matcher(rule.match, f"jwt.rules[{index}].match")
                except FilterCompileError as exc:
                    problems.extend(exc.problems)
                    continue
                node = (
                    compile_requirement(rule.requires, providers)
                    if rule.requires is not None
                    else None
                )
                checks = ClaimChecks.compile(rule.claims) if rule.claims is not None else None
                rules.append(Rule(index, matcher, node, checks))
        if problems:
            raise FilterCompileError(problems)
        self.providers = providers
        self.rules = tuple(rules)
        self.bypass_cors_preflight = spec.bypass_cors_preflight
        self.reserved_headers = tuple(
            sorted({h for p in providers.values() for h in p.reserved_headers()})
        )
        notes = [
            f"provider {p.name}: tokens in query parameters are forwarded upstream (the "
            "request target is never rewritten); use headers or cookies, or forward: true"
            for p in providers.values()
            if not p.forward and any(loc.kind == "param" for loc in p.locations)
        ]
        notes += [
            f"provider {name}: the JWKS is fetched over plain http (keys can be replaced "
            "in transit); use https outside tests"
            for name, p in spec.providers.items()
            if p.remote_jwks is not None and p.remote_jwks.http_uri.uri.startswith("http://")
        ]
        self._limitations = tuple(notes)
        self._filter = JwtAuthnFilter(self)

    def create_filter(self) -> HttpFilter:
        return self._filter  # stateless: per-request state lives in a Context

    def limitations(self) -> tuple[str, ...]:
        return self._limitations

    def select_rule(self, request: HttpRequest) -> Rule | str | None:
        """The first rule covering ``request``; ``None`` when none does; ``"ambiguous"``
        when decoding the path would select a different rule."""
        return first_rule(self.rules, _rule_match, request)


def _rule_match(rule: Rule) -> RequestPredicate:
    return rule.match


class JwtAuthnFilter(HttpFilter):
    """Stateless; one instance serves every request of a policy generation."""

    def __init__(self, config: JwtAuthnConfig) -> None:
        self.config = config

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        config = self.config
        headers = request.headers
        for name in config.reserved_headers:
            headers.popall(name, None)  # only the gateway sets claim headers
        if config.bypass_cors_preflight and _is_cors_preflight(request):
            stats.count_decision("skipped", "cors_preflight")
            return None
        rule = config.select_rule(request)
        if rule == "ambiguous":
            return _refuse(request, 400, "ambiguous_path", "jwt.rules", "path", None)
        if rule is None:
            return _refuse(request, 403, "no_rule", "jwt.rules", "path", None)
        assert isinstance(rule, Rule)
        if rule.node is None:
            stats.count_decision("skipped", "skip")
            return None
        ctx = Context(request, config.providers)
        failure = await rule.node.run(ctx)
        rule_id = f"jwt.rules[{rule.index}]"
        if failure is not None:
            return _refuse_failure(request, failure, rule_id)
        if rule.claims is not None:
            if not ctx.verified:
                return _refuse(request, 401, "missing", rule_id, "token", None)
            unmet = [rule.claims.first_unmet(v.claims) for v in ctx.verified.values()]
            if all(u is not None for u in unmet):
                return _refuse(request, 403, "insufficient_claims", rule_id, "token", unmet[0])
        forwarded = []
        for provider, item in ctx.used:
            if provider.forward:
                forwarded.append(item)
            else:
                remove(headers, [item])
        if forwarded:
            request.vouched |= vouched_headers(headers, forwarded)
        for name, verified in ctx.verified.items():
            for header, value in config.providers[name].header_values(verified):
                headers[header] = value
        if ctx.verified:
            request.metadata[METADATA_KEY] = {n: v.claims for n, v in ctx.verified.items()}
        stats.count_decision("allowed", "ok" if ctx.verified else "allow_missing")
        return None


def _is_cors_preflight(request: HttpRequest) -> bool:
    headers = request.headers
    return (
        request.method == "OPTIONS"
        and "origin" in headers
        and "access-control-request-method" in headers
    )


def _realm(request: HttpRequest) -> str:
    """Envoy's realm: the request URL without query, reduced to characters that cannot
    break out of the quoted string."""
    host = request.headers.get("host", "")
    url = f"{request.scheme}://{host}{request.path}"[:256]
    return "".join(ch for ch in url if ch.isascii() and ch.isprintable() and ch not in '"\\')


def _refuse_failure(request: HttpRequest, failure: Failure, rule_id: str) -> LocalReply:
    return _refuse(
        request,
        failure.status,
        failure.reason,
        f"{rule_id}/{failure.provider}",
        failure.location,
        failure.message,
    )


def _refuse(
    request: HttpRequest,
    status: int,
    reason: str,
    rule_id: str,
    location: str,
    message: str | None,
) -> LocalReply:
    stats.count_decision("refused", reason)
    detail = _DETAILS.get(reason, "Jwt verification fails")
    headers: tuple[tuple[str, str], ...] = ()
    if status == 401 and reason == "missing":
        # RFC 6750 3.1 and Envoy: no error code when the request carried no token
        headers = (("www-authenticate", f'Bearer realm="{_realm(request)}"'),)
    elif status == 401 or reason == "audience":
        headers = (
            ("www-authenticate", f'Bearer realm="{_realm(request)}", error="invalid_token"'),
        )
    elif reason == "insufficient_claims":
        headers = (
            (
                "www-authenticate",
                f'Bearer realm="{_realm(request)}", error="insufficient_scope"',
            ),
        )
    elif status == 503:
        headers = (("retry-after", "5"),)
    return LocalReply(
        status=status,
        filter=NAME,
        reason=reason,
        detail=detail,
        violations=(Violation(rule_id, location, message or detail),),
        headers=headers,
    )


def compile(policy: PolicySpec) -> JwtAuthnConfig | None:
    """The filter is in the chain when the policy has a ``jwt`` section."""
    if policy.jwt is None:
        return None
    return JwtAuthnConfig(policy.jwt)
