"""Real HTTP/2 peers for the proxy tests: a grpcio server (h2c upstream) with generic
handlers (no protoc), raw ``h2`` clients over sockets for the attack cases."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

SERVICE = "test.Echo"
BIG = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", BIG),
    ("grpc.max_send_message_length", BIG),
]


@dataclass
class GrpcUpstream:
    address: str
    metadata: list[dict[str, str]] = field(default_factory=list)
    calls: int = 0
    received: list[bytes] = field(default_factory=list)
    """Every message the streaming handlers read, in order."""
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def _handlers(state: GrpcUpstream) -> grpc.GenericRpcHandler:
    def seen(context: grpc.ServicerContext) -> None:
        state.calls += 1
        state.metadata.append(dict(context.invocation_metadata()))  # type: ignore[misc]

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen(context)
        if request == b"fail":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request said fail")
        context.set_trailing_metadata(
            (("x-trailer", "t1"), ("x-sha", hashlib.sha256(request).hexdigest()))
        )
        return request

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen(context)
        state.release.wait(5)
        return b"late"

    def server_stream(request: bytes, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        seen(context)
        for i in range(int(request)):
            yield b"item-%d" % i

    def client_stream(requests, context: grpc.ServicerContext) -> bytes:  # type: ignore[no-untyped-def]
        seen(context)
        parts = []
        for r in requests:
            state.received.append(r)
            parts.append(r)
        return b"%d:%s" % (len(parts), hashlib.sha256(b"".join(parts)).hexdigest().encode())

    def bidi(requests, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        seen(context)
        for r in requests:
            state.received.append(r)
            yield b"echo:" + r

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )


@pytest.fixture
def grpc_upstream() -> Iterator[GrpcUpstream]:
    """A grpcio server speaking h2c on 127.0.0.1, in its own threads."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=CHANNEL_OPTIONS)
    port = server.add_insecure_port("127.0.0.1:0")
    state = GrpcUpstream(f"127.0.0.1:{port}")
    server.add_generic_rpc_handlers((_handlers(state),))
    server.start()
    yield state
    state.release.set()
    server.stop(0)


def method(channel: grpc.aio.Channel, kind: str, name: str):  # type: ignore[no-untyped-def]
    """A bytes-in, bytes-out callable for ``/test.Echo/<name>``."""
    factory = getattr(channel, kind)
    return factory(f"/{SERVICE}/{name}")


class RawH2:
    """A blocking HTTP/2 client over a raw socket, driven frame by frame with ``h2``: for
    the abuse cases no well-behaved client produces."""

    def __init__(
        self, address: str, validate: bool = True, settings: dict[int, int] | None = None
    ) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding="utf-8",
                validate_outbound_headers=validate,
                normalize_outbound_headers=validate,
            )
        )
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)  # type: ignore[arg-type]
        self.flush()
        self.events: list[h2.events.Event] = []
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        end: bool = True,
        extra: list[tuple[str, str]] | None = None,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":scheme", "http"),
            (":authority", "t.local"),
            (":path", path),
        ]
        self.conn.send_headers(sid, headers + (extra or []), end_stream=end)
        self.flush()
        return sid

    def pump(self, until: float = 5.0, stop=None) -> list[h2.events.Event]:  # type: ignore[no-untyped-def]
        """Read and process frames until ``stop(events)`` is true, the peer closes, or
        ``until`` seconds pass. Returns all events so far."""
        deadline = time.monotonic() + until
        while time.monotonic() < deadline and not self.closed:
            if stop is not None and stop(self.events):
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                self.events.extend(self.conn.receive_data(data))
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            self.flush_quietly()
        return self.events

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except OSError:
            self.closed = True

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    def close(self) -> None:
        self.sock.close()
