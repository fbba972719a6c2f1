"""The request body of one HTTP/2 exchange on its way up: the prefix the body filters see,
the body clock (``proxy.timeouts.requestBody`` and ``minRequestBodyRate``, as on HTTP/1.1),
the body cap, and for gRPC the per-message cap and the inspection of every message of a
streaming call (:class:`MessageInspector`)."""

from __future__ import annotations

from wardgate.filters.api import LocalReply
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.h2 import grpc
from wardgate.proxy.h2.calls import Downstream, UpstreamCall
from wardgate.proxy.timeouts import BodyClock
from wardgate.runtime import RequestPipeline


class BodyRefused(Exception):
    """The request body (or one gRPC message) is refused: ``reply`` says why."""

    def __init__(self, reply: LocalReply) -> None:
        self.reply = reply
        super().__init__(reply.reason)


class BodyTimedOut(Exception):
    """The client did not send its body in time (the body clock ran out): 408."""


async def read_chunk(stream: Downstream, clock: BodyClock, idle: float) -> bytes:
    """The next body chunk within the body clock; :class:`BodyTimedOut` when it ran out.
    A body already received whole never waits: read without arming the clock's timer."""
    if stream.complete_body_bytes is not None:
        return await stream.read(idle)
    try:
        return await clock.read(stream.read(idle))
    except TimeoutError:
        raise BodyTimedOut from None


async def read_prefix(
    stream: Downstream,
    limit: int,
    clock: BodyClock,
    idle: float,
    scanner: grpc.MessageScanner | None,
) -> tuple[bytes, bool]:
    """Up to ``limit + 1`` body bytes for the filters' body phase, and whether that is the
    whole body.

    For gRPC the body phase first sees whole messages up to the first message boundary (a
    streaming call may wait for a response before it sends more, and must not deadlock on
    the gateway); ``complete`` is true when the prefix ends with a whole message within
    ``limit``. Later messages are shown as they come (:class:`MessageInspector`)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await read_chunk(stream, clock, idle)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
        if scanner is not None:
            too_big = scanner.feed(chunk)
            if too_big is not None:
                raise BodyRefused(message_too_large(too_big, scanner.limit))
            if scanner.at_boundary:
                return b"".join(parts), size <= limit
    return b"".join(parts), False


class MessageInspector:
    """Shows every later message of a gRPC call to the body filters before it goes up.

    Bytes are held until their message is whole, inspected (``decode_body`` with the framed
    message, ``complete=True``) and only then released for the upstream, so no message a
    filter refuses reaches it. The filters see at most ``budget`` bytes in all (the
    policy's inspection limit, the first messages included): the message that would pass
    it is shown as a cut prefix (``complete=False``), so the policy's own oversize action
    decides (the WAF's ``reject`` refuses the call, fail closed; ``pass`` lets it through
    uninspected, logged), and the rest of the call streams without inspection. Memory held
    is at most one message within the budget."""

    __slots__ = ("_budget", "_done", "_pending", "_pipeline", "messages")

    def __init__(self, pipeline: RequestPipeline, budget: int) -> None:
        self._pipeline = pipeline
        self._budget = budget
        self._pending = bytearray()
        self._done = budget <= 0
        self.messages = 0

    async def take(self, chunk: bytes) -> bytes:
        """Feed one chunk; return the bytes that may go up now (possibly none).
        :class:`BodyRefused` when a filter refuses a message."""
        if self._done:
            return chunk
        pending = self._pending
        pending += chunk
        out = bytearray()
        while len(pending) >= grpc.MESSAGE_HEADER_BYTES:
            size = grpc.MESSAGE_HEADER_BYTES + int.from_bytes(pending[1:5], "big")
            if size > self._budget:
                await self._judge(bytes(pending[: self._budget]), complete=False)
                self._done = True
                out += pending
                pending.clear()
                break
            if len(pending) < size:
                break
            message = bytes(pending[:size])
            del pending[:size]
            self._budget -= size
            self.messages += 1
            await self._judge(message, complete=True)
            out += message
        return bytes(out)

    def rest(self) -> bytes:
        """Bytes still held when the body ended (a cut last message: the upstream judges
        the framing, as without the gateway)."""
        held = bytes(self._pending)
        self._pending.clear()
        return held

    async def _judge(self, body: bytes, complete: bool) -> None:
        reply = await self._pipeline.decode_body(body, complete)
        if reply is not None:
            raise BodyRefused(reply)


async def send_body(
    stream: Downstream,
    up: UpstreamCall,
    pipeline: RequestPipeline,
    prefix: bytes,
    scanner: grpc.MessageScanner | None,
    inspector: MessageInspector | None,
    clock: BodyClock,
) -> None:
    """Stream the request body up as it arrives (flow control both ways), counted against
    the body cap, or for gRPC against the per-message cap (every message) and shown to the
    body filters message by message (``inspector``)."""
    idle = pipeline.policy.proxy.timeouts.idle
    cap = pipeline.policy.max_request_body_bytes
    sent = 0
    chunk = prefix
    scanned = bool(prefix)  # the prefix was scanned and inspected when it was read
    while True:
        if chunk:
            sent += len(chunk)
            if scanner is not None and not scanned:
                too_big = scanner.feed(chunk)
                if too_big is not None:
                    raise BodyRefused(message_too_large(too_big, cap))
                if inspector is not None:
                    chunk = await inspector.take(chunk)
            elif scanner is None and (over := pipeline.check_body_size(sent)) is not None:
                raise BodyRefused(over)
            if chunk:
                await up.send(chunk, idle)
        scanned = False
        chunk = await read_chunk(stream, clock, idle)
        if not chunk:
            break
    if inspector is not None and (held := inspector.rest()):
        await up.send(held, idle)
    up.end(stream.trailers or None)


async def read_response_prefix(up: UpstreamCall, limit: int, idle: float) -> tuple[bytes, bool]:
    """Up to ``limit + 1`` bytes of the response body, and whether it all fit in ``limit``."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await up.read(idle)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


def message_too_large(size: int, cap: int | None) -> LocalReply:
    return LocalReply(
        413,
        "limits",
        "message_too_large",
        f"a gRPC message of {size} bytes is larger than {cap} bytes",
    )


def body_timed_out() -> LocalReply:
    """HTTP/1.1's answer to a body that did not arrive in time (Envoy's ``SI`` flag)."""
    return LocalReply(
        408,
        "gateway",
        "request_body_timeout",
        "the request body did not arrive in time",
        response_flag=ResponseFlag.STREAM_IDLE_TIMEOUT,
    )
