"""Malformed HTTP/2 header blocks (RFC 9113 8.2 and 8.3) never reach the upstream.

The gateway checks request heads and trailers itself, in one pass (``proxy/h2/fields.py``),
with ``h2``'s own inbound validation switched off for speed: each rule below is sent by a
raw ``h2`` client with its outbound checks off, and must close the connection with
``PROTOCOL_ERROR`` while the upstream sees nothing. Well-formed neighbours of the same
cases (``te: trailers``, a colon inside a value, ``host`` equal to ``:authority``) pass."""

from __future__ import annotations

import asyncio

import h2.errors
import h2.events
import pytest

from tests.proxy.h2.conftest import RawH2
from wardgate.proxy.h2.fields import MalformedFields, check_request_head, check_trailers
from wardgate.proxy.h2.settings import H2Settings

HTTP1 = H2Settings(upstream_protocol="http1")
GET = [(":method", "GET"), (":scheme", "http"), (":authority", "t.local"), (":path", "/a")]

MALFORMED: dict[str, list[tuple[str, str]]] = {
    "uppercase name": [*GET, ("X-Upper", "1")],
    "space in name": [*GET, ("x a", "1")],
    "colon in name": [*GET, ("x:a", "1")],
    "non-ascii name": [*GET, ("x-\u00e9", "1")],
    "empty name": [*GET, ("", "1")],
    "lf in value": [*GET, ("x-a", "1\nx-b: 2")],
    "nul in value": [*GET, ("x-a", "1\x00")],
    "leading space in value": [*GET, ("x-a", " 1")],
    "trailing tab in value": [*GET, ("x-a", "1\t")],
    "connection": [*GET, ("connection", "close")],
    "keep-alive": [*GET, ("keep-alive", "timeout=5")],
    "proxy-connection": [*GET, ("proxy-connection", "keep-alive")],
    "transfer-encoding": [*GET, ("transfer-encoding", "chunked")],
    "upgrade": [*GET, ("upgrade", "websocket")],
    "te gzip": [*GET, ("te", "gzip")],
    "pseudo after regular": [*GET[:3], ("x-a", "1"), GET[3]],
    "repeated pseudo": [*GET, (":path", "/b")],
    "unknown pseudo": [*GET, (":foo", "1")],
    "status in request": [*GET, (":status", "200")],
    "no method": GET[1:],
    "no path": GET[:3],
    "no scheme": [GET[0], *GET[2:]],
    "empty path": [*GET[:3], (":path", "")],
    "protocol without connect": [*GET, (":protocol", "websocket")],
    "connect with path": [(":method", "CONNECT"), (":authority", "t.local:443"), (":path", "/")],
    "no authority or host": [GET[0], GET[1], GET[3]],
    "host differs": [*GET, ("host", "other.example")],
    "two hosts": [GET[0], GET[1], GET[3], ("host", "t.local"), ("host", "t.local")],
}

WELL_FORMED: dict[str, list[tuple[str, str]]] = {
    "te trailers": [*GET, ("te", "Trailers")],
    "colon in value": [*GET, ("x-a", "a:b")],
    "host equals authority": [*GET, ("host", "t.local")],
    "host without authority": [GET[0], GET[1], GET[3], ("host", "t.local")],
    "empty value": [*GET, ("x-a", "")],
    "plain connect": [(":method", "CONNECT"), (":authority", "t.local:443")],
}


def _raw(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in fields]


@pytest.mark.parametrize("case", MALFORMED)
def test_each_rule_is_a_malformed_request_head(case: str) -> None:
    with pytest.raises(MalformedFields):
        check_request_head(_raw(MALFORMED[case]))


@pytest.mark.parametrize("case", WELL_FORMED)
def test_well_formed_neighbours_pass(case: str) -> None:
    check_request_head(_raw(WELL_FORMED[case]))


def test_trailers_take_no_pseudo_headers_and_the_same_field_rules() -> None:
    check_trailers([(b"grpc-status", b"0"), (b"x-sum", b"a:b")])
    for bad in ([(b":path", b"/")], [(b"X-A", b"1")], [(b"te", b"gzip")], [(b"x", b"a\r")]):
        with pytest.raises(MalformedFields):
            check_trailers(bad)


def _send(address: str, fields: list[tuple[str, str]]) -> RawH2:
    client = RawH2(address, validate=False)
    client.conn.send_headers(client.conn.get_next_available_stream_id(), fields, end_stream=True)
    client.flush()
    client.pump(5, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev))
    client.close()
    return client


async def test_malformed_request_heads_close_the_connection_and_reach_nobody(
    recording_upstream, gateway
):
    url, seen = recording_upstream
    gw = await gateway(url, "", http2=HTTP1)
    address = gw.process.state.listen
    for case, fields in MALFORMED.items():
        client = await asyncio.to_thread(_send, address, fields)
        goaway = client.goaway()
        assert goaway is not None, case
        assert goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR, case
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in client.events), case
    await asyncio.sleep(0.1)
    assert seen == []
    # The well-formed neighbours (but CONNECT, which this upstream does not tunnel) pass.
    for case, fields in WELL_FORMED.items():
        if case == "plain connect":
            continue
        client = await asyncio.to_thread(_send, address, fields)
        heads = [
            dict(e.headers) for e in client.events if isinstance(e, h2.events.ResponseReceived)
        ]
        assert heads and heads[0][":status"] == "200", case
    assert len(seen) == len(WELL_FORMED) - 1


async def test_malformed_trailers_close_the_connection(recording_upstream, gateway):
    url, _seen = recording_upstream
    gw = await gateway(url, "", http2=HTTP1)

    def run() -> RawH2:
        client = RawH2(gw.process.state.listen, validate=False)
        sid = client.request("/t", "POST", end=False)
        client.conn.send_data(sid, b"abc")
        client.conn.send_headers(sid, [("x-sum", "1"), (":path", "/other")], end_stream=True)
        client.flush()
        client.pump(5, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev))
        client.close()
        return client

    client = await asyncio.to_thread(run)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR


async def _bad_h2_upstream(response: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """An h2c upstream (the ``h2`` library, its outbound checks off) that answers every
    request with ``response`` as its head."""
    import h2.config
    import h2.connection

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False, validate_outbound_headers=False, normalize_outbound_headers=False
            )
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.send_headers(event.stream_id, response, end_stream=True)
            writer.write(conn.data_to_send())
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "response",
    [
        [(":status", "200"), ("x-a", "1\r\nset-cookie: injected=1")],
        [(":status", "200"), ("X-Upper", "1")],
        [(":status", "200"), ("transfer-encoding", "chunked")],
        [("x-a", "1"), (":status", "200")],
        [(":status", "2000")],
        [(":status", "200"), (":path", "/")],
    ],
    ids=["crlf", "uppercase", "transfer-encoding", "status-late", "status-4-digits", "path"],
)
async def test_malformed_upstream_response_heads_never_reach_the_client(gateway, response):
    server = await _bad_h2_upstream(response)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(
            f"http://127.0.0.1:{port}", "", http2=H2Settings(upstream_protocol="h2c")
        )
        client = await asyncio.to_thread(RawH2, gw.process.state.listen)
        client.request("/a")
        events = await asyncio.to_thread(
            client.pump, 5, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
        )
        client.close()
    finally:
        server.close()
    heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert heads and heads[0][":status"] in ("502", "503")
    assert "x-a" not in heads[0] and "x-upper" not in heads[0] and "set-cookie" not in heads[0]
