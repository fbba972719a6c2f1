"""``waf``: the web application firewall section (deny rules against attacks)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from wardgate.config.base import SpecModel
from wardgate.config.lattice import APP, DELEGATED, HIGHER, LOWER, NESTED, REQUIRED, ranked


def bare_rule_id(value: str) -> str:
    """``waf.942100`` -> ``942100`` (a refusal's ``ruleId`` names the filter, rules do not);
    anything else unchanged."""
    return value.removeprefix("waf.")


def _bare_rule_id(value: object) -> object:
    return bare_rule_id(value) if isinstance(value, str) else value


class WafMode(StrEnum):
    """What a rule match does: ``enforce`` refuses the request (403) once the anomaly
    score reaches the threshold, ``detect`` only logs and counts it, ``off`` skips it."""

    ENFORCE = "enforce"
    DETECT = "detect"
    OFF = "off"


class WafFamily(StrEnum):
    """Rule families, each with its own user-facing key."""

    SQLI = "sqli"
    XSS = "xss"
    RCE = "rce"
    LFI = "lfi"
    RFI = "rfi"
    SSRF = "ssrf"
    PHP = "php"
    JAVA = "java"
    NODEJS = "nodejs"
    SSTI = "ssti"
    NOSQLI = "nosqli"
    LDAP = "ldap"
    XXE = "xxe"
    CRLF = "crlf"
    PROTOCOL = "protocol"
    SCANNER = "scanner"


class WafLevel(StrEnum):
    """Named levels for those who do not want to think in scores (as in Airlock)."""

    BASIC = "basic"
    """Paranoia level 1, threshold 10: only requests with strong, repeated evidence."""
    STANDARD = "standard"
    """Paranoia level 1, threshold 5 (the default behaviour)."""
    STRICT = "strict"
    """Paranoia level 2, threshold 5: more rules, more false positives to tune."""


LEVELS: dict[WafLevel, tuple[int, int]] = {
    WafLevel.BASIC: (1, 10),
    WafLevel.STANDARD: (1, 5),
    WafLevel.STRICT: (2, 5),
}
"""Level -> (paranoia level, anomaly threshold)."""


class OversizeAction(StrEnum):
    """What to do with a body longer than ``requestBodyLimit``."""

    REJECT = "reject"
    """Refuse it (413): nothing reaches the upstream uninspected."""
    ALLOW_UNINSPECTED = "allowUninspected"
    """Inspect the first ``requestBodyLimit`` bytes, let the rest through unread, log it."""


def _yaml_off(value: object) -> object:
    """YAML 1.1 reads a bare ``off`` as ``false``: take it as the mode ``off`` it was."""
    return "off" if value is False else value


Mode = Annotated[WafMode, BeforeValidator(_yaml_off)]

MODE_STRICTNESS = ranked(WafMode.OFF, WafMode.DETECT, WafMode.ENFORCE)
"""The merge direction of a WAF mode: ``off`` < ``detect`` < ``enforce``."""

ParanoiaLevel = Annotated[int, Field(ge=1, le=4)]

# Location selectors: `path`, `method`, `body`, or `<part>:<name>` where part is one of
# query / body / header / cookie / file. A trailing `*` makes the name a prefix.
_LOCATION = r"^(path|method|body|(query|body|header|cookie|file):[^\s]{1,512})$"


class WafFamilySpec(SpecModel):
    """Overrides for one family; an omitted field inherits the section's value."""

    mode: Annotated[Mode | None, MODE_STRICTNESS] = None
    """Mode for this family only."""

    paranoia_level: Annotated[ParanoiaLevel | None, HIGHER] = None
    """Paranoia level for this family only."""


class WafExceptionSpec(SpecModel):
    """A false-positive exception: the listed rules or families stop counting at the listed
    places. Narrow by construction: it names rules or families, and at least one location
    or path prefix (turning a family off everywhere is ``families.<key>.mode: off``)."""

    rule_ids: tuple[
        Annotated[str, Field(pattern=r"^(waf\.)?[0-9]{6}$"), BeforeValidator(_bare_rule_id)], ...
    ] = ()
    """Rule ids the exception covers: ``942100``, or ``waf.942100`` as a refusal's ``ruleId``
    says it (pasted as is; stored without the prefix)."""

    families: tuple[WafFamily, ...] = ()
    """Whole families the exception covers."""

    locations: tuple[Annotated[str, Field(pattern=_LOCATION)], ...] = ()
    """Where in the request it applies, in violation-location syntax: ``query:q``,
    ``body:$.comment``, ``header:x-notes``, ``cookie:prefs``, ``path``. A trailing ``*``
    matches a prefix (``body:$.items[*``). Header names are case-insensitive. Empty: any
    location (then ``paths`` must narrow it)."""

    paths: tuple[Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2048)], ...] = ()
    """Path prefixes where it applies (``/search``); empty: every path."""

    methods: tuple[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_-]{0,31}$")], ...] = ()
    """Methods where it applies; empty: every method."""

    reason: Annotated[str, Field(min_length=1, max_length=512)]
    """Why this exception is safe (shown in ``wardgate validate`` and the config dump)."""

    owner: Annotated[str, Field(max_length=256)] = ""
    """Who is responsible for the exception."""

    expires_at: dt.datetime | None = None
    """After this instant (RFC 3339) the exception stops applying and is reported."""

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expiresAt needs a time zone, for example 2026-12-31T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _narrow(self) -> WafExceptionSpec:
        if not self.rule_ids and not self.families:
            raise ValueError("an exception names ruleIds or families")
        if not self.locations and not self.paths:
            raise ValueError(
                "an exception names locations or paths; to turn a family off everywhere "
                "use families.<key>.mode: off"
            )
        return self


