"""Where tokens are found (headers, query parameters, cookies) and how they are removed
from the request sent upstream. Plain string operations only (no regular expressions on
request data)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from multidict import CIMultiDict

from wardgate.config.jwt import JwtProviderSpec

DEFAULT_HEADER = ("authorization", "Bearer ")
DEFAULT_PARAM = "access_token"


@dataclass(frozen=True, slots=True)
class Location:
    """One place a token may be: ``kind`` is ``header``, ``param`` or ``cookie``."""

    kind: str
    name: str
    prefix: str = ""

    @property
    def label(self) -> str:
        return f"{'query' if self.kind == 'param' else self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Extracted:
    """A token and where it came from."""

    token: str
    location: Location


def locations(spec: JwtProviderSpec) -> tuple[Location, ...]:
    """The provider's token locations, with Envoy's default when none is configured."""
    found = [Location("header", h.name, h.value_prefix) for h in spec.from_headers]
    found += [Location("param", p) for p in spec.from_params]
    found += [Location("cookie", c) for c in spec.from_cookies]
    if not found:
        found = [Location("header", *DEFAULT_HEADER), Location("param", DEFAULT_PARAM)]
    return tuple(found)


def query_params(query: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` into pairs, percent-decoded (``+`` stays: it is not in JWT alphabet)."""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def cookies(headers: CIMultiDict[str]) -> list[tuple[str, str]]:
    pairs = []
    for header in headers.getall("cookie", ()):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                pairs.append((name.strip(), value.strip().strip('"')))
    return pairs


def extract(
    locs: tuple[Location, ...],
    headers: CIMultiDict[str],
    params: list[tuple[str, str]] | None,
    jar: list[tuple[str, str]] | None,
) -> list[Extracted]:
    """Every token present at ``locs`` (in order, duplicates removed). A header that exists
    but lacks the prefix is not a token for this location (it may be another scheme)."""
    out: list[Extracted] = []
    seen: set[str] = set()
    for loc in locs:
        values: list[str] = []
        if loc.kind == "header":
            for raw in headers.getall(loc.name, ()):
                if loc.prefix:
                    if raw[: len(loc.prefix)].lower() != loc.prefix.lower():
                        continue
                    raw = raw[len(loc.prefix) :]  # noqa: PLW2901
                values.append(raw.strip())
        elif loc.kind == "param":
            values = [v for n, v in params or () if n == loc.name]
        else:
            values = [v for n, v in jar or () if n == loc.name]
        for value in values:
            if value not in seen:
                seen.add(value)
                out.append(Extracted(value, loc))
    return out


def in_jwt_alphabet(token: str) -> bool:
    """Whether ``token`` has only the characters of a JWT in compact form: ASCII letters
    and digits, ``-``, ``_`` (base64url) and ``.`` (one C pass deleting the separators,
    one checking the rest; ``bytes.isalnum`` is ASCII letters and digits only)."""
    try:
        data = token.encode("ascii")
    except UnicodeEncodeError:
        return False
    rest = data.translate(None, b".-_")
    return rest.isalnum() or not rest


def vouched_headers(headers: CIMultiDict[str], found: list[Extracted]) -> set[tuple[str, str]]:
    """The exact header values that carried the verified tokens ``found``, as (lower-case
    name, value): only a value that is the location's prefix followed by the token and
    nothing else, and only a token :func:`in_jwt_alphabet`. Later filters
    may treat these values as verified, not as free text (``HttpRequest.vouched``)."""
    out: set[tuple[str, str]] = set()
    for item in found:
        loc = item.location
        if loc.kind != "header" or not in_jwt_alphabet(item.token):
            continue
        cut = len(loc.prefix)
        for value in headers.getall(loc.name, ()):
            if value[cut:] == item.token and value[:cut].lower() == loc.prefix.lower():
                out.add((loc.name.lower(), value))
    return out


def remove(headers: CIMultiDict[str], found: list[Extracted]) -> None:
    """Remove the headers / cookies that carried ``found`` tokens from ``headers``.
    Query parameters cannot be removed (the request target is forwarded unchanged)."""
    for item in found:
        loc = item.location
        if loc.kind == "header":
            if not loc.prefix:
                headers.popall(loc.name, None)
                continue
            kept = [
                v
                for v in headers.getall(loc.name, ())
                if v[: len(loc.prefix)].lower() != loc.prefix.lower()
                or v[len(loc.prefix) :].strip() != item.token
            ]
            headers.popall(loc.name, None)
            for value in kept:
                headers.add(loc.name, value)
        elif loc.kind == "cookie":
            _remove_cookie(headers, loc.name)


def _remove_cookie(headers: CIMultiDict[str], name: str) -> None:
    values = headers.getall("cookie", ())
    if not values:
        return
    rebuilt = []
    for header in values:
        parts = [p.strip() for p in header.split(";")]
        kept = [p for p in parts if p and p.partition("=")[0].strip() != name]
        if kept:
            rebuilt.append("; ".join(kept))
    headers.popall("cookie", None)
    for value in rebuilt:
        headers.add("cookie", value)
