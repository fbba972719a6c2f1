"""``limits``: request size and shape limits, answered before anything else runs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from wardgate.config.base import SpecModel
from wardgate.config.lattice import LOWER, SUBSET

_METHOD = r"^[A-Z][A-Z0-9_-]{0,31}$"


class LimitsSpec(SpecModel):
    """Limits on what a client may send. Exceeding one is answered locally (414, 431, 413,
    405) and never reaches the upstream. Defaults follow Envoy's HTTP connection manager
    where it has one (60 KiB of headers, 100 headers)."""

    max_request_headers_kb: Annotated[int, Field(ge=1, le=60), LOWER] = 60
    """Total size of the request line's headers, names and values, in KiB (Envoy's
    ``max_request_headers_kb``). Over it: 431."""

    max_headers_count: Annotated[int, Field(ge=1, le=1000), LOWER] = 100
    """Number of request header fields. Over it: 431."""

    max_header_value_bytes: Annotated[int, Field(ge=64, le=61440), LOWER] = 16384
    """Size of one header value in bytes. Over it: 431."""

    max_url_bytes: Annotated[int, Field(ge=64, le=61440), LOWER] = 8192
    """Length of the request target (path and query). Over it: 414."""

    max_request_body_bytes: Annotated[int, Field(ge=0), LOWER] = 104857600
    """Largest request body passed to the upstream (streamed, counted as it flows). A
    declared ``Content-Length`` over it is answered 413 before the body is read; a chunked
    body that grows over it is cut and answered 413 when no response has started yet."""

    allowed_methods: Annotated[
        tuple[Annotated[str, Field(pattern=_METHOD)], ...], Field(min_length=1), SUBSET
    ] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    """Request methods let through. Others are answered 405 with an ``Allow`` header.
    ``TRACE`` and ``CONNECT`` are off by default (cross-site tracing, tunnelling)."""

    @field_validator("allowed_methods")
    @classmethod
    def _unique_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(methods)) != len(methods):
            raise ValueError("allowedMethods lists a method twice")
        return methods
