"""Where a request's time goes: the issue 17 policies in process, under ``cProfile``.

Runs the GET (694-byte bearer token) or the 1 KiB JSON POST of ``make bench`` through
:class:`~wardgate.runtime.chain.RequestPipeline` with one of the bench policies (``limits``,
``waf``, ``full`` = JWT + OpenAPI + default WAF) and prints the functions that took the most
time, and the mean µs per request without the profiler. Filters only: the proxy's socket
work is not in it (profile the server for that).

Usage: ``python bench/profile_policy.py [--policy full] [--kind GET|POST] [--requests N]
[--rounds N] [--unique] [--by-filter] [--top N]``; ``--unique`` makes the query value and token differ per
request (a new token each time costs a signature check: it measures the WAF without the
memo's help for short values, with the same token's signature verified once). The timing is
the median and the minimum of ``--rounds`` rounds of ``--requests`` requests (on a shared
machine the minimum is the steadier figure); ``--by-filter`` adds the CPU µs per request of
each filter's header and body phase (the rest is the chain itself); ``--top 0`` skips the
profile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import pstats
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT)]

from bench.harness.workload import (  # noqa: E402
    full_policy,
    json_body,
    jwt_material,
    limits_policy,
    waf_policy,
)
from multidict import CIMultiDict  # noqa: E402

from wardgate.config import PolicySpec  # noqa: E402
from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply  # noqa: E402
from wardgate.runtime import RequestPipeline, compile_policy  # noqa: E402
from wardgate.runtime.compiled import CompiledPolicy  # noqa: E402


def setup(args: argparse.Namespace) -> tuple[CompiledPolicy, str]:
    """The compiled policy ``args.policy`` and a bearer token it accepts."""
    jwks, token = jwt_material()
    doc = {"limits": limits_policy, "waf": waf_policy}.get(args.policy, lambda: None)()
    return compile_policy(PolicySpec.model_validate(doc or full_policy(jwks))), token


async def run(args: argparse.Namespace, policy: CompiledPolicy, token: str) -> float:
    """Mean CPU µs per request over ``args.requests`` requests (process CPU time, not wall
    time: on a shared machine other processes then count far less)."""
    body = json_body(1024)
    start = time.process_time()
    for number in range(args.requests):
        query = f"x={number}" if args.unique else "x=1"
        headers = CIMultiDict(
            {
                "host": "127.0.0.1:8080",
                "authorization": f"Bearer {token}",
                "user-agent": "wrk",
            }
        )
        method = "GET"
        if args.kind == "POST":
            method = "POST"
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
        request = HttpRequest(method, f"/bench?{query}", "/bench", query, headers)
        reply = await RequestPipeline(policy, request).decode_request(
            body if method == "POST" else b""
        )
        if reply is not None:
            raise SystemExit(f"refused: {reply}")
    return (time.process_time() - start) / args.requests * 1e6


class _Timed(HttpFilter):
    """A filter whose request phases add their CPU time to ``spent[(filter, phase)]``."""

    def __init__(self, name: str, inner: HttpFilter, spent: Counter[tuple[str, str]]) -> None:
        self.name, self.inner, self.spent = name, inner, spent

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        start = time.process_time()
        reply = await self.inner.decode_headers(request)
        self.spent[(self.name, "headers")] += time.process_time() - start
        return reply

    async def decode_body(
        self, request: HttpRequest, body: bytes, complete: bool
    ) -> LocalReply | None:
        start = time.process_time()
        reply = await self.inner.decode_body(request, body, complete)
        self.spent[(self.name, "body")] += time.process_time() - start
        return reply


class _TimedConfig(FilterConfig):
    """``config`` with its per-request filters wrapped in :class:`_Timed`."""

    def __init__(self, config: FilterConfig, spent: Counter[tuple[str, str]]) -> None:
        self.config, self.spent = config, spent
        self.request_body_limit = config.request_body_limit
        self.response_body_limit = config.response_body_limit
        self.max_request_body_bytes = config.max_request_body_bytes

    def create_filter(self) -> HttpFilter:
        return _Timed(self.config.name, self.config.create_filter(), self.spent)


def by_filter(args: argparse.Namespace, policy: CompiledPolicy, token: str) -> None:
    """Print each filter phase's CPU µs per request (median of ``args.rounds`` rounds)."""
    spent: Counter[tuple[str, str]] = Counter()
    timed = dataclasses.replace(
        policy, filters=tuple(_TimedConfig(c, spent) for c in policy.filters)
    )
    rounds: dict[tuple[str, str], list[float]] = {}
    for _ in range(max(1, args.rounds)):
        spent.clear()
        asyncio.run(run(args, timed, token))
        for key, seconds in spent.items():
            rounds.setdefault(key, []).append(seconds / args.requests * 1e6)
    for (name, phase), values in rounds.items():
        print(f"  {name:>14} {phase:<8} {statistics.median(values):7.1f} CPU us/request")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", choices=("limits", "waf", "full"), default="full")
    parser.add_argument("--kind", choices=("GET", "POST"), default="GET")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--unique", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--by-filter", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    policy, token = setup(args)
    asyncio.run(run(args, policy, token))  # warm-up: imports, memo, caches
    rounds = sorted(asyncio.run(run(args, policy, token)) for _ in range(max(1, args.rounds)))
    print(
        f"{args.policy} {args.kind}: median {statistics.median(rounds):.1f} CPU us/request, "
        f"min {rounds[0]:.1f} ({len(rounds)} rounds of {args.requests}, no profiler)"
    )
    if args.by_filter:
        by_filter(args, policy, token)
    if args.top <= 0:
        return 0
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run(args, policy, token))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
