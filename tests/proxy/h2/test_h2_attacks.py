"""The HTTP/2 attacks Envoy defends against, driven frame by frame with ``h2`` and
``hyperframe`` over a raw socket. Each must end in a bounded, explicit outcome (a refused
stream, a GOAWAY with the right code, a reset) and the listener must keep serving."""

from __future__ import annotations

import asyncio
import contextlib
import time

import h2.errors
import h2.events
import h2.settings
import hpack
import hyperframe.frame
import pytest

from tests.proxy.h2.conftest import RawH2
from wardgate.observability import metrics
from wardgate.proxy.h2.settings import H2Settings

ERR = h2.errors.ErrorCodes


def _settings(**kw) -> H2Settings:  # type: ignore[no-untyped-def]
    return H2Settings(upstream_protocol="http1", **kw)


async def _still_serves(gw) -> None:  # type: ignore[no-untyped-def]
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    client.request("/echo")
    events = await asyncio.to_thread(
        client.pump, 5, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
    )
    client.close()
    heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert heads and heads[0][":status"] == "200"


def _counter(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels or None)
    return value or 0.0


async def test_rapid_reset_is_bounded_and_closes_the_connection(upstream, gateway):
    """CVE-2023-44487: open and immediately reset streams in a loop. The gateway never
    works on more than maxConcurrentStreams of them at once (the rest are refused) and
    closes the connection once most streams end in premature resets."""
    gw = await gateway(
        upstream, "", http2=_settings(max_concurrent_streams=10, premature_reset_min_streams=20)
    )
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    before = _counter("wardgate_http2_premature_resets_total")
    for _ in range(500):
        sid = client.request("/delay/1")
        client.conn.reset_stream(sid, ERR.CANCEL)
    await asyncio.to_thread(client.flush_quietly)
    await asyncio.to_thread(client.pump, 5)
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ERR.ENHANCE_YOUR_CALM
    resets = _counter("wardgate_http2_premature_resets_total") - before
    assert 10 <= resets <= 500
    await asyncio.sleep(0.2)
    # Every request the gateway started was cancelled; at most one "wave" of them was
    # in progress at once.
    assert len(gw.access_records()) <= 500
    await _still_serves(gw)


async def test_streams_beyond_the_advertised_limit(upstream, gateway):
    gw = await gateway(upstream, "", http2=_settings(max_concurrent_streams=4))
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    await asyncio.to_thread(
        client.pump, 2, lambda ev: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in ev)
    )
    assert client.conn.remote_settings.max_concurrent_streams == 4
    ids = [client.request("/delay/0.3") for _ in range(4)]
    events = await asyncio.to_thread(
        client.pump, 5, lambda ev: len([e for e in ev if isinstance(e, h2.events.StreamEnded)]) == 4
    )
    assert {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)} == set(ids)
    client.close()
    # A client ignoring the limit (a fifth stream before the first four ended) loses the
    # connection: the gateway does not queue work for it.
    rude = await asyncio.to_thread(RawH2, gw.process.state.listen)
    rude.conn.remote_settings = type(rude.conn.remote_settings)(client=False)  # unlimited
    for _ in range(6):
        rude.request("/delay/1")
    await asyncio.to_thread(rude.pump, 5)
    rude.close()
    goaway = rude.goaway()
    assert goaway is not None and goaway.error_code == ERR.PROTOCOL_ERROR
    await _still_serves(gw)


def _headers_block(encoder: hpack.Encoder, extra: list[tuple[str, str]]) -> bytes:
    base = [(":method", "GET"), (":scheme", "http"), (":authority", "t.local"), (":path", "/echo")]
    return encoder.encode(base + extra)


