"""Slow and numerous clients (issue 19, fault 4): a request head or body trickled to hold a
connection is cut with 408, connections over the per-worker cap get a 503, and the admin
port keeps answering while the listener is saturated."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.proxy.stats import metric

FAST_HEADERS = "proxy: {timeouts: {requestHeaders: 500ms}}"


async def _connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything until the gateway closes the connection (fails the test on timeout)."""
    data = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_trickled_request_head_is_answered_408_and_closed(upstream, gateway):
    gw = await gateway(upstream, FAST_HEADERS)
    before = await metric(
        gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_headers"'
    )
    reader, writer = await _connect(gw.process.state.listen)
    start = time.monotonic()
    writer.write(b"GET /echo HTTP/1.1\r\nHo")

    async def trickle() -> None:
        for byte in b"st: a\r\nx-slow: " + b"z" * 100:
            await asyncio.sleep(0.05)
            writer.write(bytes([byte]))

    task = asyncio.create_task(trickle())
    try:
        data = await _read_all(reader, 5)
    finally:
        task.cancel()
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b'"reason":"request_header_timeout"' in data
    assert 0.4 < time.monotonic() - start < 3
    after = await metric(
        gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_headers"'
    )
    assert after == before + 1


async def test_silent_connection_is_closed_without_an_answer(upstream, gateway):
    gw = await gateway(upstream, FAST_HEADERS)
    reader, writer = await _connect(gw.process.state.listen)
    try:
        assert await _read_all(reader, 5) == b""
    finally:
        writer.close()


async def test_idle_keep_alive_is_not_cut_but_a_slow_second_head_is(upstream, gateway):
    gw = await gateway(upstream, FAST_HEADERS)
    reader, writer = await _connect(gw.process.state.listen)
    request = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
    try:
        for _ in range(2):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(0.8)  # idle between requests: longer than requestHeaders
        writer.write(b"GET /echo HTTP/1.1\r\n")  # and then nothing more
        data = await _read_all(reader, 5)
        assert data.startswith(b"HTTP/1.1 408 "), data
    finally:
        writer.close()


async def test_second_head_gets_its_full_time_on_a_keep_alive_connection(upstream, gateway):
    # One timer per connection, re-armed when it fires for a later head: the deadline set
    # at connect (1 s) must not cut short the head of a second request sent 0.5 s later.
    gw = await gateway(upstream, "proxy: {timeouts: {requestHeaders: 1s}}")
    reader, writer = await _connect(gw.process.state.listen)
    try:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        writer.write(b"GET /echo HTTP/1.1\r\n")  # and then nothing more
        data = await _read_all(reader, 5)
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert time.monotonic() - started >= 0.9
    finally:
        writer.close()


BODY_POLICIES = {
    "inspected": "proxy: {timeouts: {requestBody: 500ms}, minRequestBodyRate: 1000}",
    "streamed": "waf: {mode: off}\nproxy: {timeouts: {requestBody: 500ms}, minRequestBodyRate: 1000}",
}


