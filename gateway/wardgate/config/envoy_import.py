"""``wardgate import-envoy``: an Envoy jwt_authn filter config (``JwtAuthentication``, as in
Envoy's docs: YAML with snake_case or proto-JSON with camelCase) into a Wardgate policy.

The input may be the ``JwtAuthentication`` message itself, an ``http_filters`` entry
(``name`` + ``typed_config``), or any larger document (a bootstrap, an Istio
``EnvoyFilter``) containing exactly one such ``typed_config``. Every field is either
converted or named in :attr:`ImportResult.unsupported` (never dropped silently);
differences in meaning are listed in :attr:`ImportResult.notes`. The result is validated
against the policy schema.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from wardgate.config.loading import PolicyError, format_validation_errors, parse_document
from wardgate.config.policy import PolicySpec

JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
FILTER_NAME = "envoy.filters.http.jwt_authn"


@dataclass
class ImportResult:
    """The converted policy document and what could not be carried over."""

    policy: dict[str, Any]
    unsupported: list[str] = field(default_factory=list)
    """``path: why`` for every Envoy field with no Wardgate equivalent."""
    notes: list[str] = field(default_factory=list)
    """Converted, but the meaning differs (Wardgate is stricter) or was made explicit."""


class _Ctx:
    def __init__(self) -> None:
        self.unsupported: list[str] = []
        self.notes: list[str] = []

    def drop(self, path: str, why: str) -> None:
        self.unsupported.append(f"{path}: {why}")


Handler = Callable[[Any, str, _Ctx], Any]


def _fields(obj: Any, path: str, ctx: _Ctx, known: Mapping[str, Handler | None]) -> dict[str, Any]:
    """Convert a message: keys to camelCase, each known field through its handler
    (``None``: copy as is); unknown fields reported unsupported."""
    if not isinstance(obj, Mapping):
        ctx.drop(path or "(document)", f"expected an object, not {type(obj).__name__}")
        return {}
    out: dict[str, Any] = {}
    for raw_key, value in obj.items():
        if raw_key == "@type":
            continue
        key = to_camel(str(raw_key))
        where = f"{path}.{raw_key}" if path else str(raw_key)
        if key not in known:
            ctx.drop(where, "no Wardgate equivalent")
            continue
        handler = known[key]
        converted = value if handler is None else handler(value, where, ctx)
        if converted is not None:
            out[key] = converted
    return out


def _duration(value: Any, path: str, ctx: _Ctx) -> str | None:
    """Envoy durations: ``"5s"`` / ``"0.5s"`` or ``{seconds, nanos}``."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("s") and not text.endswith(("ms", "us", "ns")):
            try:
                seconds = float(text[:-1])
            except ValueError:
                seconds = -1.0
            if seconds > 0:
                return _seconds_text(seconds)
        ctx.drop(path, f"cannot read duration {value!r}")
        return None
    if isinstance(value, Mapping):
        seconds = float(value.get("seconds", 0) or 0) + float(value.get("nanos", 0) or 0) / 1e9
        if seconds > 0:
            return _seconds_text(seconds)
    ctx.drop(path, f"cannot read duration {value!r}")
    return None


def _seconds_text(seconds: float) -> str:
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000, 3):g}ms"


def _list(handler: Handler) -> Handler:
    def convert(value: Any, path: str, ctx: _Ctx) -> list[Any] | None:
        if not isinstance(value, list):
            ctx.drop(path, "expected a list")
            return None
        return [handler(item, f"{path}[{i}]", ctx) for i, item in enumerate(value)]

    return convert


