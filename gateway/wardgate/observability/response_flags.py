"""Envoy's response flags (``%RESPONSE_FLAGS%`` in its access log): the short codes that
say why a request ended the way it did, written into Wardgate's access log, the
``wardgate_upstream_failures_total{flag}`` metric and local replies.

The values are Envoy's own spellings, so dashboards and log queries written for Envoy
read Wardgate's the same. A :class:`ResponseFlag` is a ``str``: it compares equal to its
code and serialises as it."""

from __future__ import annotations

from enum import StrEnum


class ResponseFlag(StrEnum):
    """The response flags Wardgate sets (a subset of Envoy's)."""

    NONE = ""
    """Nothing to say: the upstream answered, or a filter refused with its own flag."""
    UPSTREAM_CONNECTION_FAILURE = "UF"
    """No connection to the upstream could be made (refused, connect timeout, TLS)."""
    NO_HEALTHY_UPSTREAM = "UH"
    """The upstream's name did not resolve: no host to send the request to."""
    UPSTREAM_REQUEST_TIMEOUT = "UT"
    """The upstream did not answer (or send more body) in time."""
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    """The upstream connection was reset or closed before the response ended."""
    UPSTREAM_PROTOCOL_ERROR = "UPE"
    """The upstream's response was not valid HTTP (or over the response-head limits)."""
    OVERLOAD_MANAGER = "OM"
    """A connection over the connection cap was refused."""
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"
    """The client went away, or its request body could not be read."""
    DOWNSTREAM_PROTOCOL_ERROR = "DPE"
    """The client's request was malformed or ambiguous (and internal failures)."""
    STREAM_IDLE_TIMEOUT = "SI"
    """The client stalled: its request body (or an HTTP/2 stream) went idle too long."""
    UNAUTHORIZED_EXTERNAL_SERVICE = "UAEX"
    """A policy refusal (Envoy's flag for a request its ext_authz service denied)."""
