"""WAF test helpers: the shipped rules compiled once, requests run through the filter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from wardgate.config.waf import WafSpec
from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.filters.waf import WafConfig, corpus, placements

CORPUS = (
    Path(__file__).resolve().parents[3].parent / "shared" / "waf-corpus" / "crs-regression.jsonl"
)
"""The shared CRS-derived corpus (``/work/shared`` beside the worktrees, ``../shared`` in CI)."""


def corpus_path() -> Path:
    for candidate in (
        CORPUS,
        Path(__file__).resolve().parents[3] / "shared" / "waf-corpus" / "crs-regression.jsonl",
        Path("/work/shared/waf-corpus/crs-regression.jsonl"),
    ):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("the WAF corpus (shared/waf-corpus/crs-regression.jsonl) is missing")


def waf(**spec: Any) -> WafConfig:
    return WafConfig(WafSpec.model_validate(spec))


@pytest.fixture(scope="session")
def default_waf() -> WafConfig:
    return waf()


def run(
    config: WafConfig,
    target: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | str = b"",
    content_type: str | None = None,
) -> tuple[LocalReply | None, HttpRequest]:
    """The filter's answer for one request, and the request (for its findings)."""
    if isinstance(body, str):
        body = body.encode()
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    pairs.insert(0, ("Host", "app.example"))
    if content_type:
        pairs.append(("Content-Type", content_type))
    if body:
        pairs.append(("Content-Length", str(len(body))))
    path, _, query = target.partition("?")
    request = HttpRequest(
        method=method,
        raw_target=target,
        path=path,
        query=query,
        headers=CIMultiDict(pairs),
        request_id="test",
    )

    async def go() -> LocalReply | None:
        flt = config.create_filter()
        reply = await flt.decode_headers(request)
        if reply is None and body:
            limit = config.spec.request_body_limit
            reply = await flt.decode_body(request, body[:limit], len(body) <= limit)
        return reply

    return asyncio.run(go()), request


def blocked(config: WafConfig, target: str = "/", **kwargs: Any) -> bool:
    reply, _ = run(config, target, **kwargs)
    return reply is not None


def refused_in(config: WafConfig, text: str, where: str) -> list[str]:
    """The rule ids that refused ``text`` placed at ``where`` (one of
    :data:`~wardgate.filters.waf.placements.PLACEMENTS`); empty: let through."""
    record = placements.place(text, where, cls="probe", expect="block", ident="probe")
    assert record is not None
    reply = asyncio.run(corpus.decide(config, record))
    return [v.rule_id for v in reply.violations] if reply is not None else []