def _regex(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    return _fields(value, path, ctx, {"regex": None, "googleRe2": _ignored("RE2 is always used")})


def _ignored(why: str) -> Handler:
    def convert(value: Any, path: str, ctx: _Ctx) -> None:
        ctx.notes.append(f"{path}: ignored ({why})")

    return convert


def _string_matcher(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    return _fields(
        value,
        path,
        ctx,
        {
            "exact": None,
            "prefix": None,
            "suffix": None,
            "contains": None,
            "safeRegex": _regex,
            "ignoreCase": None,
        },
    )


def _header_matcher(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    out = _fields(
        value,
        path,
        ctx,
        {
            "name": None,
            "stringMatch": _string_matcher,
            "exactMatch": None,
            "presentMatch": None,
            "invertMatch": None,
            "prefixMatch": None,
            "suffixMatch": None,
            "containsMatch": None,
            "safeRegexMatch": _regex,
        },
    )
    for old, new in (
        ("prefixMatch", "prefix"),
        ("suffixMatch", "suffix"),
        ("containsMatch", "contains"),
        ("safeRegexMatch", "safeRegex"),
    ):
        if old in out:
            out["stringMatch"] = {new: out.pop(old)}
    return out


def _path_match_policy(value: Any, path: str, ctx: _Ctx) -> str | None:
    typed = None
    if isinstance(value, Mapping):
        typed = value.get("typed_config") or value.get("typedConfig")
    template = None
    if isinstance(typed, Mapping):
        template = typed.get("path_template") or typed.get("pathTemplate")
    if not isinstance(template, str):
        ctx.drop(path, "only the uri_template matcher's path_template is supported")
        return None
    return template


def _route_match(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    out = _fields(
        value,
        path,
        ctx,
        {
            "prefix": None,
            "path": None,
            "safeRegex": _regex,
            "pathSeparatedPrefix": None,
            "pathMatchPolicy": _path_match_policy,
            "caseSensitive": _bool_value,
            "headers": _list(_header_matcher),
        },
    )
    if "pathMatchPolicy" in out:
        out["pathTemplate"] = out.pop("pathMatchPolicy")
    return out


def _bool_value(value: Any, path: str, ctx: _Ctx) -> bool | None:
    if isinstance(value, Mapping):  # google.protobuf.BoolValue in proto-JSON-as-YAML
        value = value.get("value")
    if isinstance(value, bool):
        return value
    ctx.drop(path, "expected a boolean")
    return None


def _empty(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    return _fields(value or {}, path, ctx, {})


class _Requirements:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named

    def convert(self, value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
        return _fields(
            value,
            path,
            ctx,
            {
                "providerName": None,
                "providerAndAudiences": lambda v, p, c: _fields(
                    v, p, c, {"providerName": None, "audiences": None}
                ),
                "requiresAny": self._group,
                "requiresAll": self._group,
                "allowMissing": _empty,
                "allowMissingOrFailed": _empty,
            },
        )

    def _group(self, value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
        return _fields(value, path, ctx, {"requirements": _list(self.convert)})


def _data_source(value: Any, path: str, ctx: _Ctx) -> dict[str, Any] | None:
    out = _fields(
        value,
        path,
        ctx,
        {"filename": None, "inlineString": None, "inlineBytes": None},
    )
    if "inlineBytes" in out:
        try:
            out["inlineString"] = base64.b64decode(out.pop("inlineBytes"), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError, TypeError):
            ctx.drop(f"{path}.inline_bytes", "not base64 of UTF-8 text")
            return None
    return out


def _retry_policy(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    out = _fields(
        value,
        path,
        ctx,
        {
            "numRetries": lambda v, p, c: v.get("value") if isinstance(v, Mapping) else v,
            "retryBackOff": lambda v, p, c: _fields(
                v, p, c, {"baseInterval": _duration, "maxInterval": _duration}
            ),
        },
    )
    return out


def _remote_jwks(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    return _fields(
        value,
        path,
        ctx,
        {
            "httpUri": lambda v, p, c: _fields(
                v, p, c, {"uri": None, "cluster": None, "timeout": _duration}
            ),
            "cacheDuration": _duration,
            "asyncFetch": lambda v, p, c: _fields(
                v or {}, p, c, {"fastListener": None, "failedRefetchDuration": _duration}
            ),
            "retryPolicy": _retry_policy,
        },
    )


def _provider(value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    out = _fields(
        value,
        path,
        ctx,
        {
            "issuer": None,
            "audiences": None,
            "subjects": _string_matcher,
            "requireExpiration": None,
            "maxLifetime": _duration,
            "remoteJwks": _remote_jwks,
            "localJwks": _data_source,
            "forward": None,
            "fromHeaders": _list(
                lambda v, p, c: _fields(v, p, c, {"name": None, "valuePrefix": None})
            ),
            "fromParams": None,
            "fromCookies": None,
            "forwardPayloadHeader": None,
            "padForwardPayloadHeader": None,
            "payloadInMetadata": _ignored(
                "verified claims are always in metadata jwt_authn.<provider name>"
            ),
            "clockSkewSeconds": None,
            "jwtCacheConfig": lambda v, p, c: _fields(
                v, p, c, {"jwtCacheSize": None, "jwtMaxTokenSize": None}
            ),
            "claimToHeaders": _list(
                lambda v, p, c: _fields(v, p, c, {"headerName": None, "claimName": None})
            ),
        },
    )
    if "requireExpiration" not in out:
        ctx.notes.append(
            f"{path}: Envoy does not require exp by default; Wardgate does "
            "(set requireExpiration: false to accept tokens without exp)"
        )
    return out


def _providers(value: Any, path: str, ctx: _Ctx) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        ctx.drop(path, "expected a map of provider name to provider")
        return None
    return {str(name): _provider(spec, f"{path}.{name}", ctx) for name, spec in value.items()}


def _find_jwt_config(doc: Any) -> list[Mapping[str, Any]]:
    """Every JwtAuthentication message inside ``doc``."""
    found: list[Mapping[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if node.get("@type") == JWT_TYPE:
                found.append(node)
                return
            if node.get("name") == FILTER_NAME:
                typed = node.get("typed_config", node.get("typedConfig"))
                if isinstance(typed, Mapping):
                    found.append(typed)
                    return
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    if isinstance(doc, Mapping) and "providers" in doc:
        return [doc]
    walk(doc)
    return found


def convert_envoy_jwt(doc: Any) -> ImportResult:
    """Convert an Envoy document (parsed YAML/JSON) into a Wardgate policy. Raises
    :class:`ValueError` when no jwt_authn config is found."""
    configs = _find_jwt_config(doc)
    if not configs:
        raise ValueError("no Envoy jwt_authn configuration found (JwtAuthentication)")
    if len(configs) > 1:
        raise ValueError(f"{len(configs)} jwt_authn configurations found; give one at a time")
    config = configs[0]
    ctx = _Ctx()
    named = config.get("requirement_map", config.get("requirementMap")) or {}
    reqs = _Requirements(named if isinstance(named, Mapping) else {})

    def rule(value: Any, path: str, c: _Ctx) -> dict[str, Any]:
        out = _fields(
            value,
            path,
            c,
            {"match": _route_match, "requires": reqs.convert, "requirementName": None},
        )
        name = out.pop("requirementName", None)
        if name is not None:
            if name in reqs.named:
                out["requires"] = reqs.convert(reqs.named[name], f"requirement_map.{name}", c)
            else:
                c.drop(f"{path}.requirement_name", f"no requirement_map entry {name!r}")
        if "requires" not in out:
            out["skip"] = True
            c.notes.append(f"{path}: no requirement in Envoy means no JWT; written as skip: true")
        return out

    jwt = _fields(
        config,
        "",
        ctx,
        {
            "providers": _providers,
            "rules": _list(rule),
            "bypassCorsPreflight": None,
            "requirementMap": lambda v, p, c: None,  # inlined into the rules that name them
            "statPrefix": _ignored("metrics are wardgate_jwt_*"),
        },
    )
    _max_token_size(jwt, ctx)
    rules = jwt.setdefault("rules", [])
    if named:
        ctx.notes.append(
            "requirement_map: inlined into the rules naming them; per-route "
            "(PerRouteConfig) use has no Wardgate equivalent"
        )
    if not rules or rules[-1].get("match") != {"prefix": "/"}:
        rules.append({"match": {"prefix": "/"}, "skip": True})
        ctx.notes.append(
            f"rules[{len(rules) - 1}]: added `skip: true` for requests no rule matches, as "
            "Envoy lets them through; remove it to refuse them (Wardgate's default)"
        )
    policy = {"jwt": jwt}
    try:
        PolicySpec.model_validate(policy)
    except ValidationError as exc:
        ctx.unsupported.extend(f"(result) {line}" for line in format_validation_errors(exc))
    return ImportResult(policy, ctx.unsupported, ctx.notes)


def _max_token_size(jwt: dict[str, Any], ctx: _Ctx) -> None:
    sizes = []
    for name, provider in (jwt.get("providers") or {}).items():
        cache = provider.get("jwtCacheConfig")
        if isinstance(cache, dict) and "jwtMaxTokenSize" in cache:
            sizes.append(cache.pop("jwtMaxTokenSize"))
            ctx.notes.append(
                f"providers.{name}.jwt_cache_config.jwt_max_token_size: Wardgate has one "
                "limit for all providers (jwt.maxTokenBytes): the smallest is used"
            )
    if sizes:
        jwt["maxTokenBytes"] = max(256, min(int(s) for s in sizes))


def import_envoy_text(text: str, source: str) -> ImportResult:
    """Parse and convert; :class:`PolicyError` for unreadable input."""
    doc = parse_document(text, source)
    try:
        return convert_envoy_jwt(doc)
    except ValueError as exc:
        raise PolicyError(source, [str(exc)]) from None
