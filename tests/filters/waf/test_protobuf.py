"""String fields of protobuf messages in gRPC bodies become WAF parameters (no descriptor):
nested messages are followed, non-strings skipped, bad or compressed bytes yield nothing,
and the bounds hold."""

from __future__ import annotations

from wardgate.filters.waf.protobuf import MAX_DEPTH, MAX_STRINGS, grpc_string_targets
from wardgate.filters.waf.targets import ARGS, Target


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def framed(message: bytes, compressed: int = 0) -> bytes:
    return bytes((compressed,)) + len(message).to_bytes(4, "big") + message


def strings(body: bytes) -> dict[str, str]:
    out: list[Target] = []
    grpc_string_targets(body, out)
    assert all(t.kind == ARGS and t.location == "body" for t in out)
    return {t.name: t.value for t in out}


def test_strings_and_nested_messages_by_field_path() -> None:
    inner = field(1, b"1' OR '1'='1") + varint(2 << 3 | 0) + varint(300)
    message = field(1, b"alice") + field(3, inner) + varint(4 << 3 | 5) + b"\x00\x00\x80\x3f"
    found = strings(framed(message))
    assert found["1"] == "alice"
    assert found["3.1"] == "1' OR '1'='1"
    assert "3" not in found  # the nested message itself (control bytes) is not a string


def test_every_message_of_a_stream() -> None:
    body = framed(field(1, b"first")) + framed(field(1, b"<script>"))
    out: list[Target] = []
    grpc_string_targets(body, out)
    assert [t.value for t in out] == ["first", "<script>"]


def test_a_string_with_a_control_byte_is_still_a_string() -> None:
    # Adding a NUL must not hide a value: it does not parse as a message, so it is text.
    value = b"x\x00' UNION SELECT 1--"
    assert strings(framed(field(1, value)))["1"] == value.decode()


def test_bytes_compressed_and_broken_messages_yield_nothing() -> None:
    assert strings(framed(field(1, b"\xff\xfe binary"))) == {}
    assert strings(framed(field(1, b"hidden"), compressed=1)) == {}
    assert strings(framed(b"\x0a\x50short")) == {}  # length past the end
    assert strings(b"\x00\x00\x00") == {}  # not even a message header
    cut = framed(field(1, b"whole")) + framed(field(1, b"cut"))[:-2]
    assert strings(cut) == {"1": "whole"}


def test_depth_and_count_are_bounded() -> None:
    message = field(1, b"deep")
    for _ in range(MAX_DEPTH + 5):
        message = field(1, message)
    found = strings(framed(message))
    assert "deep" not in found.values()  # below the depth followed
    many = b"".join(field(1, b"v") for _ in range(MAX_STRINGS + 50))
    assert len(strings(framed(many))) <= 1  # one name; count checked below
    out: list[Target] = []
    grpc_string_targets(framed(many), out)
    assert len(out) == MAX_STRINGS
