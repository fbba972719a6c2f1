"""Access-log lines from an Envoy-style format string (``--access-log-format``).

The operators are Envoy's (``%START_TIME%``, ``%REQ(:PATH)%``, ``%RESPONSE_CODE%``,
``%RESPONSE_FLAGS%``, ``%DYNAMIC_METADATA(wardgate:reason)%`` ...), so one format string
and one log parser serve Envoy in front of Wardgate and Wardgate alone. An operator may end
in ``:N`` to cut its value to N characters; an empty value prints ``-``; ``%%`` is a ``%``.

Contract: the format is checked once, at start-up (:class:`FormatError` names the first
operator it cannot print); a line never carries a header other than the few the access log
always had (method, path, authority, user agent, forwarded-for, request id), a query
string, a cookie, a token or a body. ``%REQ(AUTHORIZATION)%`` is an error, not an empty
field: a user who asks for a secret is told so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import overload

from wardgate.errors import UsageError
from wardgate.observability.logs import AccessRecord, iso_time, printable

Field = Callable[[AccessRecord], str | int | None]


class FormatError(UsageError):
    """A format string with an operator this access log cannot (or must not) print."""


def _joined(items: tuple[str, ...]) -> str:
    return ",".join(printable(item, 256).replace('"', "%22") for item in items)


_HEADERS: dict[str, Field] = {
    ":method": lambda r: printable(r.method, 32),
    # The query is never logged (it carries tokens): :PATH is the path alone, as in the
    # fixed formats. Wardgate never rewrites the path, so the original path is the path.
    ":path": lambda r: printable(r.path),
    "x-envoy-original-path": lambda r: printable(r.path),
    ":authority": lambda r: printable(r.authority, 256),
    "host": lambda r: printable(r.authority, 256),
    "user-agent": lambda r: printable(r.user_agent),
    "x-forwarded-for": lambda r: printable(r.forwarded_for),
    "x-request-id": lambda r: printable(r.request_id, 128),
}
"""The request headers a format may name (lower-case); every other one is refused."""

_METADATA: dict[str, Field] = {
    "replied_by": lambda r: r.replied_by,
    "filter": lambda r: "" if r.replied_by == "upstream" else r.replied_by,
    "reason": lambda r: r.reason,
    "rule_ids": lambda r: _joined(r.rule_ids),
    "rules": lambda r: _joined(r.rule_ids),
    "locations": lambda r: _joined(r.locations),
    "detected": lambda r: _joined(r.findings),
    "policy_digest": lambda r: r.policy_digest,
    "policy_generation": lambda r: r.policy_generation,
    "status": lambda r: r.status,
    "request_id": lambda r: printable(r.request_id, 128),
}
"""``%DYNAMIC_METADATA(wardgate:KEY)%``: the keys of the decision metadata Wardgate gives
Envoy (:meth:`wardgate.envoy.decision.Decision.metadata`), plus ``rules`` for ``rule_ids``;
lists are joined with ``,``."""

_PLAIN: dict[str, Field] = {
    "PROTOCOL": lambda r: r.protocol,
    "RESPONSE_CODE": lambda r: r.status,
    "RESPONSE_FLAGS": lambda r: r.response_flags,
    "BYTES_RECEIVED": lambda r: r.bytes_received,
    "BYTES_SENT": lambda r: r.bytes_sent,
    "DURATION": lambda r: r.duration_ms,
    "UPSTREAM_HOST": lambda r: r.upstream_host,
    "DOWNSTREAM_REMOTE_ADDRESS": lambda r: r.client_address,
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda r: r.client_address,
}
_RESPONSE_HEADERS: dict[str, Field] = {
    "x-envoy-upstream-service-time": lambda r: r.upstream_service_time_ms,
}
_METADATA_NAMESPACES = ("wardgate", "envoy.filters.http.ext_authz:wardgate")
"""Wardgate's own namespace, and where Envoy's ext_authz filter files the same metadata."""


@overload
def compile_format(text: str) -> Callable[[AccessRecord], str]: ...
@overload
def compile_format(text: None) -> None: ...
def compile_format(text: str | None) -> Callable[[AccessRecord], str] | None:
    """A renderer for ``text`` (``None`` for ``None``: the format's own line); raises
    :class:`FormatError` for an unknown operator, a header that is not logged, or an
    unterminated ``%``. A trailing line end is dropped (the access log ends every line)."""
    if text is None:
        return None
    pieces: list[str | Field] = []
    literal: list[str] = []
    at = 0
    text = text.removesuffix("\n")
    while at < len(text):
        start = text.find("%", at)
        if start < 0:
            literal.append(text[at:])
            break
        literal.append(text[at:start])
        if text.startswith("%%", start):
            literal.append("%")
            at = start + 2
            continue
        end = _operator_end(text, start)
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(_operator(text[start + 1 : end]))
        at = end + 1
    if literal:
        pieces.append("".join(literal))

    def render(record: AccessRecord) -> str:
        out = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                value = piece(record)
                out.append("-" if value is None or value == "" else str(value))
        return "".join(out)

    return render


def _operator_end(text: str, start: int) -> int:
    """The index of the ``%`` closing the operator opened at ``start`` (an argument in
    parentheses may itself hold ``%``, as ``%START_TIME(%Y-%m-%d)%`` does)."""
    paren = text.find("(", start)
    close = text.find("%", start + 1)
    if close < 0:
        raise FormatError(f"unterminated operator at character {start}: {text[start:]!r}")
    if 0 <= paren < close:
        right = text.find(")", paren)
        if right < 0:
            raise FormatError(f"unclosed parenthesis in {text[start:]!r}")
        close = text.find("%", right)
        if close < 0:
            raise FormatError(f"unterminated operator at character {start}: {text[start:]!r}")
    return close


def _operator(token: str) -> Field:
    """One operator (``REQ(:PATH):40``, without its ``%``) as a field getter."""
    name, argument, limit = token, "", None
    if "(" in token:
        name, _, rest = token.partition("(")
        argument, _, tail = rest.rpartition(")")
        if tail:
            limit = _limit(token, tail)
    elif ":" in token:
        name, _, tail = token.partition(":")
        limit = _limit(token, ":" + tail)
    field = _field(name, argument, token)
    if limit is None:
        return field
    cut = limit

    def truncated(record: AccessRecord) -> str | int | None:
        value = field(record)
        return None if value is None else str(value)[:cut]

    return truncated


def _limit(token: str, tail: str) -> int:
    digits = tail.removeprefix(":")
    if not tail.startswith(":") or not digits.isdigit():
        raise FormatError(f"%{token}%: expected :LENGTH after the operator, got {tail!r}")
    return int(digits)


def _field(name: str, argument: str, token: str) -> Field:
    if name == "START_TIME":
        return _start_time(argument)
    if name in _PLAIN and not argument:
        return _PLAIN[name]
    if name == "REQ":
        getters = []
        for header in argument.lower().split("?"):
            if header not in _HEADERS:
                allowed = ", ".join(sorted(_HEADERS))
                raise FormatError(
                    f"%{token}%: the access log never prints {header!r} (headers may carry "
                    f"secrets); it prints {allowed}"
                )
            getters.append(_HEADERS[header])
        return _first_present(getters)
    if name == "RESP" and argument.lower() in _RESPONSE_HEADERS:
        return _RESPONSE_HEADERS[argument.lower()]
    if name == "DYNAMIC_METADATA":
        return _metadata(argument, token)
    known = ", ".join(["START_TIME", "REQ", "RESP", "DYNAMIC_METADATA", *_PLAIN])
    raise FormatError(f"%{token}%: unknown or unsupported operator (supported: {known})")


def _start_time(pattern: str) -> Field:
    if not pattern:
        return lambda r: iso_time(r.start)
    return lambda r: datetime.fromtimestamp(r.start, UTC).strftime(pattern)


def _first_present(getters: list[Field]) -> Field:
    """Envoy's ``REQ(A?B)``: the first header that has a value."""

    def first(record: AccessRecord) -> str | int | None:
        for getter in getters:
            value = getter(record)
            if value not in (None, ""):
                return value
        return None

    return first


def _metadata(argument: str, token: str) -> Field:
    for namespace in _METADATA_NAMESPACES:
        if argument == namespace:
            return _whole_namespace
        if argument.startswith(namespace + ":"):
            key = argument[len(namespace) + 1 :]
            if key in _METADATA:
                return _METADATA[key]
            raise FormatError(
                f"%{token}%: no metadata key {key!r} (keys: {', '.join(sorted(_METADATA))})"
            )
    raise FormatError(f"%{token}%: the metadata namespace is wardgate (wardgate:reason ...)")


def _whole_namespace(record: AccessRecord) -> str:
    """``%DYNAMIC_METADATA(wardgate)%``: every key as one JSON object, as Envoy prints a
    struct."""
    doc = {key: getter(record) for key, getter in _METADATA.items() if key not in ("rules",)}
    return json.dumps({k: v for k, v in doc.items() if v not in (None, "")}, sort_keys=True)
