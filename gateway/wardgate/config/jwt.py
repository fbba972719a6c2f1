"""``jwt``: JWT authentication, field by field after Envoy's jwt_authn filter
(``envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication``), in camelCase.

Differences from Envoy, all towards failing closed (see RATIONALE.md, "JWT"):

* "no JWT needed" is always written down: a rule has either ``requires`` or ``skip: true``,
  and a request that matches no rule is refused;
* ``requireExpiration`` defaults to ``true``;
* HMAC algorithms are accepted only for ``oct`` keys in a ``localJwks`` (never from a remote
  JWKS);
* ``remoteJwks.maxStaleness`` and ``remoteJwks.minRefreshInterval`` are Wardgate additions
  (how long fetched keys outlive an unreachable provider, how often an unknown ``kid`` may
  trigger a refetch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from wardgate.config.base import POLICY_DIR_CONTEXT, SECRET, Duration, HeaderName, SpecModel

_METHOD = r"^[A-Z][A-Z0-9_-]{0,31}$"
_NAME = r"^[A-Za-z0-9_.:-]{1,128}$"
_NO_CONTROL = r"^[^\r\n\x00]*$"


def exactly_one(model: SpecModel, fields: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError`` unless exactly one of ``fields`` is set (names the aliases)."""
    present = [f for f in fields if getattr(model, f) is not None]
    if len(present) != 1:
        camel = ", ".join(type(model).model_fields[f].alias or f for f in fields)
        raise ValueError(f"{what} needs exactly one of: {camel}")


class RegexMatcherSpec(SpecModel):
    """Envoy's ``RegexMatcher``: an RE2 regular expression (linear time, no backreferences)."""

    regex: Annotated[str, Field(min_length=1, max_length=4096)]
    """The RE2 pattern; it must match the whole value."""


class StringMatcherSpec(SpecModel):
    """Envoy's ``StringMatcher``: exactly one of the match kinds."""

    exact: str | None = None
    """The whole value."""
    prefix: Annotated[str, Field(min_length=1)] | None = None
    """The start of the value."""
    suffix: Annotated[str, Field(min_length=1)] | None = None
    """The end of the value."""
    contains: Annotated[str, Field(min_length=1)] | None = None
    """A substring of the value."""
    safe_regex: RegexMatcherSpec | None = None
    """An RE2 pattern matching the whole value."""
    ignore_case: bool = False
    """Compare case-insensitively (not for ``safeRegex``: write ``(?i)`` in the pattern)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        exactly_one(self, ("exact", "prefix", "suffix", "contains", "safe_regex"), "a matcher")
        return self


class HttpUriSpec(SpecModel):
    """Where the JWKS is fetched from (Envoy's ``HttpUri``)."""

    uri: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)]
    """The JWKS URL (``https://`` in production; ``http://`` is accepted for local tests)."""

    cluster: str | None = None
    """Accepted for Envoy compatibility and ignored: Wardgate connects to ``uri`` itself."""

    timeout: Duration = 1.0
    """Timeout of one fetch attempt."""


class RetryBackOffSpec(SpecModel):
    """Exponential back-off between retries (Envoy's ``BackoffStrategy``)."""

    base_interval: Duration = 0.2
    """Wait before the first retry; doubled for each further one."""
    max_interval: Duration | None = None
    """Longest wait between retries (default: 10 x ``baseInterval``)."""


class RetryPolicySpec(SpecModel):
    """Retries of a failed JWKS fetch (Envoy's ``RetryPolicy``, the fields used here)."""

    num_retries: Annotated[int, Field(ge=0, le=10)] = 1
    """Retries after the first failed attempt."""
    retry_back_off: RetryBackOffSpec = RetryBackOffSpec()


class AsyncFetchSpec(SpecModel):
    """Envoy's ``JwksAsyncFetch``: fetch in the background instead of on the request path.
    Wardgate always refreshes in the background before ``cacheDuration`` runs out, once the
    keys were fetched a first time."""

    fast_listener: bool = False
    """Accepted for Envoy compatibility (Wardgate never delays its listener for a fetch)."""

    failed_refetch_duration: Duration = 1.0
    """After a failed fetch, wait this long before trying again."""


