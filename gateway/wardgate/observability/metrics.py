"""Prometheus metrics, ``wardgate_`` prefix, bounded label sets.

With several workers (``wardgate run --workers N``) the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, so every worker writes its samples
to shared files and the admin port aggregates them (:func:`render_prometheus`)."""

from __future__ import annotations

import asyncio
import bisect
import math
import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REQUESTS = Counter(
    "wardgate_requests",
    "Requests answered, by status code class and by who answered: 'upstream', a filter "
    "name, or 'gateway' (upstream failures and protocol errors).",
    ["code_class", "replied_by"],
)
REQUEST_DURATION = Histogram(
    "wardgate_request_duration_seconds",
    "Time from request start to the end of the response.",
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "wardgate_upstream_duration_seconds",
    "Time from forwarding a request to the upstream's response headers.",
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_FAILURES = Counter(
    "wardgate_upstream_failures",
    "Upstream failures by Envoy response flag (UF, UH, UT, UC, UPE).",
    ["flag"],
)
UPSTREAM_PROTOCOL_ERRORS = Counter(
    "wardgate_upstream_protocol_errors",
    "Upstream connections closed for a protocol violation, by kind (excess_data: bytes "
    "after a complete response, which are discarded, never served to the next request; "
    "response_headers_too_large: a response head over the policy's size or field count).",
    ["kind"],
)
DOWNSTREAM_CX_ACTIVE = Gauge(
    "wardgate_downstream_cx_active",
    "Client connections open on the proxy listener.",
    multiprocess_mode="livesum",
)
DOWNSTREAM_CX_OVERFLOW = Counter(
    "wardgate_downstream_cx_overflow",
    "Client connections refused with 503 because the worker was at proxy.maxConnections "
    "(Envoy's downstream_cx_overflow).",
)
DOWNSTREAM_CX_IDLE_CLOSED = Counter(
    "wardgate_downstream_cx_idle_closed",
    "Idle keep-alive client connections closed to make room for a new one at proxy.maxConnections.",
)
DOWNSTREAM_TIMEOUTS = Counter(
    "wardgate_downstream_timeouts",
    "Client connections closed because the client was too slow, by kind (request_headers: "
    "proxy.timeouts.requestHeaders; request_body: requestBody and minRequestBodyRate; "
    "stream_idle: a request body silent for proxy.timeouts.idle).",
    ["kind"],
)
DOWNSTREAM_PROTOCOL_ERRORS = Counter(
    "wardgate_downstream_protocol_errors",
    "Client requests the HTTP parser refused (answered 400, 414 or 431 and closed), by "
    "kind (the reply's reason): bad_request, url_too_long, headers_too_large, too_many_headers.",
    ["kind"],
)
FILTER_ERRORS = Counter(
    "wardgate_filter_errors",
    "Exceptions inside filters (each refused the request: fail closed).",
    ["filter"],
)
DETECTIONS = Counter(
    "wardgate_detections",
    "Violations found in detect mode (logged, request let through), by filter.",
    ["filter"],
)
RELOADS = Counter(
    "wardgate_policy_reloads",
    "Policy reload attempts by result: success, unchanged, failure.",
    ["result"],
)
POLICY_GENERATION = Gauge(
    "wardgate_policy_generation",
    "Generation of the policy in use (1 at start, +1 per successful reload).",
    multiprocess_mode="livemax",
)
H2_CONNECTIONS = Gauge(
    "wardgate_http2_connections",
    "Client connections speaking HTTP/2 now.",
    multiprocess_mode="livesum",
)
H2_REFUSED_STREAMS = Counter(
    "wardgate_http2_refused_streams",
    "HTTP/2 streams refused (RST_STREAM REFUSED_STREAM) because the connection already had "
    "maxConcurrentStreams streams in progress.",
)
H2_PREMATURE_RESETS = Counter(
    "wardgate_http2_premature_resets",
    "HTTP/2 streams the client reset before their response was complete.",
)
H2_CONNECTIONS_ABANDONED = Counter(
    "wardgate_http2_connections_abandoned",
    "HTTP/2 connections closed by the gateway for a violation, an attack or a stalled request "
    "head, by reason (protocol_error, too_many_streams, header_list_too_large, "
    "control_frame_flood, premature_resets, outbound_buffer, request_header_timeout).",
    ["reason"],
)


TLS_HANDSHAKES = Counter(
    "wardgate_tls_handshakes",
    "Downstream TLS handshakes by result (success, failure) and reason (ok, unknown_ca, "
    "expired, not_yet_valid, bad_key_usage, no_client_certificate, old_protocol, "
    "sni_mismatch, plain_http, timeout, closed, other).",
    ["result", "reason"],
)
TLS_RELOADS = Counter(
    "wardgate_tls_certificate_reloads",
    "Reloads of the listener's certificate, key and client CA by result: success, failure "
    "(the last good certificate stays in use).",
    ["result"],
)
UPSTREAM_TLS_FAILURES = Counter(
    "wardgate_upstream_tls_failures",
    "Upstream connections refused because the TLS handshake or certificate verification "
    "failed (answered 503 UF).",
)
TLS_CERT_NOT_AFTER = Gauge(
    "wardgate_tls_certificate_expiry_timestamp_seconds",
    "notAfter of the listener certificate in use, as a Unix time.",
    multiprocess_mode="livemin",
)


_REQUEST_COUNTERS: dict[tuple[str, str], Any] = {}


class _Batch:
    """The per-request samples of one event-loop iteration, added to the metrics once at
    its end (:func:`flush`): under load one iteration finishes many requests, and a
    Prometheus update (a lock, a bucket search in Python) per sample per request was a
    measurable part of a pass-through request's cost (issue 17)."""

    __slots__ = ("request_seconds", "requests", "scheduled", "upstream_seconds")

    def __init__(self) -> None:
        self.request_seconds: list[float] = []
        self.upstream_seconds: list[float] = []
        self.requests: dict[tuple[int, str], int] = {}
        self.scheduled = False


_batch = _Batch()


def _schedule() -> None:
    """Flush at the end of this loop iteration; at once outside an event loop."""
    loop = asyncio._get_running_loop()  # C-level, no exception when there is none
    if loop is None:
        flush()
    else:
        _batch.scheduled = True
        loop.call_soon(flush)


def count_request(status: int, replied_by: str) -> None:
    """Count one answered request (``wardgate_requests_total``)."""
    key = (status, replied_by)
    _batch.requests[key] = _batch.requests.get(key, 0) + 1
    if not _batch.scheduled:
        _schedule()


def observe_request_seconds(seconds: float) -> None:
    """One request's duration (``wardgate_request_duration_seconds``)."""
    _batch.request_seconds.append(seconds)
    if not _batch.scheduled:
        _schedule()


def observe_upstream_seconds(seconds: float) -> None:
    """One upstream's time to response headers (``wardgate_upstream_duration_seconds``)."""
    _batch.upstream_seconds.append(seconds)
    if not _batch.scheduled:
        _schedule()


def flush() -> None:
    """Add the pending samples to the metrics (runs at the end of every loop iteration that
    had any, and before every scrape). Counts, sums and buckets come out exactly as if
    each sample had been recorded on its own (the sum up to float rounding)."""
    global _batch  # swapped whole: the next samples start a new batch
    batch, _batch = _batch, _Batch()
    _add_observations(REQUEST_DURATION, batch.request_seconds)
    _add_observations(UPSTREAM_DURATION, batch.upstream_seconds)
    for (status, replied_by), number in batch.requests.items():
        key = (code_class(status), replied_by)
        child = _REQUEST_COUNTERS.get(key)
        if child is None:
            child = _REQUEST_COUNTERS[key] = REQUESTS.labels(code_class=key[0], replied_by=key[1])
        child.inc(number)


def _add_observations(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one update of the sum and of
    each bucket hit. Prometheus files a sample under the first bucket whose upper bound
    is >= it (``bisect_left``); the last bound is +Inf. Uses the client's value objects
    (``_sum``, ``_buckets``, ``_upper_bounds``): tests/observability/test_metrics_batch.py
    pins the result against ``observe``."""
    if not values:
        return
    bounds = histogram._upper_bounds
    hits = [0] * len(bounds)
    for value in values:
        hits[bisect.bisect_left(bounds, value)] += 1
    histogram._sum.inc(math.fsum(values))
    buckets = histogram._buckets
    for index, number in enumerate(hits):
        if number:
            buckets[index].inc(number)


def code_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def render_prometheus() -> bytes:
    """Prometheus text exposition of every metric, aggregated across workers when running
    with several."""
    flush()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def render_stats() -> str:
    """Envoy ``/stats``-style text (``name.label.value: number`` per line) of the same
    samples as :func:`render_prometheus`. Histograms are summarised by count and sum."""
    lines = []
    for line in render_prometheus().decode().splitlines():
        if not line or line.startswith("#") or "_bucket{" in line or "_created" in line:
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        parts = [name.replace("_", ".", 1)]
        for item in labels.rstrip("}").split(","):
            if "=" in item:
                key, _, val = item.partition("=")
                parts.append(f"{key}.{val.strip(chr(34))}")
        number = float(value)
        lines.append(f"{'.'.join(parts)}: {int(number) if number.is_integer() else number}")
    return "\n".join(sorted(lines)) + "\n"
