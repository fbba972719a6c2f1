"""HTTP connection manager semantics shared by every adapter (native proxy, ext_authz,
offline explain): hop-by-hop header removal, ``x-request-id``, ``x-forwarded-for`` and
``x-forwarded-proto``, as Envoy's HTTP connection manager does them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from wardgate.config.proxy import ProxySpec

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "expect",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 7.6.1, plus
``Proxy-*`` and ``Expect``, which the gateway answers itself)."""


def strip_hop_by_hop(
    headers: CIMultiDict[str] | CIMultiDictProxy[str] | Iterable[tuple[str, str]],
) -> CIMultiDict[str]:
    """A copy of ``headers`` (a multidict or ``(name, value)`` pairs) without hop-by-hop
    fields, including every field that ``Connection`` names and any ``Proxy-*`` field."""
    out: CIMultiDict[str] = CIMultiDict(headers)  # a C-level copy, then removals
    # The names lowercased in one C-level pass: the common message has none of the
    # fields to remove, and then nothing else runs (this is on every request and response).
    lowered = "\n" + "\n".join(out).lower()
    if "\nproxy-" not in lowered and HOP_BY_HOP.isdisjoint(lowered.split("\n")):
        return out
    named = out.getall("connection", ())
    for name in HOP_BY_HOP:
        out.popall(name, None)
    for value in named:
        for token in value.split(","):
            out.popall(token.strip(), None)
    for name in [k for k in out if k[:6].lower() == "proxy-"]:
        out.popall(name, None)
    return out


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable() and " " not in value


class RequestId(NamedTuple):
    """The ``x-request-id`` in force, and whether the gateway generated it."""

    value: str
    generated: bool

    @property
    def vouched(self) -> frozenset[tuple[str, str]]:
        """``HttpRequest.vouched`` for it: the header, when the gateway made the value (a
        UUID of its own, not client text), else nothing."""
        return frozenset({("x-request-id", self.value)}) if self.generated else frozenset()


def settle_request_id(headers: CIMultiDict[str], spec: ProxySpec) -> RequestId:
    """Keep a well-formed client ``x-request-id`` when the policy says so, else set a new
    UUID4. Returns the id in force and whether it is new."""
    current = headers.get("x-request-id")
    if spec.preserve_external_request_id and current is not None and _valid_request_id(current):
        if len(headers.getall("x-request-id")) > 1:
            headers["x-request-id"] = current
        return RequestId(current, generated=False)
    request_id = new_request_id()
    headers["x-request-id"] = request_id
    return RequestId(request_id, generated=True)


def ensure_request_id(headers: CIMultiDict[str], spec: ProxySpec) -> str:
    """:func:`settle_request_id`'s id in force."""
    return settle_request_id(headers, spec).value


_RANDOM_BATCH = 16 * 256
_random = b""
_random_at = _RANDOM_BATCH


def new_request_id() -> str:
    """A random UUID4 as text, like ``str(uuid.uuid4())`` (same source, ``os.urandom``) but
    several times cheaper on every request: the random bytes are fetched 256 ids at a
    time and formatted directly, without a ``UUID`` object."""
    global _random, _random_at  # noqa: PLW0603 - a per-process buffer
    if _random_at >= _RANDOM_BATCH:
        _random, _random_at = os.urandom(_RANDOM_BATCH), 0
    raw = _random[_random_at : _random_at + 16]
    _random_at += 16
    text = raw.hex()
    # Version 4 in the 13th digit, variant 10xx in the 17th (RFC 9562 5.4).
    variant = "89ab"[int(text[16], 16) & 3]
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{variant}{text[17:20]}-{text[20:]}"


def apply_forwarded_headers(
    headers: CIMultiDict[str], spec: ProxySpec, remote_address: str, scheme: str
) -> str:
    """Append ``remote_address`` to ``x-forwarded-for`` and settle ``x-forwarded-proto``.
    Returns the trusted client address: with ``xffNumTrustedHops`` = N, the (N)th address
    from the right of the original header (Envoy's rule), else the peer address."""
    existing = [
        part.strip()
        for value in headers.getall("x-forwarded-for", ())
        for part in value.split(",")
        if part.strip()
    ]
    client = remote_address
    if spec.xff_num_trusted_hops > 0 and len(existing) >= spec.xff_num_trusted_hops:
        client = existing[-spec.xff_num_trusted_hops]
    headers["x-forwarded-for"] = (
        ", ".join([*existing, remote_address]) if existing else (remote_address)
    )
    if spec.xff_num_trusted_hops == 0 or "x-forwarded-proto" not in headers:
        headers["x-forwarded-proto"] = scheme
    return client
