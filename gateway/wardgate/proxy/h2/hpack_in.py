"""The HPACK decoder for header blocks the gateway receives (RFC 7541), in one tight pass.

The ``hpack`` library's decoder builds a tuple subclass per field, formats a debug log
record per field and decodes Huffman strings bit by bit: about a tenth of a gRPC call's
CPU through the gateway. This one returns plain ``(name, value)`` byte pairs and decodes
Huffman strings a nibble at a time through a table built once from the RFC's code.

The limits hold as in ``hpack``: the decoded header list (name + value + 32 per field,
RFC 9113 6.5.2) may not exceed ``max_header_list_size`` (checked per field, so an HPACK
bomb, a short block naming a large table entry many times, stops at the limit:
:class:`~hpack.exceptions.OversizedHeaderListError`); the dynamic table never exceeds the
size we advertised (``max_allowed_table_size``, :class:`~hpack.exceptions.
InvalidTableSizeError` for an update over it); integers longer than 4 continuation bytes,
strings running past the block, index 0 or past the table, an EOS symbol or bad padding
in a Huffman string are :class:`~hpack.exceptions.HPACKDecodingError`. ``h2`` turns all of
them into a connection error, as it does for the library's decoder."""

from __future__ import annotations

import collections

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1
_MAX_INTEGER_BYTES = 4  # continuation bytes after the prefix: values up to 2**28


def _huffman_table() -> tuple[list[tuple[int, bytes]], list[bool]]:
    """The RFC 7541 Appendix B code as a nibble machine: for each tree node (``state``)
    and input nibble, ``(next state, bytes emitted)`` at ``state * 16 + nibble``; a next
    state of -1 means the nibble completes EOS (an error). ``accepting[state]``: the bits
    since the last symbol are at most 7 one-bits, the only padding allowed (5.2)."""
    children: list[list[int]] = [[0, 0]]  # node 0 is the root; a child > 0 is a node,
    leaves: dict[tuple[int, int], int] = {}  # (node, bit) -> symbol
    for symbol, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True)):
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            if children[node][bit] == 0:
                children.append([0, 0])
                children[node][bit] = len(children) - 1
            node = children[node][bit]
        leaves[(node, code & 1)] = symbol
    accepting = [False] * len(children)
    node, depth = 0, 0
    while depth < 8:  # the all-ones path from the root, up to 7 bits
        accepting[node] = True
        node, depth = children[node][1], depth + 1
    table: list[tuple[int, bytes]] = []
    for start in range(len(children)):
        for nibble in range(16):
            node, out = start, bytearray()
            for shift in (3, 2, 1, 0):
                bit = (nibble >> shift) & 1
                leaf = leaves.get((node, bit))
                if leaf is None:
                    node = children[node][bit]
                elif leaf == 256:
                    node = -1
                    break
                else:
                    out.append(leaf)
                    node = 0
            table.append((node, bytes(out)))
    return table, accepting


_HUFFMAN, _ACCEPTING = _huffman_table()


def huffman_decode(data: bytes) -> bytes:
    """A Huffman-coded string literal's octets (RFC 7541 5.2)."""
    table = _HUFFMAN
    state = 0
    out = bytearray()
    for byte in data:
        state, emitted = table[(state << 4) | (byte >> 4)]
        if state < 0:
            raise HPACKDecodingError("EOS in a Huffman-coded string")
        if emitted:
            out += emitted
        state, emitted = table[(state << 4) | (byte & 15)]
        if state < 0:
            raise HPACKDecodingError("EOS in a Huffman-coded string")
        if emitted:
            out += emitted
    if not _ACCEPTING[state]:
        raise HPACKDecodingError("bad padding in a Huffman-coded string")
    return bytes(out)


