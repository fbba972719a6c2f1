"""The gateway's own HPACK encoder: every block it writes decodes, with the ``hpack``
library's decoder (as nghttp2 or grpc's would), to exactly the fields given, across table
size changes, long values, names in and out of the static table, and credentials."""

from __future__ import annotations

import hpack

from wardgate.proxy.h2.hpack_out import LiteralEncoder

FIELDS = [
    (b":status", b"200"),  # exact static match: one byte
    (b":status", b"418"),  # static name, other value
    (b"content-type", b"application/grpc"),
    (b"www-authenticate", b"x" * 300),  # static index >= 15, value over 127 bytes
    (b"x-request-id", b"0f2c3a"),  # not in the static table
    (b"authorization", b"Bearer secret"),
    (b"x-empty", b""),
    (b"grpc-message", "caf\u00e9 %".encode()),
]


def test_blocks_decode_to_the_fields_given() -> None:
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    for _ in range(3):
        assert decoder.decode(encoder.encode(FIELDS), raw=True) == FIELDS
    # Nothing was indexed: the peer's table stays empty.
    assert len(decoder.header_table.dynamic_entries) == 0


def test_table_size_is_announced_first_and_after_a_settings_change() -> None:
    encoder = LiteralEncoder()
    assert encoder.encode([(b":status", b"200")]) == b"\x20\x88"
    assert encoder.encode([(b":status", b"200")]) == b"\x88"
    encoder.header_table_size = 0  # the peer lowered SETTINGS_HEADER_TABLE_SIZE
    decoder = hpack.Decoder()
    decoder.header_table_size = 0
    block = encoder.encode([(b":status", b"200")])
    assert block.startswith(b"\x20")
    assert decoder.decode(block, raw=True) == [(b":status", b"200")]


def test_credentials_use_the_never_indexed_form() -> None:
    block = LiteralEncoder().encode([(b"authorization", b"Bearer t")])
    # 0001xxxx with the static index of authorization (23 >= 15: prefix all ones).
    assert block[1] == 0x1F
    decoded = hpack.Decoder().decode(block, raw=True)
    assert decoded == [(b"authorization", b"Bearer t")]
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)


def test_repeated_fields_encode_the_same_and_credentials_are_not_kept() -> None:
    from wardgate.proxy.h2 import hpack_out

    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    fields = [(b"content-type", b"application/grpc"), (b"authorization", b"Bearer s3cret")]
    first = encoder.encode(fields)
    assert encoder.encode(fields) == first[1:]  # the same, without the size announcement
    assert decoder.decode(first, raw=True) == fields
    assert (b"content-type", b"application/grpc") in hpack_out._LITERALS
    assert not any(b"s3cret" in value for _, value in hpack_out._LITERALS)
    # Unique values (request ids) never grow the cache past its bound.
    for i in range(3000):
        block = encoder.encode([(b"x-request-id", str(i).encode())])
        assert decoder.decode(block, raw=True) == [(b"x-request-id", str(i).encode())]
    assert len(hpack_out._LITERALS) <= hpack_out._MAX_LITERALS