class TrustedCaSpec(SpecModel):
    """Envoy's ``CertificateValidationContext.trusted_ca`` (a ``DataSource``): the CA
    bundle (PEM) a remote JWKS server's certificate must chain to, instead of the system
    trust store. A file is read on every fetch, so a rotated bundle is picked up."""

    filename: Annotated[str, Field(min_length=1)] | None = None
    """Path of a PEM bundle (a mounted ConfigMap or Secret); relative to the policy file."""
    inline_string: Annotated[str, Field(min_length=1, max_length=1048576)] | None = None
    """The PEM bundle itself (public certificates: not redacted)."""

    @field_validator("filename")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        exactly_one(self, ("filename", "inline_string"), "trustedCa")
        return self


def _resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    """A relative path resolved against the policy file's directory."""
    if value is None or Path(value).is_absolute():
        return value
    base = (info.context or {}).get(POLICY_DIR_CONTEXT)
    return str((Path(base) if base is not None else Path.cwd()) / value)


class RemoteJwksSpec(SpecModel):
    """A JWKS fetched over HTTP(S) and cached (Envoy's ``RemoteJwks``)."""

    http_uri: HttpUriSpec
    cache_duration: Duration = 600.0
    """How long fetched keys are fresh. A refresh starts in the background before then."""

    async_fetch: AsyncFetchSpec | None = None
    """Envoy's background-fetch settings (``failedRefetchDuration`` is used)."""
    retry_policy: RetryPolicySpec | None = None
    """Retries of a failed fetch (none by default)."""

    max_staleness: Duration = 3600.0
    """Wardgate: how long keys keep working after ``cacheDuration`` while the provider is
    unreachable. After that (or when no key was ever fetched) requests get 503."""

    min_refresh_interval: Duration = 5.0
    """Wardgate: a token whose ``kid`` is not in the cached set triggers at most one refetch
    per this interval (shared by concurrent requests); then it is refused."""

    trusted_ca: TrustedCaSpec | None = None
    """Verify the ``https`` JWKS server against this CA bundle only (Envoy sets it on the
    cluster's ``UpstreamTlsContext``; Wardgate has no clusters). Unset: the system trust
    store. Either way ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the environment
    apply."""


class LocalJwksSpec(SpecModel):
    """A JWKS given with the policy (Envoy's ``DataSource``): inline text, or a file such as
    a mounted Kubernetes Secret (``/var/run/secrets/...``)."""

    inline_string: Annotated[
        Annotated[str, Field(min_length=2, max_length=1048576)] | None, SECRET
    ] = None
    """The JWKS document (JSON). Redacted in ``/config_dump``: it may hold ``oct`` keys."""

    filename: Annotated[str, Field(min_length=1)] | None = None
    """Path of a JWKS JSON file, read when the policy is compiled (and again after a
    rotation, see docs/jwt.md). A relative path is relative to the policy file."""

    @field_validator("filename")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        exactly_one(self, ("inline_string", "filename"), "localJwks")
        return self


class JwtHeaderSpec(SpecModel):
    """A header carrying the token (Envoy's ``JwtHeader``)."""

    name: HeaderName
    value_prefix: Annotated[str, Field(max_length=64, pattern=_NO_CONTROL)] = ""
    """Text before the token, compared case-insensitively (``Bearer ``)."""


class ClaimToHeaderSpec(SpecModel):
    """Copy a claim into a request header for the upstream (Envoy's ``JwtClaimToHeader``).
    Any header of that name sent by the client is removed first."""

    header_name: HeaderName
    claim_name: Annotated[str, Field(min_length=1, max_length=256)]
    """The claim; nested claims with dots (``realm_access.roles``). Strings, numbers,
    booleans and lists of them (comma-joined) are copied; objects are not."""


class JwtCacheConfigSpec(SpecModel):
    """Verified-token cache (Envoy's ``JwtCacheConfig``)."""

    jwt_cache_size: Annotated[int, Field(ge=0, le=1_000_000)] = 1000
    """Entries kept per provider (0: no cache). Keyed by a hash of the token; an entry never
    outlives the token's ``exp`` nor the key set it was verified with."""