class HeaderBlockDecoder:
    """Drop-in for ``hpack.Decoder`` as ``h2`` uses it: ``decode(block, raw=True)``,
    ``max_header_list_size``, ``max_allowed_table_size`` (our SETTINGS_HEADER_TABLE_SIZE)
    and ``header_table_size`` (the size the peer's encoder chose, at most the allowed)."""

    __slots__ = ("_allowed", "_entries", "_size", "_used", "max_header_list_size")

    def __init__(self, max_header_list_size: int = 65536, table_size: int = 4096) -> None:
        self.max_header_list_size = max_header_list_size
        self._allowed = table_size
        self._size = table_size
        self._used = 0
        self._entries: collections.deque[tuple[bytes, bytes]] = collections.deque()

    @property
    def max_allowed_table_size(self) -> int:
        return self._allowed

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, value: int) -> None:
        # Only bounds the sizes the peer may announce from now on: a table the peer filled
        # before it read our SETTINGS stays usable (it keeps its size until the peer's
        # next size update), so a client that indexed fields early is not broken.
        self._allowed = value

    @property
    def header_table_size(self) -> int:
        return self._size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._resize(value)

    def _resize(self, size: int) -> None:
        self._size = size
        entries = self._entries
        while self._used > size:
            name, value = entries.pop()
            self._used -= len(name) + len(value) + _ENTRY_OVERHEAD

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        if size > self._size:
            self._entries.clear()  # RFC 7541 4.4: an entry larger than the table empties it
            self._used = 0
            return
        self._entries.appendleft((name, value))
        self._used += size
        if self._used > self._size:
            self._resize(self._size)

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_LEN:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if index <= 0 or dynamic >= len(self._entries):
            raise InvalidTableIndexError(f"header table index {index} out of range")
        return self._entries[dynamic]

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        """The fields of one header block, in order, as byte pairs (``raw`` is accepted
        for ``h2``'s call and must be true: the gateway decodes text itself)."""
        if not raw:
            raise ValueError("HeaderBlockDecoder returns bytes only (raw=True)")
        data = bytes(data)
        end = len(data)
        pos = 0
        fields: list[tuple[bytes, bytes]] = []
        budget = self.max_header_list_size
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed field
                index, pos = _integer(data, pos, 7)
                name, value = self._field(index)
            elif first & 0x40:  # literal with incremental indexing
                name, value, pos = self._literal(data, pos, 6)
                self._add(name, value)
            elif first & 0x20:  # dynamic table size update: only before the first field
                size, pos = _integer(data, pos, 5)
                if fields:
                    raise HPACKDecodingError("table size update after a header field")
                if size > self._allowed:
                    raise InvalidTableSizeError(f"table size {size} over {self._allowed}")
                self._resize(size)
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                name, value, pos = self._literal(data, pos, 4)
            budget -= len(name) + len(value) + _ENTRY_OVERHEAD
            if budget < 0:
                raise OversizedHeaderListError(
                    f"header list over {self.max_header_list_size} bytes"
                )
            fields.append((name, value))
        return fields

    def _literal(self, data: bytes, pos: int, prefix: int) -> tuple[bytes, bytes, int]:
        index, pos = _integer(data, pos, prefix)
        if index:
            name = self._field(index)[0]
        else:
            name, pos = _string(data, pos)
        value, pos = _string(data, pos)
        return name, value, pos


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with a ``prefix``-bit prefix at ``data[pos]`` (RFC 7541 5.1) and the
    position after it."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(data)
    for _ in range(_MAX_INTEGER_BYTES):
        if pos >= end:
            raise HPACKDecodingError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise HPACKDecodingError("integer over 4 continuation bytes")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal at ``data[pos]`` (RFC 7541 5.2) and the position after it."""
    if pos >= len(data):
        raise HPACKDecodingError("truncated string literal")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    stop = pos + length
    if stop > len(data):
        raise HPACKDecodingError("string literal runs past the header block")
    raw = data[pos:stop]
    return (huffman_decode(raw) if huffman else raw), stop
