"""``compile_policy``: a validated :class:`PolicySpec` in, an immutable
:class:`CompiledPolicy` out. Everything expensive happens here, once per policy generation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from wardgate.config.policy import PolicySpec
from wardgate.config.proxy import ProxySpec
from wardgate.filters import headers, jwt_authn, limits, openapi, peer, response_waf, waf
from wardgate.filters.api import FilterCompileError, FilterConfig

FilterCompiler = Callable[[PolicySpec], FilterConfig | None]

FILTER_CHAIN: tuple[FilterCompiler, ...] = (
    limits.compile,
    peer.compile,  # the calling workload (mutual TLS), before the end user (JWT)
    jwt_authn.compile,
    openapi.compile,
    waf.compile,
    headers.compile,  # last: request checks never see headers the policy adds
    response_waf.compile,  # responses only; first on the way back, so `headers` can override
)
"""The chain, in request order. Each entry compiles its section or returns ``None`` (off)."""


PolicyCompileError = FilterCompileError
"""A policy that validates against the schema but cannot be compiled."""


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """One policy generation, shared read-only by every in-flight request that started on it."""

    spec: PolicySpec
    digest: str
    generation: int
    filters: tuple[FilterConfig, ...]
    request_body_limit: int | None
    """Largest request-body prefix any filter needs buffered (``None``: stream only)."""
    response_body_limit: int | None
    max_request_body_bytes: int | None
    """The smallest hard cap on the streamed request body any filter imposes."""

    @property
    def sources(self) -> tuple[tuple[str, str], ...]:
        """Every file a filter read at compile time, as ``(path, sha256 hex)``."""
        return tuple(source for f in self.filters for source in f.sources)

    @property
    def proxy(self) -> ProxySpec:
        return self.spec.proxy

    @property
    def short_digest(self) -> str:
        """The first 12 hex digits of the digest, for logs and headers."""
        return self.digest.removeprefix("sha256:")[:12]

    def filter_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.filters)

    def limitations(self) -> tuple[str, ...]:
        return tuple(f"{f.name}: {text}" for f in self.filters for text in f.limitations())


def _digest(spec: PolicySpec, configs: list[FilterConfig]) -> str:
    """The policy digest; when filters read files (an OpenAPI spec), their contents are
    covered too, so a changed file is a new policy generation."""
    sources = sorted(source for config in configs for source in config.sources)
    if not sources:
        return spec.digest()
    text = spec.digest() + "".join(f"\n{path}\0{digest}" for path, digest in sources)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def compile_policy(spec: PolicySpec, generation: int = 1) -> CompiledPolicy:
    """Compile every section of ``spec`` into the filter chain. Raises
    :class:`PolicyCompileError` with every problem found; never returns a partial chain."""
    configs = []
    problems: list[str] = []
    for compile_section in FILTER_CHAIN:
        try:
            config = compile_section(spec)
        except PolicyCompileError as exc:
            problems.extend(exc.problems)
            continue
        if config is not None:
            configs.append(config)
    if problems:
        raise PolicyCompileError(problems)
    request_limits = [c.request_body_limit for c in configs if c.request_body_limit is not None]
    response_limits = [c.response_body_limit for c in configs if c.response_body_limit is not None]
    caps = [c.max_request_body_bytes for c in configs if c.max_request_body_bytes is not None]
    return CompiledPolicy(
        spec=spec,
        digest=_digest(spec, configs),
        generation=generation,
        filters=tuple(configs),
        request_body_limit=max(request_limits) if request_limits else None,
        response_body_limit=max(response_limits) if response_limits else None,
        max_request_body_bytes=min(caps) if caps else None,
    )
