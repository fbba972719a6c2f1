"""The request-body clock on HTTP/2 streams: a body that stalls is answered 408 like an
HTTP/1.1 one (``proxy.timeouts.requestBody`` plus ``minRequestBodyRate``), and a body that
keeps coming is not cut."""

from __future__ import annotations

import asyncio
import time

import h2.events

from tests.proxy.h2.conftest import RawH2
from wardgate.proxy.h2.settings import H2Settings

HTTP1 = H2Settings(upstream_protocol="http1")
CLOCK = "proxy: {timeouts: {requestBody: 1s}, minRequestBodyRate: 500}\n"


def _status(events: list[h2.events.Event], sid: int) -> str | None:
    for event in events:
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
            return dict(event.headers or ())[":status"]  # type: ignore[arg-type]
    return None


def _stalled_upload(address: str) -> tuple[str | None, float]:
    client = RawH2(address)
    try:
        start = time.monotonic()
        sid = client.request("/upload", method="POST", end=False)
        client.conn.send_data(sid, b"x" * 10)
        client.flush()
        events = client.pump(20, stop=lambda ev: _status(ev, sid) is not None)
        return _status(events, sid), time.monotonic() - start
    finally:
        client.close()


async def test_a_stalled_body_is_answered_408(upstream, gateway):
    gw = await gateway(upstream, CLOCK, http2=HTTP1)
    status, took = await asyncio.to_thread(_stalled_upload, gw.process.state.listen)
    assert status == "408"
    assert took < 15  # the 1 s budget, not the 300 s idle timeout


async def test_a_stalled_body_is_408_when_no_filter_reads_it(upstream, gateway):
    # No body filter: the body streams to the upstream from a task; its clock still runs.
    gw = await gateway(upstream, CLOCK + "waf: {mode: off}\n", http2=HTTP1)
    status, _ = await asyncio.to_thread(_stalled_upload, gw.process.state.listen)
    assert status == "408"


def _steady_upload(address: str) -> str | None:
    client = RawH2(address)
    try:
        sid = client.request("/upload", method="POST", end=False)
        for _ in range(6):  # 3 s at well over 500 B/s: past the 1 s allowance
            client.conn.send_data(sid, b"y" * 2000)
            client.flush()
            time.sleep(0.5)
        client.conn.end_stream(sid)
        client.flush()
        events = client.pump(20, stop=lambda ev: _status(ev, sid) is not None)
        return _status(events, sid)
    finally:
        client.close()


async def test_a_body_at_a_steady_rate_is_not_cut(upstream, gateway):
    gw = await gateway(upstream, CLOCK, http2=HTTP1)
    assert await asyncio.to_thread(_steady_upload, gw.process.state.listen) == "200"
