"""The checks RFC 9113 sections 8.2 and 8.3 require of a received request head, response
head or trailer block, in one pass over the decoded fields.

The gateway's connections (to clients and to the upstream) run ``h2`` with its own inbound
validation off (a chain
of seven generators per block, a large share of a gRPC call's CPU) and call these
instead, before a stream is handed to anyone. A block that fails is malformed: the
connection is closed with ``PROTOCOL_ERROR``, as ``h2`` did. What is refused:

* field names that are empty, contain upper case, controls, space, DEL or non-ASCII
  octets, or a colon anywhere but at the start of a pseudo-header (8.2.1);
* field values with NUL, CR or LF, or starting or ending with space or tab (8.2.1);
* connection-specific fields (``connection``, ``keep-alive``, ``proxy-connection``,
  ``transfer-encoding``, ``upgrade``) and ``te`` other than ``trailers`` (8.2.2);
* pseudo-headers after a regular field, repeated, unknown, response-only (``:status``)
  in a request, or any in trailers; a request without ``:method``, without ``:scheme``
  or ``:path`` (unless a plain CONNECT, which must not have them), with an empty
  ``:path``, or ``:protocol`` outside CONNECT (8.3, RFC 8441);
* a request without ``:authority`` and ``host``, with two ``host`` fields, or whose
  ``host`` differs from ``:authority`` (8.3.1)."""

from __future__ import annotations

from collections.abc import Iterable

_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
# Octets a field name may hold (8.2.1): visible ASCII but upper case, and not a colon.
_NAME_OCTETS = bytes(c for c in range(0x21, 0x7F) if not 0x41 <= c <= 0x5A and c != 0x3A)
_SPACE = (0x20, 0x09)


class MalformedFields(Exception):
    """A header block RFC 9113 calls malformed; the message says which rule it broke."""


def _check_field(name: bytes, value: bytes) -> None:
    if not name:
        raise MalformedFields("empty field name")
    bad = name.translate(None, _NAME_OCTETS)
    # One colon and nothing else outside the allowed octets: a pseudo-header's name.
    if bad and (bad != b":" or name[0] != 0x3A or len(name) == 1):
        raise MalformedFields(f"invalid field name {name[:64]!r}")
    if value:
        if b"\x00" in value or b"\r" in value or b"\n" in value:
            raise MalformedFields(f"NUL, CR or LF in the value of {name[:64]!r}")
        if value[0] in _SPACE or value[-1] in _SPACE:
            raise MalformedFields(f"value of {name[:64]!r} starts or ends with whitespace")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedFields(f"connection-specific field {name!r}")
    if name == b"te" and value.lower() != b"trailers":
        raise MalformedFields("te other than trailers")


def check_request_head(fields: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise :class:`MalformedFields` unless ``fields`` is a well-formed request head."""
    pseudo: dict[bytes, bytes] = {}
    regular_seen = False
    host: bytes | None = None
    for name, value in fields:
        _check_field(name, value)
        if name[:1] == b":":
            if regular_seen:
                raise MalformedFields(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise MalformedFields(f"pseudo-header {name!r} not allowed in a request")
            if name in pseudo:
                raise MalformedFields(f"repeated pseudo-header {name!r}")
            pseudo[name] = value
        else:
            regular_seen = True
            if name == b"host":
                if host is not None:
                    raise MalformedFields("two host fields")
                host = value
    _check_pseudo_headers(pseudo)
    authority = pseudo.get(b":authority")
    if authority is None and host is None:
        raise MalformedFields("neither :authority nor host")
    if authority is not None and host is not None and authority != host:
        raise MalformedFields(":authority and host differ")


def _check_pseudo_headers(pseudo: dict[bytes, bytes]) -> None:
    method = pseudo.get(b":method")
    if method is None:
        raise MalformedFields("no :method")
    connect = method == b"CONNECT"
    if connect and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise MalformedFields("CONNECT with :scheme or :path")
        return
    if b":protocol" in pseudo and not connect:
        raise MalformedFields(":protocol outside CONNECT")
    if b":scheme" not in pseudo or b":path" not in pseudo:
        raise MalformedFields("no :scheme or :path")
    if not pseudo[b":path"]:
        raise MalformedFields("empty :path")


def check_response_head(fields: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise :class:`MalformedFields` unless ``fields`` is a well-formed response head:
    the field rules above, and exactly one ``:status`` of three digits, first."""
    status: bytes | None = None
    regular_seen = False
    for name, value in fields:
        _check_field(name, value)
        if name[:1] == b":":
            if name != b":status" or status is not None or regular_seen:
                raise MalformedFields(f"pseudo-header {name!r} misplaced in a response")
            status = value
        else:
            regular_seen = True
    if status is None or len(status) != 3 or not status.isdigit():
        raise MalformedFields("no valid :status")


def check_trailers(fields: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise :class:`MalformedFields` unless ``fields`` is a well-formed trailer block."""
    for name, value in fields:
        _check_field(name, value)
        if name[:1] == b":":
            raise MalformedFields(f"pseudo-header {name!r} in trailers")