class SecurityHeadersSpec(SpecModel):
    """Security headers the gateway sets on every response (upstream and its own)."""

    content_type_options: Annotated[bool, REQUIRED] = True
    """Send ``X-Content-Type-Options: nosniff`` (browsers then never guess a script or
    stylesheet out of a mislabelled body)."""

    strict_transport_security: Annotated[
        Annotated[
            str,
            Field(
                pattern=r"^max-age=[0-9]{1,10}(; ?includeSubDomains)?(; ?preload)?$",
                max_length=128,
            ),
        ]
        | None,
        APP,
    ] = None
    """``Strict-Transport-Security`` value (``max-age=31536000; includeSubDomains``) to
    send; ``None`` (default): not sent, since only whoever owns the TLS setup of the whole
    host may promise HTTPS for it."""

    remove_server_headers: Annotated[bool, REQUIRED] = True
    """Remove the upstream's ``Server``, ``X-Powered-By``, ``X-AspNet-Version`` and
    ``X-AspNetMvc-Version`` (they name the stack and its version; the gateway's own
    ``server: wardgate`` stays)."""


class WafResponseSpec(SpecModel):
    """The response side of the WAF: error masking (information leakage: SQL error
    messages, stack traces, directory listings answered with a generic 502) and security
    headers."""

    mode: Annotated[Mode, MODE_STRICTNESS] = WafMode.ENFORCE
    """``enforce`` replaces a leaking response with a generic 502, ``detect`` logs and
    counts it and lets it through, ``off`` does not inspect response bodies (security
    headers still apply)."""

    max_inspect_bytes: Annotated[int, Field(ge=1, le=16777216), HIGHER] = 65536
    """Bytes of a text-like response body (``text/*`` except ``text/event-stream``, JSON,
    XML, HTML) buffered and inspected; the rest streams through unread. Other content types
    are never buffered."""

    security_headers: Annotated[SecurityHeadersSpec, NESTED] = Field(
        default_factory=SecurityHeadersSpec
    )
    """Headers set or removed on every response."""


