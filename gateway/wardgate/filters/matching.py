"""Rule matching shared by the filters that select a rule per request (``jwt.rules``,
``peer.rules``): Envoy's ``RouteMatch`` and ``StringMatcher``, compiled once per policy.

Paths are matched in a normalised form (dot segments resolved, repeated slashes merged, no
query), because the upstream will interpret ``/public/../admin`` as ``/admin``. When
percent-decoding would make the request fall under a different rule than without
(``/public%2F..%2Fadmin``), the path is ambiguous and the request is refused: a decoding
upstream and a non-decoding one would disagree on which rule applies. Regexes are RE2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import unquote

import re2

from wardgate.config.jwt import HeaderMatcherSpec, RouteMatchSpec, StringMatcherSpec
from wardgate.filters.api import FilterCompileError, HttpRequest

StringPredicate = Callable[[str], bool]
RequestPredicate = Callable[[HttpRequest, str], bool]
RuleT = TypeVar("RuleT")


def _re2(pattern: str, where: str) -> re2._Regexp:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise FilterCompileError([f"{where}: invalid RE2 pattern: {exc}"]) from None


def string_matcher(spec: StringMatcherSpec, where: str) -> StringPredicate:
    """A predicate for an Envoy ``StringMatcher``."""
    if spec.safe_regex is not None:
        pattern = _re2(spec.safe_regex.regex, f"{where}.safeRegex.regex")
        return lambda value: pattern.fullmatch(value) is not None
    fold = spec.ignore_case

    def norm(text: str) -> str:
        return text.lower() if fold else text

    if spec.exact is not None:
        exact = norm(spec.exact)
        return lambda value: norm(value) == exact
    if spec.prefix is not None:
        prefix = norm(spec.prefix)
        return lambda value: norm(value).startswith(prefix)
    if spec.suffix is not None:
        suffix = norm(spec.suffix)
        return lambda value: norm(value).endswith(suffix)
    assert spec.contains is not None
    part = norm(spec.contains)
    return lambda value: part in norm(value)


def normalise_path(path: str, decode: bool) -> str:
    """Resolve dot segments (RFC 3986 5.2.4) and merge slashes; with ``decode``,
    percent-decode first (``%2F`` becomes a separator, as a decoding upstream sees it)."""
    if (
        path.startswith("/")
        and "//" not in path
        and "/." not in path
        and "%" not in path
        and "\\" not in path
    ):
        return path  # the common case: nothing to resolve, decoding changes nothing
    if decode:
        path = unquote(path, errors="replace")
    path = path.replace("\\", "/") if decode else path
    segments: list[str] = []
    parts = path.split("/")
    for part in parts[1:]:
        lowered = part.lower()
        if part in ("", ".") or lowered == "%2e":
            continue
        if part == ".." or lowered in ("%2e%2e", ".%2e", "%2e."):
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = path.endswith("/") and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


def _template(template: str, where: str) -> StringPredicate:
    """``/users/{id}/orders``: ``{x}`` one segment, ``{x=**}`` / ``**`` the rest, ``*`` one
    segment."""
    parts = template.strip("/").split("/") if template != "/" else []
    compiled: list[str | None] = []  # None: any one segment
    rest = False
    for index, part in enumerate(parts):
        if part in ("**",) or (part.startswith("{") and part.endswith("=**}")):
            if index != len(parts) - 1:
                raise FilterCompileError([f"{where}: '**' must be the last segment"])
            rest = True
        elif part == "*" or (part.startswith("{") and part.endswith("}")):
            compiled.append(None)
        elif "{" in part or "}" in part or "*" in part:
            raise FilterCompileError([f"{where}: a variable must be a whole segment"])
        else:
            compiled.append(part)

    def match(path: str) -> bool:
        segs = path.strip("/").split("/") if path.strip("/") else []
        if len(segs) < len(compiled) or (not rest and len(segs) != len(compiled)):
            return False
        return all(c is None or c == s for c, s in zip(compiled, segs, strict=False))

    return match


def _path_matcher(spec: RouteMatchSpec, where: str) -> StringPredicate:
    fold = not spec.case_sensitive

    def norm(text: str) -> str:
        return text.lower() if fold else text

    if spec.prefix is not None:
        prefix = norm(spec.prefix)
        return lambda path: norm(path).startswith(prefix)
    if spec.path is not None:
        exact = norm(spec.path)
        return lambda path: norm(path) == exact
    if spec.path_separated_prefix is not None:
        sep = norm(spec.path_separated_prefix.rstrip("/"))
        return lambda path: norm(path) == sep or norm(path).startswith(sep + "/")
    if spec.path_template is not None:
        inner = _template(norm(spec.path_template), f"{where}.pathTemplate")
        return lambda path: inner(norm(path))
    assert spec.safe_regex is not None
    pattern = _re2(spec.safe_regex.regex, f"{where}.safeRegex.regex")
    return lambda path: pattern.fullmatch(path) is not None


def _header_matcher(spec: HeaderMatcherSpec, where: str) -> RequestPredicate:
    name = spec.name.lower()
    if spec.present_match is not None:
        want = spec.present_match

        def check_value(value: str | None) -> bool:
            return (value is not None) == want

    else:
        matcher = (
            string_matcher(spec.string_match, f"{where}.stringMatch")
            if spec.string_match is not None
            else string_matcher(StringMatcherSpec.model_validate({"exact": spec.exact_match}), "")
        )

        def check_value(value: str | None) -> bool:
            return value is not None and matcher(value)

    invert = spec.invert_match

    def match(request: HttpRequest, _path: str) -> bool:
        if name == ":method":
            value: str | None = request.method
        elif name == ":authority":
            value = request.headers.get("host")
        elif name == ":path":
            value = request.raw_target
        elif name == ":scheme":
            value = request.scheme
        else:
            values = request.headers.getall(name, ())
            value = ",".join(values) if values else None
        return check_value(value) != invert

    return match


def first_rule(
    rules: Sequence[RuleT], matcher: Callable[[RuleT], RequestPredicate], request: HttpRequest
) -> RuleT | str | None:
    """The first of ``rules`` whose predicate covers ``request``; ``None`` when none does;
    ``"ambiguous"`` when percent-decoding the path would select a different rule."""
    plain = normalise_path(request.path, decode=False)
    decoded = normalise_path(request.path, decode=True)
    first = _first(rules, matcher, request, plain)
    if decoded != plain and _first(rules, matcher, request, decoded) is not first:
        return "ambiguous"
    return first


def _first(
    rules: Sequence[RuleT],
    matcher: Callable[[RuleT], RequestPredicate],
    request: HttpRequest,
    path: str,
) -> RuleT | None:
    for rule in rules:
        if matcher(rule)(request, path):
            return rule
    return None


def route_matcher(spec: RouteMatchSpec, where: str) -> RequestPredicate:
    """A predicate ``(request, normalised_path) -> bool`` for one rule's ``match``."""
    path_ok = _path_matcher(spec, where)
    methods = frozenset(spec.methods)
    headers = [_header_matcher(h, f"{where}.headers[{i}]") for i, h in enumerate(spec.headers)]

    def match(request: HttpRequest, path: str) -> bool:
        if methods and request.method not in methods:
            return False
        if not path_ok(path):
            return False
        return all(h(request, path) for h in headers)

    return match
