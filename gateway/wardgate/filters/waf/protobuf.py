"""String fields of protobuf messages in a gRPC body, found without a descriptor, as WAF
targets: a value an attacker puts in a ``string`` field is inspected like a query or JSON
parameter.

The protobuf wire format says how long every field is but not what it means: a
length-delimited field (wire type 2) is a string, bytes, a packed array or a nested
message. A field of plain text (UTF-8 without control bytes) is a string; one with control
bytes is parsed as a nested message when it parses cleanly to its end, else taken as a
string when it is UTF-8 (see :func:`_walk`). Field paths (``1.3.2``:
field numbers from the outside in) are the parameter names, so exceptions can name them.

Bounded: at most :data:`MAX_DEPTH` levels of nesting and :data:`MAX_STRINGS` strings per
body; anything that does not parse (compressed messages, truncated or foreign bytes)
yields nothing more, and the raw-body rules still see the whole body."""

from __future__ import annotations

from wardgate.filters.waf.targets import ARGS, Target

MAX_DEPTH = 8
"""Nesting levels followed (protobuf's own default recursion limit is 100; real APIs
rarely nest deeper than a few levels)."""

MAX_STRINGS = 1000
"""Strings taken from one body; beyond it the rest is left to the raw-body rules."""

_MESSAGE_HEADER = 5  # gRPC: compressed flag, 4-byte big-endian length


class _Bad(Exception):
    """Not a protobuf message (as a whole)."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Bad


def _fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The length-delimited fields of one message: ``(number, start, end)``. ``_Bad``
    when the bytes are not a well-formed message to the last byte."""
    found: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Bad
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            found.append((number, pos, pos + length))
            pos += length
        else:
            raise _Bad  # groups (3, 4) are long deprecated; 6 and 7 do not exist
        if pos > end:
            raise _Bad
    return found


_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _walk(data: bytes, start: int, end: int, path: str, depth: int, out: list[Target]) -> bool:
    """Targets for the message in ``data[start:end]``; ``False`` when it is not one.

    A field without control bytes is text (when UTF-8) and not parsed further: a message
    hidden in it would be a substring of that text, inspected already. A field with
    control bytes (keys and lengths of a message are) is parsed as a message, and taken as
    text only when it is not one: a string is not skipped because it holds a control byte,
    or an attacker would add one."""
    try:
        fields = _fields(data, start, end)
    except _Bad:
        return False
    for number, begin, finish in fields:
        if len(out) >= MAX_STRINGS:
            break
        name = f"{path}.{number}" if path else str(number)
        value = data[begin:finish]
        plain = len(value.translate(None, _CONTROLS)) == len(value)
        if not plain and depth < MAX_DEPTH and _walk(data, begin, finish, name, depth + 1, out):
            continue
        text = _text(value)
        if text:
            out.append(Target(ARGS, name, "body", text))
    return bool(fields)


def grpc_string_targets(body: bytes, out: list[Target]) -> None:
    """Append an ``ARGS`` target for every string field of every uncompressed message of
    a gRPC request body (length-prefixed messages); a cut last message is parsed as far
    as it is whole."""
    pos = 0
    size = len(body)
    while pos + _MESSAGE_HEADER <= size and len(out) < MAX_STRINGS:
        compressed = body[pos]
        length = int.from_bytes(body[pos + 1 : pos + _MESSAGE_HEADER], "big")
        start = pos + _MESSAGE_HEADER
        pos = start + length
        if compressed or pos > size:
            continue  # compressed (grpc-encoding) or cut: the raw-body rules only
        _walk(body, start, pos, "", 1, out)
