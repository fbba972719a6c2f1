"""The gateway's own HPACK decoder: every block the ``hpack`` library's encoder writes
(Huffman strings, dynamic-table indexing, size updates, never-indexed fields) decodes to
exactly the fields given, and every limit and malformation the RFC names is refused."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from wardgate.proxy.h2.hpack_in import HeaderBlockDecoder, huffman_decode

GRPC_HEAD = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/bench.Echo/Unary"),
    (b":authority", b"127.0.0.1:5000"),
    (b"te", b"trailers"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-python-asyncio/1.85.4 grpc-c/48.0.0 (linux; chttp2)"),
    (b"authorization", b"Bearer t"),
]


def test_huffman_strings_of_every_octet_decode() -> None:
    encode = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode
    rng = random.Random(7)
    samples = [bytes(range(256)), b"", b"a", b"www.example.com"]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(60))) for _ in range(500)]
    for sample in samples:
        assert huffman_decode(encode(sample)) == sample


def test_huffman_eos_and_bad_padding_are_refused() -> None:
    with pytest.raises(HPACKDecodingError):
        huffman_decode(b"\xff\xff\xff\xff")  # 30 one-bits: the EOS symbol
    with pytest.raises(HPACKDecodingError):
        huffman_decode(b"\x00")  # '0' (00000) then padding of zeros, not ones
    with pytest.raises(HPACKDecodingError):
        huffman_decode(b"\x07\xff")  # '0' then 11 one-bits: padding over 7 bits


def test_blocks_of_the_hpack_encoder_decode_across_a_connection() -> None:
    encoder, decoder = hpack.Encoder(), HeaderBlockDecoder()
    for i in range(50):
        fields = [*GRPC_HEAD, (b"x-request-id", str(i).encode()), (b"x-n", b"v" * (i * 7))]
        assert decoder.decode(encoder.encode(fields)) == fields
    # The encoder shrinks its table (a size update leads the next block) and grows it back.
    encoder.header_table_size = 100
    assert decoder.decode(encoder.encode(GRPC_HEAD)) == GRPC_HEAD
    assert decoder.header_table_size == 100
    encoder.header_table_size = 4096
    assert decoder.decode(encoder.encode(GRPC_HEAD)) == GRPC_HEAD


def test_the_dynamic_table_stays_within_its_size() -> None:
    encoder, decoder = hpack.Encoder(), HeaderBlockDecoder(table_size=256)
    encoder.header_table_size = 256
    for i in range(100):
        fields = [(b"x-a", b"v" * (i % 90)), (b"x-b", str(i).encode())]
        assert decoder.decode(encoder.encode(fields)) == fields
        assert decoder._used <= 256
    # An entry larger than the whole table empties it instead of being stored.
    fields = [(b"x-big", b"b" * 300)]
    assert decoder.decode(encoder.encode(fields)) == fields
    assert decoder._used == 0


def test_an_hpack_bomb_stops_at_the_header_list_limit() -> None:
    encoder = hpack.Encoder()
    block = encoder.encode([(b"x-bomb", b"a" * 4000)] * 200)  # ~4.6 KB -> 800 KB decoded
    assert len(block) < 5000
    with pytest.raises(OversizedHeaderListError):
        HeaderBlockDecoder(max_header_list_size=96 * 1024).decode(block)
    # Just under the limit passes: the limit counts name + value + 32 per field.
    fields = [(b"x-a", b"b" * 100)] * 10
    limit = sum(len(n) + len(v) + 32 for n, v in fields)
    assert HeaderBlockDecoder(max_header_list_size=limit).decode(hpack.Encoder().encode(fields))
    with pytest.raises(OversizedHeaderListError):
        HeaderBlockDecoder(max_header_list_size=limit - 1).decode(hpack.Encoder().encode(fields))


def test_a_table_size_over_our_setting_is_refused() -> None:
    decoder = HeaderBlockDecoder()
    decoder.max_allowed_table_size = 1024
    assert decoder.decode(b"\x3f\xe1\x07\x82") == [(b":method", b"GET")]  # update to 1024
    with pytest.raises(InvalidTableSizeError):
        decoder.decode(b"\x3f\xe2\x07\x82")  # update to 1025


def test_a_table_size_update_after_a_field_is_refused() -> None:
    with pytest.raises(HPACKDecodingError):
        HeaderBlockDecoder().decode(b"\x82\x20")


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xbf\x00",  # index 63: past the static table, dynamic table empty
        b"\x7f\x05",  # literal naming table entry 68 (63 + 5): the dynamic table is empty
    ],
)
def test_bad_indexes_are_refused(block: bytes) -> None:
    with pytest.raises(InvalidTableIndexError):
        HeaderBlockDecoder().decode(block)


@pytest.mark.parametrize(
    "block",
    [
        b"\x40\x05ab",  # name literal runs past the block
        b"\x00\x01a",  # value missing
        b"\xff\xff\xff\xff\xff\xff\x01",  # integer over 4 continuation bytes
        b"\xff\x80",  # integer truncated
        b"\x00\x81\xff",  # Huffman-coded name: padding of 8 bits
    ],
)
def test_truncated_or_malformed_blocks_are_refused(block: bytes) -> None:
    with pytest.raises(HPACKDecodingError):
        HeaderBlockDecoder().decode(block)
