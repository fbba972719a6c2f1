"""gRPC helpers: deadlines, message framing, status mapping."""

from __future__ import annotations

import pytest

from wardgate.proxy.h2 import grpc


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("300m", 0.3), ("2M", 120.0), ("1H", 3600.0), ("5u", 5e-6), ("7n", 7e-9)],
)
def test_parse_timeout(value, seconds):
    assert grpc.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", [None, "", "S", "1", "1s", "-1S", "123456789S", "\u0661S", "1.5S"]
)
def test_malformed_timeouts_are_ignored(value):
    assert grpc.parse_timeout(value) is None


def test_statuses_as_envoy_maps_them():
    assert [grpc.grpc_status_for(s) for s in (401, 403, 429, 413, 503, 504, 404, 400, 418)] == [
        16,
        7,
        14,
        8,
        14,
        14,
        12,
        13,
        2,
    ]


def test_is_grpc():
    assert grpc.is_grpc("application/grpc")
    assert grpc.is_grpc("application/grpc+proto; charset=x")
    assert not grpc.is_grpc("application/grpc-web")
    assert not grpc.is_grpc("application/json")


def _message(size: int) -> bytes:
    return b"\x00" + size.to_bytes(4, "big") + b"m" * size


def test_scanner_follows_messages_split_anywhere():
    stream = _message(3) + _message(0) + _message(70000) + _message(5)
    for step in (1, 2, 5, 7, 4096, len(stream)):
        scanner = grpc.MessageScanner(limit=70000)
        for i in range(0, len(stream), step):
            assert scanner.feed(stream[i : i + step]) is None
        assert scanner.messages == 4
        assert scanner.at_boundary


def test_scanner_names_the_first_message_over_the_limit_from_its_prefix():
    scanner = grpc.MessageScanner(limit=10)
    assert scanner.feed(_message(10)) is None
    assert scanner.feed(b"\x00\x00\x00\x00\x0b") == 11  # refused before its bytes come


def test_local_reply_headers_are_trailers_only():
    from multidict import CIMultiDict

    headers = CIMultiDict({"content-type": "application/problem+json", "x-request-id": "r1"})
    out = grpc.local_reply_headers(401, "jwt_missing", "no token 100%", headers)
    assert out[0] == (":status", "200")
    assert ("content-type", "application/grpc") in out
    assert ("x-request-id", "r1") in out
    assert ("grpc-status", "16") in out
    assert ("grpc-message", "jwt_missing: no token 100%25") in out
    assert not any(n == "content-type" and v != "application/grpc" for n, v in out)
