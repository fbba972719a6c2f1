"""gRPC through the sidecar with real peers: a grpcio client, Wardgate, a grpcio server
(h2c upstream). Every call kind, metadata and trailers, errors, deadlines, large messages,
and the gateway's own refusals as gRPC statuses."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import grpc
import pytest

from tests.filters.jwt_authn.helpers import claims, local_provider, rsa_key
from tests.proxy.h2.conftest import CHANNEL_OPTIONS, RawH2, method
from wardgate.proxy.h2.settings import H2Settings

H2C = H2Settings(upstream_protocol="h2c")
KEY = rsa_key("grpc")


async def _gateway(gateway, grpc_upstream, policy: str = ""):  # type: ignore[no-untyped-def]
    return await gateway(grpc_upstream.url, policy, http2=H2C)


def _channel(gw) -> grpc.aio.Channel:  # type: ignore[no-untyped-def]
    return grpc.aio.insecure_channel(gw.process.state.listen, options=CHANNEL_OPTIONS)


async def test_unary_metadata_and_trailers_pass_unchanged(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        call = method(channel, "unary_unary", "Unary")(b"hello", metadata=(("x-team", "blue"),))
        assert await call == b"hello"
        trailers = dict(await call.trailing_metadata())
        assert trailers["x-trailer"] == "t1"
        assert trailers["x-sha"] == hashlib.sha256(b"hello").hexdigest()
        assert await call.code() == grpc.StatusCode.OK
    seen = grpc_upstream.metadata[-1]
    assert seen["x-team"] == "blue"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert "x-request-id" in seen
    record = gw.access_records()[-1]
    assert record["http.version"] == "2"
    assert record["http.response.status_code"] == 200
    assert record["wardgate"]["replied_by"] == "upstream"


async def test_server_client_and_bidi_streaming(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        items = [m async for m in method(channel, "unary_stream", "ServerStream")(b"5")]
        assert items == [b"item-%d" % i for i in range(5)]

        parts = [os.urandom(1000 + i) for i in range(20)]

        async def gen():  # type: ignore[no-untyped-def]
            for p in parts:
                yield p

        reply = await method(channel, "stream_unary", "ClientStream")(gen())
        assert reply == b"20:" + hashlib.sha256(b"".join(parts)).hexdigest().encode()

        # Bidi, lock-step: each answer arrives before the next message is sent, so
        # nothing on the way buffers the stream.
        call = method(channel, "stream_stream", "Bidi")()
        for i in range(5):
            await call.write(b"m%d" % i)
            assert await asyncio.wait_for(call.read(), 5) == b"echo:m%d" % i
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_errors_from_the_upstream_pass_unchanged(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(b"fail")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "the request said fail"


async def test_deadline_is_honoured(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Slow")(b"x", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 2.5


async def test_grpc_timeout_bounds_the_gateway_wait(gateway, grpc_upstream):
    """The gateway itself answers DEADLINE_EXCEEDED when grpc-timeout passes (a client
    with a generous own deadline still gets the status the gateway was told)."""
    gw = await _gateway(gateway, grpc_upstream)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    sid = client.request(
        "/test.Echo/Slow",
        "POST",
        end=False,
        extra=[("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "300m")],
    )
    client.conn.send_data(sid, b"\x00\x00\x00\x00\x01x", end_stream=True)
    client.flush()
    events = await asyncio.to_thread(
        client.pump, 5, lambda ev: any(type(e).__name__ == "StreamEnded" for e in ev)
    )
    heads = [dict(e.headers) for e in events if type(e).__name__ == "ResponseReceived"]
    assert heads and heads[0]["grpc-status"] == "4"
    client.close()


async def test_four_mib_messages_byte_exact(gateway, grpc_upstream):
    # The WAF inspects up to 8 MiB of a message here (the default 1 MiB would refuse a
    # 4 MiB message as over its inspection limit, as for any body).
    gw = await _gateway(gateway, grpc_upstream, "waf: {requestBodyLimit: 8388608}")
    payload = os.urandom(4 * 1024 * 1024)
    async with _channel(gw) as channel:
        call = method(channel, "unary_unary", "Unary")(payload)
        assert await call == payload
        assert dict(await call.trailing_metadata())["x-sha"] == hashlib.sha256(payload).hexdigest()


async def _trailers_only(gw, path: str, extra=(), body: bytes = b"\x00\x00\x00\x00\x00"):  # type: ignore[no-untyped-def]
    """Send one gRPC request with a raw h2 client; returns (headers, data bytes)."""
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    sid = client.request(
        path,
        "POST",
        end=False,
        extra=[("content-type", "application/grpc"), ("te", "trailers"), *extra],
    )
    client.conn.send_data(sid, body, end_stream=True)
    client.flush()
    events = await asyncio.to_thread(
        client.pump,
        5,
        lambda ev: any(type(e).__name__ in ("StreamEnded", "StreamReset") for e in ev),
    )
    client.close()
    heads = [dict(e.headers) for e in events if type(e).__name__ == "ResponseReceived"]
    data = b"".join(e.data for e in events if type(e).__name__ == "DataReceived")
    return heads[0], data


def _jwt_policy() -> str:
    import json

    return json.dumps(
        {
            "jwt": {
                "providers": {"idp": local_provider(KEY)},
                "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "idp"}}],
            }
        }
    )


async def test_local_replies_are_grpc_statuses_trailers_only(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream, _jwt_policy())
    head, data = await _trailers_only(gw, "/test.Echo/Unary")
    assert head[":status"] == "200"
    assert head["content-type"] == "application/grpc"
    assert head["grpc-status"] == "16"
    assert "jwt" in head["grpc-message"].lower() or "token" in head["grpc-message"].lower()
    assert data == b""  # never a problem+json body
    assert "x-request-id" in head
    assert grpc_upstream.calls == 0
    async with _channel(gw) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(b"x")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details()
        # JWT from the authorization metadata: allowed through.
        token = KEY.sign(claims())
        reply = await method(channel, "unary_unary", "Unary")(
            b"ok", metadata=(("authorization", f"Bearer {token}"),)
        )
        assert reply == b"ok"
    assert grpc_upstream.calls == 1


async def test_waf_on_metadata_is_permission_denied(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(
                b"x", metadata=(("x-q", "1' UNION SELECT password FROM users--"),)
            )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_upstream.calls == 0


async def test_message_over_the_cap_is_resource_exhausted(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream, "limits: {maxRequestBodyBytes: 1000}")
    async with _channel(gw) as channel:
        assert await method(channel, "unary_unary", "Unary")(b"a" * 1000) == b"a" * 1000
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(b"a" * 1001)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # A stream of messages each under the cap passes, whatever its total.
        async def gen():  # type: ignore[no-untyped-def]
            for _ in range(5):
                yield b"b" * 900

        reply = await method(channel, "stream_unary", "ClientStream")(gen())
        assert reply.startswith(b"5:")
    assert grpc_upstream.calls == 2


async def test_upstream_down_is_unavailable(gateway, unused_tcp_port):
    gw = await gateway(f"http://127.0.0.1:{unused_tcp_port}", "", http2=H2C)
    async with _channel(gw) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(b"x")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UF"


def _openapi_policy(paths: dict) -> str:  # type: ignore[type-arg]
    import json

    spec = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths}
    return json.dumps({"openapi": {"inline": spec}})


async def test_openapi_does_not_describe_grpc_and_fails_closed(gateway, grpc_upstream):
    """An OpenAPI allow-list cannot describe a gRPC call: it is refused (404 ->
    UNIMPLEMENTED) unless the spec lists its path, and validate says so."""
    listed = {
        "/test.Echo/Unary": {
            "post": {
                "requestBody": {"content": {"application/grpc": {}}},
                "responses": {"200": {"description": "ok"}},
            }
        }
    }
    gw = await _gateway(
        gateway,
        grpc_upstream,
        _openapi_policy({"/health": {"get": {"responses": {"200": {"description": "ok"}}}}}),
    )
    async with _channel(gw) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(b"x")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    gw2 = await _gateway(gateway, grpc_upstream, _openapi_policy(listed))
    async with _channel(gw2) as channel:
        assert await method(channel, "unary_unary", "Unary")(b"x") == b"x"
    notes = gw2.process.holder.current.limitations()
    assert any("does not apply to gRPC" in n for n in notes)


async def test_wardgate_run_upstream_protocol_auto_end_to_end(gateway_process, grpc_upstream):
    """The real command line: HTTP/2 clients follow to an h2c upstream with ``auto``."""
    proc = gateway_process("--upstream", grpc_upstream.url, "--upstream-protocol", "auto")
    async with grpc.aio.insecure_channel(proc.listen, options=CHANNEL_OPTIONS) as channel:
        assert await method(channel, "unary_unary", "Unary")(b"via-cli") == b"via-cli"
    assert proc.stop() == 0


def test_validate_reports_that_openapi_does_not_apply_to_grpc(tmp_path):
    from tests.conftest import run_wardgate

    policy = tmp_path / "p.yaml"
    policy.write_text(
        _openapi_policy({"/health": {"get": {"responses": {"200": {"description": "ok"}}}}})
    )
    result = run_wardgate("validate", str(policy))
    assert result.returncode == 0, result.stderr
    assert "does not apply to gRPC" in result.stdout


async def test_a_deadline_longer_than_the_route_timeout_is_honoured(gateway, grpc_upstream):
    """grpc-timeout, not proxy.timeouts.request, bounds a gRPC call's wait: a slow call
    with a 3 s deadline survives a 1 s route timeout."""
    gw = await _gateway(gateway, grpc_upstream, "proxy: {timeouts: {request: 1s}}")

    async def release_later() -> None:
        await asyncio.sleep(1.5)
        grpc_upstream.release.set()

    releaser = asyncio.ensure_future(release_later())
    async with _channel(gw) as channel:
        assert await method(channel, "unary_unary", "Slow")(b"x", timeout=3) == b"late"
    await releaser


async def test_calls_cancelled_after_a_while_are_not_rapid_resets(gateway, grpc_upstream):
    """Calls the client cancels after they ran a while (deadlines, user cancels) never
    close the connection as a rapid-reset attack would."""
    from wardgate.proxy.h2.settings import H2Settings as Settings

    gw = await gateway(
        grpc_upstream.url,
        "",
        http2=Settings(
            upstream_protocol="h2c", premature_reset_min_streams=4, premature_reset_max_lifetime=0.1
        ),
    )
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    grpc_head = [("content-type", "application/grpc"), ("te", "trailers")]
    for _ in range(6):
        sid = client.request("/test.Echo/Slow", "POST", end=False, extra=grpc_head)
        client.conn.send_data(sid, b"\x00\x00\x00\x00\x01x", end_stream=True)
        client.flush()
        await asyncio.to_thread(client.pump, 0.3)
        client.conn.reset_stream(sid, 8)
        client.flush()
    sid = client.request("/test.Echo/Unary", "POST", end=False, extra=grpc_head)
    client.conn.send_data(sid, b"\x00\x00\x00\x00\x02ok", end_stream=True)
    client.flush()
    events = await asyncio.to_thread(
        client.pump,
        5,
        lambda ev: any(type(e).__name__ == "StreamEnded" and e.stream_id == sid for e in ev),
    )
    client.close()
    assert client.goaway() is None
    assert any(type(e).__name__ == "DataReceived" and e.stream_id == sid for e in events)


# What the WAF's raw-body rules flag in a binary (gRPC) body: an XML external entity.
ATTACK = b'<!ENTITY % xxe SYSTEM "file:///etc/passwd">'


async def test_waf_sees_every_message_of_a_client_stream(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:

        async def gen():  # type: ignore[no-untyped-def]
            yield b"hello"
            yield b"world"
            yield ATTACK
            yield b"after"

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "stream_unary", "ClientStream")(gen())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A clean stream of many messages still passes whole.
        clean = [b"m%d" % i for i in range(20)]

        async def clean_gen():  # type: ignore[no-untyped-def]
            for m in clean:
                yield m

        reply = await method(channel, "stream_unary", "ClientStream")(clean_gen())
        assert reply == b"20:" + hashlib.sha256(b"".join(clean)).hexdigest().encode()
    # The refused message and those after it never reached the upstream.
    assert ATTACK not in grpc_upstream.received
    assert b"after" not in grpc_upstream.received


async def test_waf_stops_a_bidi_call_whose_later_message_attacks(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        call = method(channel, "stream_stream", "Bidi")()
        await call.write(b"first")
        assert await call.read() == b"echo:first"  # the response has begun
        await call.write(ATTACK)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                message = await asyncio.wait_for(call.read(), 20)
                assert message != b"echo:" + ATTACK
                if message is grpc.aio.EOF:
                    break
        assert err.value.code() != grpc.StatusCode.OK
    assert grpc_upstream.received == [b"first"]


async def test_a_stream_over_the_inspection_limit_follows_the_oversize_action(
    gateway, grpc_upstream
):
    gw = await _gateway(gateway, grpc_upstream, "waf: {requestBodyLimit: 1000}")

    def gen(count: int):  # type: ignore[no-untyped-def]
        async def messages():  # type: ignore[no-untyped-def]
            for _ in range(count):
                yield b"c" * 300

        return messages()

    async with _channel(gw) as channel:
        # 3 x 305 framed bytes are inspected whole; a 4th passes the 1000-byte limit, and
        # the default oversize action refuses what it cannot inspect (fail closed).
        assert (await method(channel, "stream_unary", "ClientStream")(gen(3))).startswith(b"3:")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "stream_unary", "ClientStream")(gen(4))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    allowing = await _gateway(
        gateway,
        grpc_upstream,
        "waf: {requestBodyLimit: 1000, oversizeAction: allowUninspected}",
    )
    async with _channel(allowing) as channel:
        reply = await method(channel, "stream_unary", "ClientStream")(gen(6))
        assert reply.startswith(b"6:")


async def test_every_message_of_a_stream_is_held_to_the_size_cap(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream, "limits: {maxRequestBodyBytes: 1000}")
    async with _channel(gw) as channel:

        async def gen():  # type: ignore[no-untyped-def]
            yield b"a" * 10
            yield b"b" * 10
            yield b"c" * 1001

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "stream_unary", "ClientStream")(gen())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert all(len(m) <= 1000 for m in grpc_upstream.received)


def _pb_string(number: int, value: bytes) -> bytes:
    """A protobuf message with one string field (short values: one-byte length)."""
    assert len(value) < 128
    return bytes((number << 3 | 2, len(value))) + value


async def test_waf_inspects_string_fields_of_protobuf_messages(gateway, grpc_upstream):
    gw = await _gateway(gateway, grpc_upstream)
    async with _channel(gw) as channel:
        unary = method(channel, "unary_unary", "Unary")
        clean = _pb_string(1, b"alice") + _pb_string(2, _pb_string(1, b"hello world"))
        assert await unary(clean) == clean
        attack = _pb_string(1, b"alice") + _pb_string(
            2, _pb_string(1, b"1' UNION SELECT password FROM users--")
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unary(attack)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_upstream.calls == 1
