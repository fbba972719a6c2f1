"""HTTP/2 settings of the listener and the limits that defend it (Envoy's
``http2_protocol_options`` and its overload defences), with their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UpstreamProtocol = Literal["http1", "h2c", "auto"]


@dataclass(frozen=True, slots=True)
class H2Settings:
    """One listener's HTTP/2 behaviour. Every field has a safe default; ``wardgate run``
    exposes the ones a user tunes (``--http2-*``)."""

    max_concurrent_streams: int = 100
    """``SETTINGS_MAX_CONCURRENT_STREAMS`` advertised to clients, and the most streams of
    one connection the gateway works on at once (streams the client already reset but
    whose work is still being cancelled count: the rapid-reset defence). A new stream over
    it is refused with ``RST_STREAM(REFUSED_STREAM)``; a client retries it safely. Raise it
    when a client multiplexes more concurrent calls on one connection (Envoy's default is
    2147483647; 100 is nghttp2's and most servers')."""

    initial_stream_window: int = 1024 * 1024
    """``SETTINGS_INITIAL_WINDOW_SIZE``: request body bytes one stream may send before the
    gateway has passed them on (memory per stream)."""

    initial_connection_window: int = 4 * 1024 * 1024
    """The connection-level receive window (memory per connection)."""

    max_frame_size: int = 16384
    """``SETTINGS_MAX_FRAME_SIZE`` (the protocol minimum, as Envoy)."""

    max_header_list_size: int = 96 * 1024
    """``SETTINGS_MAX_HEADER_LIST_SIZE``: decoded header bytes (name + value + 32 per
    field) of one request. Above every limit a policy can set, so that the limits filter
    answers 431 with the policy's own numbers; a header block over it (an HPACK bomb)
    closes the connection with ``ENHANCE_YOUR_CALM``."""

    header_table_size: int = 4096
    """``SETTINGS_HEADER_TABLE_SIZE``: the HPACK dynamic table the client may use."""

    max_control_frames_per_second: int = 1000
    """SETTINGS, PING, PRIORITY and empty DATA frames a client may send per second
    (sustained; bursts up to the same number). Over it the connection is closed with
    ``GOAWAY(ENHANCE_YOUR_CALM)``: settings and ping floods, CVE-2019-9512/9515/9518."""

    premature_reset_min_streams: int = 100
    """Streams a connection opens before the premature-reset ratio is judged."""

    premature_reset_max_lifetime: float = 1.0
    """A stream reset by the client within this many seconds of opening, before its
    response was complete, is a premature reset (Envoy's
    ``premature_reset_min_stream_lifetime_seconds``)."""

    premature_reset_ratio: float = 0.5
    """When more than this share of a connection's streams were reset by the client before
    their response was complete, the connection is closed with ``GOAWAY(ENHANCE_YOUR_CALM)``
    (rapid reset, CVE-2023-44487; Envoy's ``premature_reset`` overload defence)."""

    max_outbound_buffer: int = 8 * 1024 * 1024
    """Bytes the gateway queues for a client that does not read. Over it the connection is
    closed (a client acknowledging nothing cannot make the gateway buffer without bound)."""

    connection_idle_timeout: float = 3600.0
    """A connection without streams for this long is closed with ``GOAWAY(NO_ERROR)``."""

    upstream_protocol: UpstreamProtocol = "http1"
    """``http1`` (default, as an Envoy cluster without ``http2_protocol_options``):
    HTTP/1.1 to the upstream whatever the client spoke; ``h2c``: HTTP/2 with prior
    knowledge; ``auto``: the client's protocol (Envoy's ``use_downstream_protocol_config``).
    gRPC needs ``auto`` or ``h2c``."""