class JwtProviderSpec(SpecModel):
    """A trusted token issuer (Envoy's ``JwtProvider``)."""

    issuer: Annotated[str, Field(min_length=1)] | None = None
    """The ``iss`` a token must carry. Unset: any issuer whose keys verify the token."""

    audiences: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    """The token's ``aud`` must contain one of these. Empty: ``aud`` is not checked."""

    subjects: StringMatcherSpec | None = None
    """The token's ``sub`` must match."""

    remote_jwks: RemoteJwksSpec | None = None
    """Keys fetched over HTTP(S) (exactly one of ``remoteJwks`` and ``localJwks``)."""
    local_jwks: LocalJwksSpec | None = None
    """Keys given inline or in a file."""

    from_headers: tuple[JwtHeaderSpec, ...] = ()
    """Headers carrying the token."""
    from_params: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.~-]{1,128}$")], ...] = ()
    """Query parameters carrying the token."""
    from_cookies: tuple[
        Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")], ...
    ] = ()
    """Where the token is looked for. All three empty: ``Authorization: Bearer <token>``,
    then the ``access_token`` query parameter (Envoy's default)."""

    forward: bool = False
    """Keep the token in the request sent upstream. ``false``: the header (or the cookie)
    carrying it is removed. Tokens in query parameters are always forwarded (the request
    target is never rewritten), see ``wardgate validate`` notes."""

    forward_payload_header: HeaderName | None = None
    """Send the verified payload (base64url JSON) upstream in this header."""

    pad_forward_payload_header: bool = False
    """Add base64 padding to ``forwardPayloadHeader``."""

    claim_to_headers: tuple[ClaimToHeaderSpec, ...] = ()
    """Claims copied into request headers for the upstream."""

    clock_skew_seconds: Annotated[int, Field(ge=0, le=600)] = 60
    """Tolerance on ``exp``, ``nbf`` and ``iat``."""

    require_expiration: bool = True
    """Refuse tokens without ``exp`` (Envoy's default is ``false``; Wardgate's is ``true``)."""

    max_lifetime: Duration | None = None
    """Refuse tokens whose ``exp - iat`` is longer (both claims then required)."""

    jwt_cache_config: JwtCacheConfigSpec = JwtCacheConfigSpec()
    """The verified-token cache."""

    @model_validator(mode="after")
    def _one_jwks(self) -> Self:
        exactly_one(self, ("remote_jwks", "local_jwks"), "a provider")
        return self


class ProviderAndAudiencesSpec(SpecModel):
    """A provider with audiences that replace the provider's own."""

    provider_name: Annotated[str, Field(pattern=_NAME)]
    """A name under ``jwt.providers``."""
    audiences: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
    """The token's ``aud`` must contain one of these."""


class EmptySpec(SpecModel):
    """An empty object (Envoy's ``google.protobuf.Empty``)."""


class RequirementListSpec(SpecModel):
    """The children of ``requiresAny`` / ``requiresAll``."""

    requirements: Annotated[tuple[JwtRequirementSpec, ...], Field(min_length=1)]
    """The child requirements."""