class WafSpec(SpecModel):
    """The WAF: our own rule set (SQLi, XSS, command injection, traversal, Log4Shell, SSRF,
    ...) applied to every part of the request after decoding and normalisation, scored like
    the OWASP CRS (each match adds its severity's score; a request whose score from
    enforcing families reaches ``anomalyThreshold`` is refused with 403)."""

    mode: Annotated[Mode, MODE_STRICTNESS] = WafMode.ENFORCE
    """``enforce`` refuses attacks, ``detect`` logs and counts them, ``off`` removes the WAF
    from the chain."""

    paranoia_level: Annotated[ParanoiaLevel, HIGHER] = 1
    """1 (few false positives) to 4 (most rules, most false positives), as in the CRS."""

    # A baseline floors what a level sets (paranoiaLevel, anomalyThreshold), not the name.
    level: Annotated[WafLevel | None, APP] = None
    """A named level (``basic``, ``standard``, ``strict``) that sets ``paranoiaLevel`` and
    ``anomalyThreshold`` together; a field written explicitly still wins."""

    families: Annotated[dict[WafFamily, WafFamilySpec], NESTED] = Field(default_factory=dict)
    """Per-family overrides (``sqli: {mode: enforce, paranoiaLevel: 2}``)."""

    exceptions: Annotated[tuple[WafExceptionSpec, ...], DELEGATED] = ()
    """False-positive exceptions, each scoped to rules or families and places."""

    anomaly_threshold: Annotated[int, Field(ge=1, le=1000), LOWER] = 5
    """Score at which a request is refused (CRITICAL 5, ERROR 4, WARNING 3, NOTICE 2)."""

    request_body_limit: Annotated[int, Field(ge=0, le=67108864), HIGHER] = 1048576
    """Bytes of request body inspected."""

    oversize_action: Annotated[
        OversizeAction, ranked(OversizeAction.ALLOW_UNINSPECTED, OversizeAction.REJECT)
    ] = OversizeAction.REJECT
    """A body over ``requestBodyLimit``: ``reject`` (413) or ``allowUninspected``."""

    max_decompressed_bytes: Annotated[int, Field(ge=0, le=67108864), LOWER] = 1048576
    """Largest decompressed size of a ``Content-Encoding`` (gzip, deflate) body; over it the
    request is refused (413)."""

    max_decompression_ratio: Annotated[int, Field(ge=1, le=10000), LOWER] = 100
    """Largest ratio of decompressed to compressed size; over it: refused (a zip bomb)."""

    max_parameters: Annotated[int, Field(ge=1, le=100000), LOWER] = 1024
    """Number of parameters (query, form fields, JSON keys and array elements, multipart
    parts, XML elements). Over it: refused, reason ``too_many_parameters``."""

    max_name_length: Annotated[int, Field(ge=1, le=65536), LOWER] = 1024
    """Length of one parameter name or JSON key. Over it: ``name_too_long``."""

    max_value_length: Annotated[int, Field(ge=1, le=67108864), LOWER] = 1048576
    """Length of one parameter value. Over it: ``value_too_long``."""

    max_json_depth: Annotated[int, Field(ge=1, le=1000), LOWER] = 64
    """Nesting depth of a JSON or XML body. Over it: ``body_too_deep``."""

    response: Annotated[WafResponseSpec, NESTED] = Field(default_factory=WafResponseSpec)
    """The response side: leak masking and security headers (on by default; ``waf.mode:
    off`` turns it off too)."""

    def effective_paranoia_level(self) -> int:
        """``paranoiaLevel`` as written, else the level's, else the default."""
        if self.level is None or "paranoia_level" in self.model_fields_set:
            return self.paranoia_level
        return LEVELS[self.level][0]

    def effective_anomaly_threshold(self) -> int:
        """``anomalyThreshold`` as written, else the level's, else the default."""
        if self.level is None or "anomaly_threshold" in self.model_fields_set:
            return self.anomaly_threshold
        return LEVELS[self.level][1]
