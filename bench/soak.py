"""``make soak``: the issue 19 probe run, repeatable. Not part of ``make test`` or ``make bench``.

Starts the demo upstream and ``wardgate run`` (one worker) as processes and runs three
phases against them, printing one block of figures each so the next change can be compared:

1. **Reload under load**: ``--connections`` keep-alive clients for ``--reload-seconds`` while
   the policy file is rewritten the ordinary way (truncate, then write) every
   ``--reload-every`` seconds. Both policy variants refuse ``DELETE``; a ``DELETE`` answered
   2xx is a policy hole. Figures: requests, rate, errors, holes, reloads applied/failed.
2. **Soak**: the same load, no reloads, for ``--soak-seconds``. Figures: rate, p50/p99
   latency, errors, gateway RSS and open descriptors at start / end / peak.
3. **Slow clients**: ``--slow-clients`` connections send a request head one byte a second,
   for ``--slow-seconds``, with ``proxy.maxConnections`` at ``--max-connections`` and
   ``timeouts.requestHeaders`` at ``--header-timeout``. Figures: refused with 503 (or closed
   unanswered), cut with 408 and when,
   ``/ready`` latency on the admin port and normal requests while saturated.

Usage: ``python bench/soak.py [--reload-seconds S] [--soak-seconds S] [--slow-seconds S]
[--connections N] [--slow-clients N] [--json FILE]``. The defaults take about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.harness import (  # noqa: E402
    GATEWAY_ENV,
    free_port,
    open_fds,
    percentile,
    process,
    rss_mib,
    wait_http,
)

POLICY = """\
limits:
  allowedMethods: [GET, POST]
  maxUrlBytes: {url}
proxy:
  maxConnections: {max_connections}
  timeouts: {{requestHeaders: {header_timeout}s}}
