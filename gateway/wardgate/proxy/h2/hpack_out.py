"""A cheap HPACK encoder for the header blocks the gateway sends (RFC 7541).

The ``hpack`` library's encoder indexes every field into the dynamic table and
Huffman-codes every string, in pure Python: the largest single cost of a gRPC call through
the gateway after the event loop (about an eighth of the process's time, three header
blocks per call). Most of what the gateway sends changes per request (request ids, upstream
times, trailers) and would only churn the table. This encoder keeps no dynamic table:
fields that match the static table exactly are sent as one index byte, all others as
literals without indexing (the static table's name index where there is one), strings as
raw octets. Decoders need nothing special: every HPACK decoder reads these forms.

The dynamic table size is announced as 0 at the start of the first header block and again
after every change of the peer's ``SETTINGS_HEADER_TABLE_SIZE`` (a decoder may require that
announcement after lowering it), so the table the peer keeps for us stays empty.
Credentials (``authorization``, ``cookie``...) use the never-indexed form, which tells
intermediaries not to index them either."""

from __future__ import annotations

from collections.abc import Iterable

from hpack.table import HeaderTable

_TABLE_SIZE_ZERO = b"\x20"  # dynamic table size update (001xxxxx) to 0

_SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer with an ``prefix_bits``-bit prefix, ``flags`` in the high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A string literal, not Huffman coded."""
    return _integer(len(data), 7, 0) + data


_INDEXED: dict[tuple[bytes, bytes], bytes] = {}
_NAME_PLAIN: dict[bytes, bytes] = {}
_NAME_NEVER: dict[bytes, bytes] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    if _value:
        _INDEXED.setdefault((_name, _value), _integer(_index, 7, 0x80))
    _NAME_PLAIN.setdefault(_name, _integer(_index, 4, 0x00))
    _NAME_NEVER.setdefault(_name, _integer(_index, 4, 0x10))


_LITERALS: dict[tuple[bytes, bytes], bytes] = {}
"""Encoded literal fields seen recently (content types, user agents, ``te``, gRPC
metadata repeat on every call); bounded: emptied when full."""
_MAX_LITERALS = 1024
_MAX_CACHED_VALUE = 256  # longer values (tokens, cookies) are encoded each time


def _literal(name: bytes, value: bytes) -> bytes:
    never = name in _SENSITIVE
    prefix = (_NAME_NEVER if never else _NAME_PLAIN).get(name)
    if prefix is None:
        prefix = (b"\x10" if never else b"\x00") + _string(name)
    return prefix + _string(value)


class LiteralEncoder:
    """Drop-in for ``hpack.Encoder`` as ``h2`` uses it (``encode`` and the
    ``header_table_size`` the peer's settings set)."""

    __slots__ = ("_announce", "_table_size")

    def __init__(self) -> None:
        self._announce = True
        self._table_size = 4096

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value
        self._announce = True

    def encode(self, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """One header block. ``headers`` are byte pairs, names lower case (the gateway's
        ``h2`` connections are set up so: ``header_encoding=None``, ``wire_headers``).
        ``h2`` calls it as ``encoder.encode(headers)``; literals are never Huffman-coded."""
        out = bytearray()
        if self._announce:
            out += _TABLE_SIZE_ZERO
            self._announce = False
        cache = _LITERALS
        for field in headers:
            encoded = _INDEXED.get(field) or cache.get(field)
            if encoded is None:
                encoded = _literal(*field)
                if len(field[1]) <= _MAX_CACHED_VALUE and field[0] not in _SENSITIVE:
                    if len(cache) >= _MAX_LITERALS:
                        cache.clear()
                    cache[field] = encoded
            out += encoded
        return bytes(out)
