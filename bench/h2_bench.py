"""HTTP/2 and gRPC through Wardgate, in one run on this machine:

* **gRPC unary calls/s** (16-byte messages, 32 calls in flight on one channel) through
  Wardgate (``--upstream-protocol auto``; the pass-through policy, and as ``wardgate waf``
  the built-in default policy) and through Envoy 1.40 (``--concurrency 1``, h2 upstream),
  all in front of the same grpcio server; target: Wardgate >= 0.5x Envoy;
* **h2c GET req/s vs HTTP/1.1 GET req/s** through the same Wardgate (HTTP/1.1 upstream):
  what the HTTP/2 path costs next to the HTTP/1.1 one.

Same method as ``bench/run.py``: the proxy under test alone on one CPU (``taskset``), load
generator and upstream on the other; interleaved rounds; medians. Load generators are
small Python clients (grpcio's C core for gRPC; raw sockets with ``h2`` / plain bytes for
the GETs), so besides req/s the table gives the **CPU time the proxy spent per request**,
which neither a slow load generator nor a busy neighbour changes: compare those.

Usage: ``python bench/h2_bench.py [--duration S] [--repeats N] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gateway")]

from bench.harness import (  # noqa: E402
    PIDS,
    RESULTS,
    CpuLayout,
    cpu_seconds,
    envoy_proxy,
    free_port,
    pinned,
    process,
    rotated,
    wait_http,
    wait_port,
)

METHOD = "/bench.Echo/Unary"
CONCURRENCY = 32


# -- the parties, each a mode of this script ------------------------------------------------


def serve_grpc(port: int) -> None:
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def serve_http(port: int) -> None:
    from aiohttp import web

    async def ok(_: web.BaseRequest) -> web.Response:
        return web.Response(text="ok\n")

    async def main() -> None:
        runner = web.ServerRunner(web.Server(ok), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(main())


async def load_grpc(target: str, duration: float) -> int:
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        await call(b"warm")
        done = 0
        stop = time.monotonic() + duration

        async def worker() -> None:
            nonlocal done
            payload = b"0123456789abcdef"
            while time.monotonic() < stop:
                await call(payload)
                done += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done


async def load_h2(host: str, port: int, duration: float) -> int:
    """GETs over one h2c connection, CONCURRENCY streams in flight."""
    import h2.config
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", "b"), (":path", "/bench")]
    stop = time.monotonic() + duration
    done = 0
    in_flight = 0

    def start() -> None:
        nonlocal in_flight
        conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
        in_flight += 1

    for _ in range(CONCURRENCY):
        start()
    writer.write(conn.data_to_send())
    while in_flight:
        data = await reader.read(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                in_flight -= 1
                done += 1
                if time.monotonic() < stop:
                    start()
        writer.write(conn.data_to_send())
    writer.close()
    return done


async def load_h1(host: str, port: int, duration: float) -> int:
    """GETs over CONCURRENCY keep-alive HTTP/1.1 connections, one at a time each."""
    request = f"GET /bench HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    stop = time.monotonic() + duration
    done = 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


def run_load(
    kind: str, target: str, duration: float, cpus: str, pid: int | None
) -> dict[str, float]:
    """Run one load generator process; returns rps and the proxy's CPU µs per request."""
    cpu_before = cpu_seconds(pid) if pid else 0.0
    start = time.monotonic()
    cmd = [sys.executable, __file__, "--load", kind, target, str(duration)]
    out = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - start
    count = int(out.strip().splitlines()[-1])
    cpu_us = (cpu_seconds(pid) - cpu_before) / count * 1e6 if pid and count else None
    return {"rps": count / duration, "cpu_us": cpu_us or 0.0, "wall_s": elapsed}


# -- the proxies ----------------------------------------------------------------------------