async def test_continuation_flood_closes_the_connection(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "", http2=_settings())
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    block = _headers_block(hpack.Encoder(), [("x-a", "b")])
    first = hyperframe.frame.HeadersFrame(1, block[:5])
    first.flags.add("END_STREAM")
    frames = [first.serialize()]
    for _ in range(1000):
        frames.append(hyperframe.frame.ContinuationFrame(1, b"\x00" * 16000).serialize())
    start = time.monotonic()

    def flood() -> None:
        with contextlib.suppress(OSError):  # the gateway closes mid-flood: expected
            client.send_raw(b"".join(frames))

    await asyncio.to_thread(flood)
    await asyncio.to_thread(client.pump, 5)
    client.close()
    goaway = client.goaway()
    assert client.closed
    assert goaway is None or goaway.error_code == ERR.PROTOCOL_ERROR
    assert time.monotonic() - start < 5
    assert seen == []
    await _still_serves(gw)


async def test_hpack_bomb_closes_the_connection(recording_upstream, gateway):
    """A 4000-byte header stored once in the dynamic table and referenced 200 times: under
    5 KB on the wire would decode to 800 KB. Decoding stops at maxHeaderListSize."""
    url, seen = recording_upstream
    gw = await gateway(url, "", http2=_settings())
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    encoder = hpack.Encoder()
    block = _headers_block(encoder, [("x-bomb", "a" * 4000)] * 200)
    assert len(block) < 5000
    # Split over CONTINUATION frames within the 16 KiB frame size.
    chunks = [block[i : i + 16000] for i in range(0, len(block), 16000)]
    frame = hyperframe.frame.HeadersFrame(1, chunks[0])
    frame.flags.add("END_STREAM")
    if len(chunks) == 1:
        frame.flags.add("END_HEADERS")
    wire = [frame.serialize()]
    for i, chunk in enumerate(chunks[1:], 1):
        cont = hyperframe.frame.ContinuationFrame(1, chunk)
        if i == len(chunks) - 1:
            cont.flags.add("END_HEADERS")
        wire.append(cont.serialize())
    await asyncio.to_thread(client.send_raw, b"".join(wire))
    await asyncio.to_thread(client.pump, 5)
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ERR.ENHANCE_YOUR_CALM
    assert seen == []
    assert (
        _counter("wardgate_http2_connections_abandoned_total", reason="header_list_too_large") >= 1
    )
    await _still_serves(gw)


@pytest.mark.parametrize("kind", ["settings", "ping"])
async def test_control_frame_floods_close_the_connection(upstream, gateway, kind):
    gw = await gateway(upstream, "", http2=_settings(max_control_frames_per_second=200))
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    if kind == "settings":
        frame = hyperframe.frame.SettingsFrame(0)
    else:
        frame = hyperframe.frame.PingFrame(0)
        frame.opaque_data = b"12345678"
    flood = frame.serialize() * 5000

    def send() -> None:
        with contextlib.suppress(OSError):
            client.send_raw(flood)

    await asyncio.to_thread(send)
    await asyncio.to_thread(client.pump, 5)
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ERR.ENHANCE_YOUR_CALM
    await _still_serves(gw)


async def test_zero_window_stall_resets_the_stream_after_the_idle_timeout(upstream, gateway):
    """A client that opens no flow-control window: the response stalls, the gateway holds
    at most one window of it, and resets the stream after the idle timeout (Envoy's
    stream_idle_timeout), logged with flag SI."""
    gw = await gateway(upstream, "proxy: {timeouts: {idle: 1s}}", http2=_settings())
    client = await asyncio.to_thread(
        RawH2, gw.process.state.listen, True, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
    )
    sid = client.request("/bytes/2000000")
    start = time.monotonic()
    events = await asyncio.to_thread(
        client.pump, 6, lambda ev: any(isinstance(e, h2.events.StreamReset) for e in ev)
    )
    elapsed = time.monotonic() - start
    client.close()
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets and resets[0].stream_id == sid
    assert 0.9 <= elapsed < 5
    assert not any(isinstance(e, h2.events.DataReceived) and e.data for e in events)
    await asyncio.sleep(0.1)
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "SI"
    await _still_serves(gw)


async def test_data_on_stream_zero_is_a_protocol_error(upstream, gateway):
    gw = await gateway(upstream, "", http2=_settings())
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    await asyncio.to_thread(client.send_raw, b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd")
    await asyncio.to_thread(client.pump, 3)
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ERR.PROTOCOL_ERROR
    await _still_serves(gw)
