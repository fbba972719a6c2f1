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