@contextlib.contextmanager
def wardgate(
    upstream: int, protocol: str, cpus: str, default_policy: bool = False
) -> Iterator[tuple[int, int]]:
    """A Wardgate with the pass-through policy (limits only), or with ``default_policy``
    the built-in default (WAF on: path, metadata and every message inspected)."""
    port, admin = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'gateway'}")
    cmd = [sys.executable, "-m", "wardgate", "run", "--upstream", f"http://127.0.0.1:{upstream}"]
    if not default_policy:
        cmd += ["--policy", str(ROOT / "bench" / "passthrough.yaml")]
    cmd += ["--upstream-protocol", protocol]
    cmd += ["--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"]
    cmd += ["--access-log", "off", "--log-level", "error"]
    with process(pinned(cmd, cpus), env=env) as proc:
        wait_http(f"http://127.0.0.1:{admin}/ready", timeout=180)  # a busy machine starts slowly
        yield port, proc.pid


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--load", nargs=3, metavar=("KIND", "TARGET", "SECONDS"))
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"))
    args = parser.parse_args()
    if args.serve:
        (serve_grpc if args.serve[0] == "grpc" else serve_http)(int(args.serve[1]))
        return 0
    if args.load:
        kind, target, seconds = args.load[0], args.load[1], float(args.load[2])
        host, _, port = target.rpartition(":")
        if kind == "grpc":
            count = asyncio.run(load_grpc(target, seconds))
        elif kind == "h2c":
            count = asyncio.run(load_h2(host, int(port), seconds))
        else:
            count = asyncio.run(load_h1(host, int(port), seconds))
        print(count)
        return 0
    if args.quick:
        args.duration, args.repeats = 2, 1
    cpus = CpuLayout.for_machine()
    print(f"CPU layout: {cpus.describe()}", flush=True)
    args.load_before = os.getloadavg()
    grpc_port, http_port = free_port(), free_port()
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="wardgate-h2-bench-") as tmp,
        process(
            pinned([sys.executable, __file__, "--serve", "grpc", str(grpc_port)], cpus.upstream)
        ),
        process(
            pinned([sys.executable, __file__, "--serve", "http", str(http_port)], cpus.upstream)
        ),
    ):
        wait_port(grpc_port)
        wait_port(http_port)
        with (
            envoy_proxy(Path(tmp), grpc_port, cpus.proxy, http2_upstream=True) as envoy,
            wardgate(grpc_port, "auto", cpus.proxy) as (wg_grpc, wg_grpc_pid),
            wardgate(grpc_port, "auto", cpus.proxy, default_policy=True) as (wg_waf, wg_waf_pid),
            wardgate(http_port, "http1", cpus.proxy) as (wg_http, wg_http_pid),
        ):
            suites = {
                "gRPC unary": {
                    "direct": ("grpc", f"127.0.0.1:{grpc_port}", None),
                    "envoy": ("grpc", f"127.0.0.1:{envoy}", PIDS[envoy]),
                    "wardgate": ("grpc", f"127.0.0.1:{wg_grpc}", wg_grpc_pid),
                    "wardgate waf": ("grpc", f"127.0.0.1:{wg_waf}", wg_waf_pid),
                },
                "GET": {
                    "wardgate h1": ("h1", f"127.0.0.1:{wg_http}", wg_http_pid),
                    "wardgate h2c": ("h2c", f"127.0.0.1:{wg_http}", wg_http_pid),
                },
            }
            for suite, targets in suites.items():
                by_target = rounds.setdefault(suite, {name: [] for name in targets})
                for kind, target, pid in targets.values():
                    run_load(kind, target, 1, cpus.load, pid)  # warm-up
                for turn in range(args.repeats):
                    for name in rotated(list(targets), turn):
                        kind, target, pid = targets[name]
                        by_target[name].append(
                            run_load(kind, target, args.duration, cpus.load, pid)
                        )
                    line = "  ".join(f"{n} {by_target[n][-1]['rps']:7.0f}" for n in targets)
                    print(f"  {suite:10} round {turn + 1}: {line} req/s", flush=True)
    report(rounds, args)
    return 0


def _median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def report(rounds: dict[str, dict[str, list[dict[str, float]]]], args: argparse.Namespace) -> None:
    print(
        f"\n== HTTP/2 and gRPC (medians of {args.repeats} interleaved rounds of {args.duration} s)"
    )
    print(f"{'suite':11} {'target':13} {'req/s':>9} {'proxy CPU us/req':>17}")
    for suite, by_target in rounds.items():
        for name, samples in by_target.items():
            cpu = _median(samples, "cpu_us")
            print(
                f"{suite:11} {name:13} {_median(samples, 'rps'):9.0f} {cpu if cpu else float('nan'):17.1f}"
            )
    g = rounds["gRPC unary"]
    ratio = statistics.median(
        w["rps"] / e["rps"] for w, e in zip(g["wardgate"], g["envoy"], strict=True)
    )
    cpu_ratio = statistics.median(
        e["cpu_us"] / w["cpu_us"]
        for w, e in zip(g["wardgate"], g["envoy"], strict=True)
        if w["cpu_us"]
    )
    h = rounds["GET"]
    h2_vs_h1 = statistics.median(
        b["rps"] / a["rps"] for a, b in zip(h["wardgate h1"], h["wardgate h2c"], strict=True)
    )
    h2_cpu = statistics.median(
        a["cpu_us"] / b["cpu_us"]
        for a, b in zip(h["wardgate h1"], h["wardgate h2c"], strict=True)
        if b["cpu_us"]
    )
    load = (args.load_before, os.getloadavg())
    print(
        "\nLoad average before/after: "
        + " / ".join(" ".join(f"{x:.1f}" for x in avg) for avg in load)
        + " (on a busy machine the proxy shares its CPU: compare CPU per call, not req/s)"
    )
    print(
        f"Targets: gRPC Wardgate/Envoy calls/s {ratio:.2f} (>= 0.50), by proxy CPU per call "
        f"{cpu_ratio:.2f}; h2c/HTTP/1.1 GET through Wardgate req/s {h2_vs_h1:.2f}, by CPU per "
        f"request {h2_cpu:.2f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "h2.json").write_text(
        json.dumps(
            {
                "rounds": rounds,
                "grpc_wardgate_vs_envoy": ratio,
                "grpc_wardgate_vs_envoy_by_cpu_per_call": cpu_ratio,
                "h2c_vs_http1_get": h2_vs_h1,
                "h2c_vs_http1_get_by_cpu_per_request": h2_cpu,
                "load_average_before_after": load,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