"""

UPSTREAM = (
    "import asyncio, sys\n"
    "from wardgate.proxy.demo import start_demo_upstream\n"
    "async def main():\n"
    "    _, port = await start_demo_upstream(port=int(sys.argv[1]))\n"
    "    await asyncio.Event().wait()\n"
    "asyncio.run(main())\n"
)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    holes: int = 0

    def add(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.holes += other.holes


async def client(url: str, stop: float) -> Tally:
    """One keep-alive client: GETs that must pass, every tenth request a DELETE that every
    policy variant refuses."""
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        n = 0
        while time.monotonic() < stop:
            n += 1
            method = "DELETE" if n % 10 == 0 else "GET"
            start = time.monotonic()
            try:
                async with session.request(method, f"{url}/echo") as resp:
                    await resp.read()
                    status = resp.status
            except aiohttp.ClientError:
                tally.errors += 1
                continue
            tally.latencies.append(time.monotonic() - start)
            if method == "DELETE" and status < 300:
                tally.holes += 1
            elif method == "GET" and status != 200:
                tally.errors += 1
    return tally


async def load(url: str, connections: int, seconds: float) -> Tally:
    stop = time.monotonic() + seconds
    total = Tally()
    for tally in await asyncio.gather(*(client(url, stop) for _ in range(connections))):
        total.add(tally)
    return total


def write_policy(path: Path, args: argparse.Namespace, variant: int) -> None:
    # Opened with "w": truncate, then write, as `generator > policy.yaml` does.
    with path.open("w") as out:
        out.write(
            POLICY.format(
                url=4096 + variant,
                max_connections=args.max_connections,
                header_timeout=args.header_timeout,
            )
        )


async def reload_counts(admin: str) -> dict[str, float]:
    """``wardgate_policy_reloads_total`` by result."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{admin}/stats/prometheus") as resp,
    ):
        text = await resp.text()
    return {
        line.split('result="')[1].split('"')[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("wardgate_policy_reloads_total{")
    }


async def reload_phase(
    url: str, admin: str, policy: Path, args: argparse.Namespace
) -> dict[str, Any]:
    before = await reload_counts(admin)
    loader = asyncio.create_task(load(url, args.connections, args.reload_seconds))
    rewrites = 0
    while not loader.done():
        await asyncio.sleep(args.reload_every)
        rewrites += 1
        write_policy(policy, args, rewrites % 2)
    tally = await loader
    await asyncio.sleep(1.5)  # let the last rewrite be picked up
    after = await reload_counts(admin)
    return {
        "requests": len(tally.latencies),
        "rate_per_s": round(len(tally.latencies) / args.reload_seconds),
        "errors": tally.errors,
        "policy_holes": tally.holes,
        "rewrites": rewrites,
        "reloads": {key: after[key] - before.get(key, 0.0) for key in sorted(after)},
        "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 1),
    }


async def soak_phase(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    rss = [rss_mib(pid)]
    fds = [open_fds(pid)]
    loader = asyncio.create_task(load(url, args.connections, args.soak_seconds))
    while not loader.done():
        await asyncio.sleep(1)
        rss.append(rss_mib(pid))
        fds.append(open_fds(pid))
    tally = await loader
    return {
        "requests": len(tally.latencies),
        "rate_per_s": round(len(tally.latencies) / args.soak_seconds),
        "errors": tally.errors,
        "p50_ms": round(percentile(tally.latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 1),
        "rss_mib": {"start": rss[0], "end": rss[-1], "peak": max(rss)},
        "fds": {"start": fds[0], "end": fds[-1], "peak": max(fds)},
    }


async def slow_client(host: str, port: int, stop: float, outcome: dict[str, list[float]]) -> None:
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        outcome["connect_failed"].append(0)
        return
    head = b"GET /echo HTTP/1.1\r\nHost: soak\r\nx-slow: " + b"z" * 10_000
    try:
        for byte in head:
            writer.write(bytes([byte]))
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(reader.read(4096), 1.0)
                if data.startswith(b"HTTP/1.1 503"):
                    outcome["refused_503"].append(time.monotonic() - start)
                elif data.startswith(b"HTTP/1.1 408"):
                    outcome["cut_408"].append(time.monotonic() - start)
                else:
                    outcome["closed_unanswered"].append(time.monotonic() - start)
                return
            if time.monotonic() > stop:
                outcome["still_open"].append(time.monotonic() - start)
                return
    except ConnectionError:
        outcome["reset"].append(time.monotonic() - start)
    finally:
        writer.close()


async def slow_phase(url: str, admin: str, args: argparse.Namespace) -> dict[str, Any]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    stop = time.monotonic() + args.slow_seconds
    keys = ("refused_503", "cut_408", "closed_unanswered", "reset", "still_open", "connect_failed")
    outcome: dict[str, list[float]] = {key: [] for key in keys}
    clients = [
        asyncio.create_task(slow_client(host, int(port), stop, outcome))
        for _ in range(args.slow_clients)
    ]
    ready: list[float] = []
    ready_failed = 0
    served = 0
    refused = 0
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                async with session.get(f"{admin}/ready") as resp:
                    await resp.read()
                    ready.append(time.monotonic() - start)
            except (aiohttp.ClientError, TimeoutError):
                ready_failed += 1
            try:
                async with session.get(f"{url}/echo") as resp:
                    await resp.read()
                    served += resp.status == 200
                    refused += resp.status == 503
            except (aiohttp.ClientError, TimeoutError):
                refused += 1
            await asyncio.sleep(0.2)
    await asyncio.gather(*clients)
    cut = outcome["cut_408"]
    return {
        "slow_clients": args.slow_clients,
        **{key: len(value) for key, value in outcome.items()},
        "cut_after_s": round(statistics.median(cut), 1) if cut else None,
        "ready_ms": {
            "p50": round(percentile(ready, 0.5) * 1000, 1),
            "max": round(max(ready, default=0) * 1000, 1),
            "failed": ready_failed,
        },
        "normal_requests": {"ok": served, "refused": refused},
    }


def print_block(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        print(f"  {key:<16} {json.dumps(value)}")


async def run(args: argparse.Namespace, url: str, admin: str, pid: int, policy: Path) -> None:
    results: dict[str, Any] = {}
    if args.reload_seconds > 0:
        results["reload"] = await reload_phase(url, admin, policy, args)
        print_block(f"reload under load ({args.reload_seconds:g} s)", results["reload"])
    if args.soak_seconds > 0:
        results["soak"] = await soak_phase(url, pid, args)
        print_block(f"soak ({args.soak_seconds:g} s)", results["soak"])
    if args.slow_seconds > 0:
        results["slow"] = await slow_phase(url, admin, args)
        print_block(f"slow clients ({args.slow_seconds:g} s)", results["slow"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reload-seconds", type=float, default=20)
    parser.add_argument("--reload-every", type=float, default=0.5)
    parser.add_argument("--soak-seconds", type=float, default=60)
    parser.add_argument("--slow-seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--slow-clients", type=int, default=1500)
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--header-timeout", type=float, default=10)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wardgate-soak-") as workdir:
        policy = Path(workdir) / "policy.yaml"
        write_policy(policy, args, 0)
        upstream_port, port, admin_port = free_port(), free_port(), free_port()
        with process([sys.executable, "-c", UPSTREAM, str(upstream_port)], GATEWAY_ENV, quiet=True):
            wait_http(f"http://127.0.0.1:{upstream_port}/echo")
            cmd = [sys.executable, "-m", "wardgate", "run"]
            cmd += ["--upstream", f"http://127.0.0.1:{upstream_port}", "--policy", str(policy)]
            cmd += ["--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin_port}"]
            cmd += ["--access-log", "off", "--log-level", "error"]
            with process(cmd, GATEWAY_ENV, quiet=True) as gateway:
                admin = f"http://127.0.0.1:{admin_port}"
                wait_http(f"{admin}/ready")
                print(f"wardgate pid {gateway.pid}, {args.connections} load connections")
                asyncio.run(run(args, f"http://127.0.0.1:{port}", admin, gateway.pid, policy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
