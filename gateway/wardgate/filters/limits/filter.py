"""Request limits: URL length (414), header count and size (431), declared body size (413),
method allow-list (405). The streamed-body cap is enforced through
:attr:`FilterConfig.max_request_body_bytes` by the request pipeline, on the bytes the
adapter counts (only it sees them flow), with the same 413 (:func:`body_too_large`)."""

from __future__ import annotations

from wardgate.config.policy import PolicySpec
from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply, Violation

NAME = "limits"


class LimitsConfig(FilterConfig):
    """Compiled limits: plain integers and a frozenset, checked in O(headers)."""

    name = NAME

    def __init__(self, policy: PolicySpec) -> None:
        spec = policy.limits
        self.max_header_bytes = spec.max_request_headers_kb * 1024
        self.max_headers_count = spec.max_headers_count
        self.max_header_value_bytes = spec.max_header_value_bytes
        self.max_url_bytes = spec.max_url_bytes
        self.max_request_body_bytes: int = spec.max_request_body_bytes
        self.allowed_methods = frozenset(spec.allowed_methods)
        self.allow_header = ", ".join(spec.allowed_methods)
        self._filter = LimitsFilter(self)

    def create_filter(self) -> HttpFilter:
        return self._filter  # stateless: one instance serves every request


class LimitsFilter(HttpFilter):
    """Stateless: every check reads only the request and the config."""

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        return check_request(self.config, request)


def check_request(config: LimitsConfig, request: HttpRequest) -> LocalReply | None:
    """The first limit the request breaks, as a local reply; ``None`` when within limits."""
    if len(request.raw_target) > config.max_url_bytes:
        return _reply(
            414,
            "url_too_long",
            "url",
            f"the request target is longer than {config.max_url_bytes} bytes",
        )
    headers = request.headers
    if len(headers) > config.max_headers_count:
        return _reply(
            431,
            "too_many_headers",
            "headers",
            f"more than {config.max_headers_count} header fields",
        )
    # Sizes summed and compared by C loops (this runs on every request); the slow loop
    # below only runs to name the header that is too long.
    values = headers.values()
    if max(map(len, values), default=0) > config.max_header_value_bytes:
        for name, value in headers.items():
            if len(value) > config.max_header_value_bytes:
                return _reply(
                    431,
                    "header_value_too_large",
                    f"header:{name.lower()}",
                    f"a header value is longer than {config.max_header_value_bytes} bytes",
                )
    total = sum(map(len, headers.keys())) + sum(map(len, values))
    if total > config.max_header_bytes:
        return _reply(
            431,
            "headers_too_large",
            "headers",
            f"the headers are larger than {config.max_header_bytes // 1024} KiB",
        )
    if request.method not in config.allowed_methods:
        return LocalReply(
            status=405,
            filter=NAME,
            reason="method_not_allowed",
            detail=f"method {_printable(request.method)} is not allowed",
            violations=(Violation("limits.allowedMethods", "method", "method not allowed"),),
            headers=(("allow", config.allow_header),),
        )
    declared = headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > config.max_request_body_bytes
    ):
        return body_too_large(config.max_request_body_bytes)
    return None


def body_too_large(cap: int) -> LocalReply:
    """The one 413 for a request body over ``maxRequestBodyBytes``, whether its declared
    ``Content-Length`` says so (here) or the bytes counted on the way prove it (the
    request pipeline, :meth:`wardgate.runtime.RequestPipeline.check_body_size`): every
    adapter and ``wardgate explain`` answer with these words."""
    return _reply(413, "body_too_large", "body", f"the request body is larger than {cap} bytes")


def _reply(status: int, reason: str, location: str, detail: str) -> LocalReply:
    rule = {
        "url_too_long": "limits.maxUrlBytes",
        "too_many_headers": "limits.maxHeadersCount",
        "header_value_too_large": "limits.maxHeaderValueBytes",
        "headers_too_large": "limits.maxRequestHeadersKb",
        "body_too_large": "limits.maxRequestBodyBytes",
    }[reason]
    return LocalReply(
        status=status,
        filter=NAME,
        reason=reason,
        detail=detail,
        violations=(Violation(rule, location, detail),),
    )


def _printable(method: str) -> str:
    return method[:32] if method.isascii() and method.isprintable() else "(invalid)"


def compile(policy: PolicySpec) -> LimitsConfig:
    """Limits are always in the chain: there is no way to turn them off, only to raise them."""
    return LimitsConfig(policy)