class JwtRequirementSpec(SpecModel):
    """Envoy's ``JwtRequirement``: exactly one kind.

    * ``providerName``: a token from that provider, valid;
    * ``providerAndAudiences``: the same with other audiences;
    * ``requiresAny`` / ``requiresAll``: one / all of the children;
    * ``allowMissing: {}``: no token is fine, a token that is present must be valid;
    * ``allowMissingOrFailed: {}``: anything passes (valid tokens still give claims).
    """

    provider_name: Annotated[str, Field(pattern=_NAME)] | None = None
    """A valid token from this provider."""
    provider_and_audiences: ProviderAndAudiencesSpec | None = None
    """A valid token from a provider, with other audiences."""
    requires_any: RequirementListSpec | None = None
    """One of the requirements."""
    requires_all: RequirementListSpec | None = None
    """All of the requirements."""
    allow_missing: EmptySpec | None = None
    """``{}``: no token passes; a present token must be valid."""
    allow_missing_or_failed: EmptySpec | None = None
    """``{}``: always passes (valid tokens still give claims)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        exactly_one(
            self,
            (
                "provider_name",
                "provider_and_audiences",
                "requires_any",
                "requires_all",
                "allow_missing",
                "allow_missing_or_failed",
            ),
            "a requirement",
        )
        return self


class HeaderMatcherSpec(SpecModel):
    """Envoy's route ``HeaderMatcher`` (the common kinds). ``:method`` and ``:authority``
    name the method and the host."""

    name: Annotated[str, Field(pattern=r"^:?[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")]
    """The header (repeated headers are joined with commas)."""
    string_match: StringMatcherSpec | None = None
    """The header's value must match."""
    present_match: bool | None = None
    """``true``: the header must be present; ``false``: absent."""
    exact_match: str | None = None
    """Deprecated in Envoy; the same as ``stringMatch: {exact: ...}``."""

    invert_match: bool = False
    """Negate the result."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        exactly_one(self, ("string_match", "present_match", "exact_match"), "a header matcher")
        return self


class RouteMatchSpec(SpecModel):
    """Which requests a rule covers (Envoy's ``RouteMatch`` plus ``methods``). Paths are
    matched after dot segments and repeated slashes are resolved, without the query."""

    prefix: Annotated[str, Field(pattern=r"^/")] | None = None
    """The path starts with this."""
    path: Annotated[str, Field(pattern=r"^/")] | None = None
    """The path is exactly this."""
    path_separated_prefix: Annotated[str, Field(pattern=r"^/")] | None = None
    """The path is this or continues with ``/`` after it."""
    path_template: Annotated[str, Field(pattern=r"^/")] | None = None
    """``/users/{id}/orders`` (``{x}`` one segment, ``{x=**}`` or ``**`` the rest)."""

    safe_regex: RegexMatcherSpec | None = None
    """An RE2 pattern matching the whole path."""

    case_sensitive: bool = True
    """``false``: compare ``prefix``, ``path``... case-insensitively."""
    methods: tuple[Annotated[str, Field(pattern=_METHOD)], ...] = ()
    """Request methods covered (empty: all)."""

    headers: tuple[HeaderMatcherSpec, ...] = ()
    """Every header matcher must match."""

    @model_validator(mode="after")
    def _one_path(self) -> Self:
        exactly_one(
            self,
            ("prefix", "path", "path_separated_prefix", "path_template", "safe_regex"),
            "a match",
        )
        return self


class RequiredClaimSpec(SpecModel):
    """A claim that must be present, optionally with one of the given values."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """The claim; nested with dots."""

    values: tuple[str, ...] = ()
    """Accepted values (a list claim passes when it contains one). Empty: present."""


class ClaimChecksSpec(SpecModel):
    """Claims a verified token must carry for this rule; otherwise 403."""

    scopes: tuple[Annotated[str, Field(pattern=r"^[!#-\[\]-~]+$")], ...] = ()
    """Every scope must be in ``scope`` (space-separated) or ``scp`` (list or string)."""

    roles: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    """At least one of these roles must be in the ``rolesClaim`` claim."""

    roles_claim: Annotated[str, Field(min_length=1)] = "roles"
    """The claim holding roles (nested with dots: ``realm_access.roles``)."""
    required: tuple[RequiredClaimSpec, ...] = ()
    """Claims that must be present (optionally with given values)."""


class JwtRuleSpec(SpecModel):
    """A rule (Envoy's ``RequirementRule``): the first rule whose ``match`` covers the
    request decides. Exactly one of ``requires`` and ``skip: true``."""

    match: RouteMatchSpec
    """Which requests the rule covers."""
    requires: JwtRequirementSpec | None = None
    """What the request's tokens must satisfy."""
    skip: bool = False
    """``true``: no JWT is looked at (Envoy's rule without ``requires``, made explicit)."""

    claims: ClaimChecksSpec | None = None
    """Claims a verified token must carry (else 403)."""

    @model_validator(mode="after")
    def _requires_or_skip(self) -> Self:
        if (self.requires is None) == (not self.skip):
            raise ValueError("a rule needs exactly one of `requires` or `skip: true`")
        if self.skip and self.claims is not None:
            raise ValueError("`claims` cannot be checked on a rule with `skip: true`")
        return self


class JwtSpec(SpecModel):
    """JWT authentication (Envoy's ``JwtAuthentication``). Present with at least one
    provider: JWT is enforced on every request by the rules."""

    providers: Annotated[
        dict[Annotated[str, Field(pattern=_NAME)], JwtProviderSpec], Field(min_length=1)
    ]
    """Trusted issuers by name (at least one)."""
    rules: Annotated[tuple[JwtRuleSpec, ...], Field(min_length=1)]
    """In order; the first match decides. A request no rule matches is refused (403)."""

    bypass_cors_preflight: bool = False
    """Let CORS preflights (``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) through without a token."""

    max_token_bytes: Annotated[int, Field(ge=256, le=65536)] = 8192
    """Tokens longer than this are refused before any decoding."""

    @model_validator(mode="after")
    def _known_providers(self) -> Self:
        for index, rule in enumerate(self.rules):
            if rule.requires is not None:
                for name in _provider_names(rule.requires):
                    if name not in self.providers:
                        raise ValueError(f"rules[{index}] names an unknown provider {name!r}")
        return self


def _provider_names(req: JwtRequirementSpec) -> list[str]:
    names: list[str] = []
    if req.provider_name is not None:
        names.append(req.provider_name)
    if req.provider_and_audiences is not None:
        names.append(req.provider_and_audiences.provider_name)
    for group in (req.requires_any, req.requires_all):
        if group is not None:
            for child in group.requirements:
                names.extend(_provider_names(child))
    return names


RequirementListSpec.model_rebuild()