@pytest.mark.parametrize("length", [1000, 200_000], ids=["small", "large"])
@pytest.mark.parametrize("policy", list(BODY_POLICIES), ids=list(BODY_POLICIES))
async def test_trickled_body_is_answered_408(recording_upstream, gateway, policy, length):
    url, seen = recording_upstream
    gw = await gateway(url, BODY_POLICIES[policy])
    before = await metric(gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_body"')
    reader, writer = await _connect(gw.process.state.listen)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length)

    async def trickle() -> None:
        for _ in range(length // 10):
            writer.write(b"0123456789")  # 100 bytes/s: far below 1000
            await asyncio.sleep(0.1)

    task = asyncio.create_task(trickle())
    start = time.monotonic()
    try:
        # Only the response: the connection then lingers (aiohttp reads and drops what the
        # client still sends for a while, so the client sees the 408 rather than a reset).
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 6)
        body = await asyncio.wait_for(reader.readuntil(b"}\n"), 2)
    finally:
        task.cancel()
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"connection: close" in head.lower()
    assert b'"reason":"request_body_timeout"' in body
    assert time.monotonic() - start < 3
    after = await metric(gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_body"')
    assert after == before + 1
    assert all(len(body) < length for _, _, body in seen)  # never a whole body upstream


async def test_body_at_a_modest_rate_goes_through(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, BODY_POLICIES["streamed"])

    async def body():
        for _ in range(20):  # 20 KB in about 1.2 s: longer than requestBody, above the rate
            yield b"x" * 1000
            await asyncio.sleep(0.06)

    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/upload", data=body()) as resp:
            assert resp.status == 200
    assert seen[-1][2] == b"x" * 20000


async def _open_slow_clients(address: str, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _, writer = await _connect(address)
        writer.write(b"GET / HTTP/1.1\r\nHo")  # a head that never completes
        writers.append(writer)
    await asyncio.sleep(0.2)
    return writers


async def test_connections_over_the_cap_get_503_and_admin_answers(upstream, gateway):
    gw = await gateway(upstream, "proxy: {maxConnections: 5}")
    before = await metric(gw.admin_url, "wardgate_downstream_cx_overflow_total")
    holders = await _open_slow_clients(gw.process.state.listen, 5)
    try:
        reader, writer = await _connect(gw.process.state.listen)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        data = await _read_all(reader, 5)
        writer.close()
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b'"reason":"overloaded"' in data
        assert await metric(gw.admin_url, "wardgate_downstream_cx_overflow_total") == before + 1
        assert await metric(gw.admin_url, "wardgate_downstream_cx_active") >= 5
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.admin_url + "/ready") as resp:
                assert resp.status == 200
    finally:
        for holder in holders:
            holder.close()
    await asyncio.sleep(0.3)
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/echo") as resp:
            assert resp.status == 200  # slots are free again


async def test_admin_answers_when_clients_outnumber_file_descriptors(gateway_process, upstream):
    """The probe's fault: more slow clients than descriptors. With 400 descriptors the
    gateway keeps a budget of 8 client connections; 500 clients later, /ready answers."""
    gw = gateway_process("--upstream", upstream, limit_fds=400)
    writers = await _open_slow_clients(gw.listen, 500)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(gw.admin_url + "/ready") as resp:
                assert resp.status == 200
            async with session.get(gw.admin_url + "/stats/prometheus") as resp:
                text = await resp.text()
        overflow = [
            line
            for line in text.splitlines()
            if line.startswith("wardgate_downstream_cx_overflow_total ")
        ]
        assert overflow and float(overflow[0].split()[1]) >= 400
    finally:
        for writer in writers:
            writer.close()
    assert gw.popen.poll() is None
    assert any("maxConnections lowered" in line for line in gw.stderr_lines)


async def test_at_the_cap_an_idle_keep_alive_connection_makes_room(upstream, gateway):
    """Connections held open idle after one request must not lock new clients out: at the
    cap the longest-idle one is closed (as nginx does) and the new client is served."""
    gw = await gateway(upstream, "proxy: {maxConnections: 3}")
    before = await metric(gw.admin_url, "wardgate_downstream_cx_idle_closed_total")
    idle = []
    for _ in range(3):
        reader, writer = await _connect(gw.process.state.listen)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        idle.append((reader, writer))
        await asyncio.sleep(0.05)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/echo") as resp:
                assert resp.status == 200
        oldest_reader = idle[0][0]
        assert await asyncio.wait_for(oldest_reader.read(), 2) == b""  # closed to make room
        assert await metric(gw.admin_url, "wardgate_downstream_cx_idle_closed_total") >= before + 1
    finally:
        for _, writer in idle:
            writer.close()


async def test_closed_connections_leave_no_idle_entry(upstream, gateway):
    gw = await gateway(upstream)
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(gw.url + "/echo") as resp:
                assert resp.status == 200
    _, writer = await _connect(gw.process.state.listen)
    writer.write(b"GET /delay/0.3 HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.sleep(0.1)
    writer.close()  # gone while its request is in flight
    await asyncio.sleep(0.6)
    runner = gw.process._runner
    assert runner is not None
    assert not runner.server.idle  # every client is gone, and so is every idle entry
