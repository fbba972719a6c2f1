"""The requirement tree (Envoy's ``JwtRequirement``), compiled into verifier nodes.

Each request gets a :class:`Context` that extracts tokens and verifies each (provider,
token, audiences) once, however many nodes ask. Failures bubble up with their reason; for
``requiresAny`` the most telling failure wins (a present-but-invalid token over a missing
one), so the client is told ``invalid_token`` rather than "missing" when it sent one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict

from wardgate.config.jwt import JwtRequirementSpec
from wardgate.filters.api import HttpRequest
from wardgate.filters.jwt_authn.extract import Extracted, cookies, extract, query_params
from wardgate.filters.jwt_authn.provider import Failure, Provider, Verified

_RANK = {"missing": 0}  # every other reason ranks 1: more telling than "missing"

MAX_TOKENS = 4
"""More distinct tokens than this at one provider's locations refuse the request: each one
costs a signature check, so a client must not be able to ask for a hundred."""


@dataclass(slots=True)
class Context:
    """Per-request state shared by the nodes."""

    request: HttpRequest
    providers: Mapping[str, Provider]
    verified: dict[str, Verified] = field(default_factory=dict)
    used: list[tuple[Provider, Extracted]] = field(default_factory=list)
    _params: list[tuple[str, str]] | None = None
    _cookies: list[tuple[str, str]] | None = None
    _tokens: dict[str, list[Extracted]] = field(default_factory=dict)
    _results: dict[tuple[str, str, frozenset[str] | None], Verified | Failure] = field(
        default_factory=dict
    )

    def tokens(self, provider: Provider) -> list[Extracted]:
        found = self._tokens.get(provider.name)
        if found is None:
            headers: CIMultiDict[str] = self.request.headers
            params = self._params
            if params is None and provider.param_names:
                params = _token_params(self.request.query, provider.param_names)
                self._params = params  # None again when skipped: others may need them
            if self._cookies is None and provider.reads_cookies:
                self._cookies = cookies(headers)
            found = extract(provider.locations, headers, params, self._cookies)
            self._tokens[provider.name] = found
        return found

    async def verify(
        self, provider: Provider, item: Extracted, audiences: frozenset[str] | None
    ) -> Verified | Failure:
        key = (provider.name, item.token, audiences)
        result = self._results.get(key)
        if result is None:
            result = await provider.verify(item.token, audiences, item.location.label)
            self._results[key] = result
        return result

    def accept(self, provider: Provider, item: Extracted, result: Verified) -> None:
        self.verified[provider.name] = result
        if (provider, item) not in self.used:
            self.used.append((provider, item))


def _token_params(query: str, names: frozenset[str]) -> list[tuple[str, str]] | None:
    """The query's parameters (:func:`query_params`), or ``None`` (none of ``names``)
    when no parameter can be one of ``names``: without a ``%`` escape, a name that is not
    in the query text cannot be a parameter's name (most requests carry their token in a
    header, and the query is then not parsed at all)."""
    if "%" not in query and not any(name in query for name in names):
        return None
    return query_params(query)


Outcome = Failure | None
"""``None``: the requirement is met."""


class Node:
    async def run(self, ctx: Context) -> Outcome:
        raise NotImplementedError


class ProviderNode(Node):
    """A valid token from one provider (all of its tokens must be valid)."""

    def __init__(self, provider: Provider, audiences: frozenset[str] | None) -> None:
        self.provider = provider
        self.audiences = audiences

    async def run(self, ctx: Context) -> Outcome:
        found = ctx.tokens(self.provider)
        if not found:
            return self.provider.fail("missing", "no token was found")
        if len(found) > MAX_TOKENS:
            return self.provider.fail("malformed", "the request carries too many tokens")
        accepted = []
        for item in found:
            result = await ctx.verify(self.provider, item, self.audiences)
            if isinstance(result, Failure):
                return result
            accepted.append((item, result))
        for item, result in accepted:
            ctx.accept(self.provider, item, result)
        return None


class AnyNode(Node):
    def __init__(self, children: list[Node]) -> None:
        self.children = children

    async def run(self, ctx: Context) -> Outcome:
        worst: Failure | None = None
        for child in self.children:
            outcome = await child.run(ctx)
            if outcome is None:
                return None
            if worst is None or _RANK.get(outcome.reason, 1) > _RANK.get(worst.reason, 1):
                worst = outcome
        return worst


class AllNode(Node):
    def __init__(self, children: list[Node]) -> None:
        self.children = children

    async def run(self, ctx: Context) -> Outcome:
        for child in self.children:
            outcome = await child.run(ctx)
            if outcome is not None:
                return outcome
        return None


class AllowMissingNode(Node):
    """No token anywhere passes. Every token that is present must be valid for at least
    one provider that looks for it there; with ``or_failed`` nothing fails (valid tokens
    still yield claims)."""

    def __init__(self, providers: list[Provider], or_failed: bool) -> None:
        self.providers = providers
        self.or_failed = or_failed

    async def run(self, ctx: Context) -> Outcome:
        by_token: dict[str, list[tuple[Provider, Extracted]]] = {}
        for provider in self.providers:
            found = ctx.tokens(provider)
            if len(found) > MAX_TOKENS and not self.or_failed:
                return provider.fail("malformed", "the request carries too many tokens")
            for item in found[:MAX_TOKENS]:
                by_token.setdefault(item.token, []).append((provider, item))
        failure: Failure | None = None
        for pairs in by_token.values():
            ok = False
            token_failure: Failure | None = None
            for provider, item in pairs:
                result = await ctx.verify(provider, item, None)
                if isinstance(result, Verified):
                    ctx.accept(provider, item, result)
                    ok = True
                elif token_failure is None or token_failure.reason == "unknown_issuer":
                    token_failure = result  # an issuer mismatch is the least telling
            if not ok and failure is None:
                failure = token_failure
        return None if self.or_failed else failure


def compile_requirement(spec: JwtRequirementSpec, providers: Mapping[str, Provider]) -> Node:
    if spec.provider_name is not None:
        return ProviderNode(providers[spec.provider_name], None)
    if spec.provider_and_audiences is not None:
        pa = spec.provider_and_audiences
        return ProviderNode(providers[pa.provider_name], frozenset(pa.audiences))
    if spec.requires_any is not None:
        return AnyNode([compile_requirement(c, providers) for c in spec.requires_any.requirements])
    if spec.requires_all is not None:
        return AllNode([compile_requirement(c, providers) for c in spec.requires_all.requirements])
    return AllowMissingNode(list(providers.values()), spec.allow_missing_or_failed is not None)
