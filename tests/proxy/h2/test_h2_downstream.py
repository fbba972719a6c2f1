"""HTTP/2 clients on the proxy listener, in front of an HTTP/1.1 upstream (Envoy's protocol
translation): curl with prior knowledge, and a raw ``h2`` client for what curl does not
do (multiplexing, trailers, refusals)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess

import h2.errors
import h2.events
import pytest

from tests.proxy.h2.conftest import RawH2
from wardgate.proxy.h2.settings import H2Settings

HTTP1 = H2Settings(upstream_protocol="http1")


def _curl_has_http2() -> bool:
    if shutil.which("curl") is None:
        return False
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False)
    return "HTTP2" in out.stdout


needs_curl = pytest.mark.skipif(
    not _curl_has_http2(), reason="this curl has no HTTP/2 support (no HTTP2 in curl --version)"
)


async def _curl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--http2-prior-knowledge",
        "-o",
        "-",
        "-w",
        "\n%{http_version} %{http_code}",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    body, _, tail = out.decode().rpartition("\n")
    version, code = tail.split()
    assert version == "2"
    return int(code), body


@needs_curl
async def test_curl_prior_knowledge_reaches_an_http1_upstream(upstream, gateway):
    gw = await gateway(upstream, "", http2=HTTP1)
    code, body = await _curl(gw.url + "/echo?a=1", "-H", "x-team: blue", "--data-binary", "hello")
    assert code == 200
    echo = json.loads(body)
    assert echo["method"] == "POST"
    assert echo["path"] == "/echo" and echo["query"] == "a=1"
    seen = {n.lower(): v for n, v in echo["headers"]}
    assert seen["host"] == gw.process.state.listen  # from :authority
    assert seen["x-team"] == "blue"
    assert seen["x-forwarded-proto"] == "http"
    assert echo["bodySha256"] == hashlib.sha256(b"hello").hexdigest()
    record = gw.access_records()[-1]
    assert record["http.version"] == "2"
    assert record["http.request.bytes"] == 5


@needs_curl
async def test_same_listener_still_speaks_http1(upstream, gateway):
    gw = await gateway(upstream, "", http2=HTTP1)
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        gw.url + "/echo",
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert out.decode() == "1.1 200"


@needs_curl
async def test_filters_refuse_over_http2_like_over_http1(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "", http2=HTTP1)
    code, body = await _curl(gw.url + "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--")
    assert code == 403
    problem = json.loads(body)
    assert problem["filter"] == "waf"
    assert seen == []
    assert gw.access_records()[-1]["wardgate"]["replied_by"] == "waf"


async def test_multiplexed_streams_on_one_connection(upstream, gateway):
    gw = await gateway(upstream, "", http2=HTTP1)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    ids = [client.request(f"/echo?i={i}") for i in range(20)]

    def all_ended(events: list[h2.events.Event]) -> bool:
        return len({e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)}) == 20

    events = await asyncio.to_thread(client.pump, 10, all_ended)
    client.close()
    bodies: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, h2.events.DataReceived):
            bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
    assert sorted(bodies) == ids
    for i, sid in enumerate(ids):
        assert json.loads(bodies[sid])["query"] == f"i={i}"


async def test_large_bodies_stream_both_ways_with_flow_control(upstream, gateway):
    gw = await gateway(upstream, "waf: {oversizeAction: allowUninspected}", http2=HTTP1)
    payload = os.urandom(3 * 1024 * 1024 + 7)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    sid = client.request("/echo", "POST", end=False, extra=[("content-length", str(len(payload)))])
    sent = 0

    def send_all() -> None:
        nonlocal sent
        while sent < len(payload):
            window = client.conn.local_flow_control_window(sid)
            if window <= 0:
                client.pump(2, lambda ev: client.conn.local_flow_control_window(sid) > 0)
                continue
            size = min(window, client.conn.max_outbound_frame_size, len(payload) - sent)
            client.conn.send_data(
                sid, payload[sent : sent + size], end_stream=sent + size == len(payload)
            )
            sent += size
            client.flush()

    await asyncio.to_thread(send_all)
    events = await asyncio.to_thread(
        client.pump, 10, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
    )
    client.close()
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    echo = json.loads(body)
    assert echo["bodyLength"] == len(payload)
    assert echo["bodySha256"] == hashlib.sha256(payload).hexdigest()


async def test_host_and_authority_that_disagree_are_refused(recording_upstream, gateway):
    """Two names for the target never reach the upstream (the HTTP/2 twin of the
    absolute-form case): the connection is closed with PROTOCOL_ERROR."""
    url, seen = recording_upstream
    gw = await gateway(url, "", http2=HTTP1)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen, False)
    client.request("/a", extra=[("host", "other.example")])
    await asyncio.to_thread(client.pump, 5)
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert seen == []
    # The listener still serves.
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    client.request("/a")
    events = await asyncio.to_thread(
        client.pump, 5, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
    )
    client.close()
    assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert [s[1] for s in seen] == ["/a"]


@pytest.mark.parametrize(
    "extra",
    [
        [("x-a", "1\r\nx-injected: 1")],
        [("transfer-encoding", "chunked")],
        [("connection", "keep-alive")],
        [("content-length", "5")],  # with a 3-byte body: the length lies
        [("x-a", "v\x00")],
    ],
    ids=["crlf-in-value", "transfer-encoding", "connection", "content-length-mismatch", "nul"],
)
async def test_http2_requests_that_would_smuggle_into_http1_never_reach_it(
    recording_upstream, gateway, extra
):
    """HTTP/2 to HTTP/1.1 translation is where request smuggling lives (the 2019-2021
    desync research): field values with line breaks, framing headers, lying lengths."""
    url, seen = recording_upstream
    gw = await gateway(url, "", http2=HTTP1)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen, False)
    sid = client.request("/smuggle", "POST", end=False, extra=extra)
    client.conn.send_data(sid, b"abc", end_stream=True)
    client.flush()
    events = await asyncio.to_thread(
        client.pump,
        5,
        lambda ev: any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) for e in ev),
    )
    client.close()
    heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert not heads or heads[0][":status"] != "200"
    assert seen == []
    await asyncio.sleep(0.1)
    assert seen == []


async def test_policy_header_limits_apply_to_http2(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "limits: {maxHeadersCount: 20, maxUrlBytes: 100}", http2=HTTP1)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    many = client.request("/a", extra=[(f"x-h{i}", "v") for i in range(30)])
    long = client.request("/" + "a" * 200)
    events = await asyncio.to_thread(
        client.pump,
        5,
        lambda ev: len([e for e in ev if isinstance(e, h2.events.StreamEnded)]) == 2,
    )
    client.close()
    status = {
        e.stream_id: dict(e.headers)[":status"]
        for e in events
        if isinstance(e, h2.events.ResponseReceived)
    }
    assert status == {many: "431", long: "414"}
    assert seen == []
