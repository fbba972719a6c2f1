"""Where a pass-through request's time goes in the proxy itself (socket to socket).

Starts the nginx upstream, runs the HTTP/1.1 gateway *in this process* with one of the
bench policies (default ``limits``: issue 17's pass-through), pinned alone on the last CPU,
and drives it with ``wrk`` (the GET or the 1 KiB JSON POST of ``make bench``, with the
694-byte bearer token) from the other CPU(s). Prints the gateway process's CPU time per
request (user + system, without a profiler), and with ``--cprofile`` the functions that
took the most time (the profiler itself roughly doubles the cost; read proportions).

``bench/profile_policy.py`` profiles the filters alone; this adds aiohttp's server
protocol, the handler, the upstream client, metrics and the access log.

Usage: ``python bench/profile_proxy.py [--kind GET|POST] [--seconds S] [--rounds N]
[--policy limits|waf|full] [--access-log off|ecs|envoy] [--cprofile] [--top N]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT)]

from bench.harness import CpuLayout, nginx_upstream, pinned, wrk_script  # noqa: E402
from bench.harness.workload import (  # noqa: E402
    full_policy,
    json_body,
    jwt_material,
    limits_policy,
    waf_policy,
    write_policy,
)

from wardgate.observability.logs import AccessLog  # noqa: E402
from wardgate.proxy.server import GatewayProcess, RunOptions, install_event_loop_policy  # noqa: E402
from wardgate.runtime import load_compiled  # noqa: E402


def _cpu() -> tuple[float, float]:
    """User and system CPU seconds of this process so far."""
    times = os.times()
    return times.user, times.system


async def _wrk(url: str, seconds: float, script: Path, cpus: str) -> int:
    """Requests wrk completed in ``seconds`` (errors are fatal: a profile of refusals
    would say nothing about pass-through)."""
    cmd = pinned(["wrk", "-t1", "-c32", f"-d{seconds:g}s", "-s", str(script), url], cpus)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


async def _drive(port: int, raw: bytes, requests: int, connections: int = 8) -> None:
    """Send ``raw`` (one whole request) ``requests`` times over ``connections`` keep-alive
    connections, each waiting for its response (wrk cannot stop after a number of
    requests). Responses must be 200 with a Content-Length."""
    left = [requests]

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left[0] > 0:
            left[0] -= 1
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"refused: {head!r}")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)))  # type: ignore[union-attr]
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def _raw_request(kind: str, token: str) -> bytes:
    body = json_body(1024) if kind == "POST" else b""
    head = f"{kind} /bench?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def _driven(port: int, raw: bytes, requests: int, cpus: str) -> None:
    """:func:`_drive` in a child process on ``cpus`` (not traced by valgrind)."""
    cmd = [sys.executable, __file__, "--drive", str(port), raw.hex(), str(requests)]
    proc = await asyncio.create_subprocess_exec(*pinned(cmd, cpus))
    if await proc.wait() != 0:
        raise SystemExit("the load client failed")


async def _stop(gateway: GatewayProcess) -> None:
    gateway.stopping.set()
    await gateway.run_until_stopped()


async def measure(args: argparse.Namespace, upstream: int, policy: Path, script: Path) -> None:
    options = RunOptions(
        upstream=f"http://127.0.0.1:{upstream}",
        policy_path=str(policy),
        listen_port=0,
        admin_port=None,
        access_log=args.access_log,
    )
    sink = io.StringIO() if args.access_log != "off" else None
    access_log = AccessLog(args.access_log, stream=sink) if sink is not None else None
    gateway = GatewayProcess(options, load_compiled(str(policy)), False, access_log)
    await gateway.start()
    url = f"http://{gateway.state.listen}/bench?x=1"
    load_cpus = CpuLayout.for_machine().load
    if args.requests:
        # A fixed number of requests, warm-up included (for instruction counts under
        # valgrind, whose slowness would change what a timed warm-up does).
        port = int(gateway.state.listen.rpartition(":")[2])
        await _driven(port, args.raw, 200 + args.requests, load_cpus)
        await _stop(gateway)
        return
    await _wrk(url, 1, script, load_cpus)  # warm-up: connections, upstream pool
    per_request = []
    profiler = cProfile.Profile() if args.cprofile else None
    for _ in range(args.rounds):
        if sink is not None:
            sink.seek(0)
            sink.truncate()
        before = _cpu()
        if profiler is not None:
            profiler.enable()
        count = await _wrk(url, args.seconds, script, load_cpus)
        if profiler is not None:
            profiler.disable()
        after = _cpu()
        user, system = ((a - b) / count * 1e6 for a, b in zip(after, before, strict=True))
        per_request.append(user + system)
        print(
            f"  {count / args.seconds:8.0f} req/s  {per_request[-1]:6.1f} us CPU/request "
            f"({user:.1f} user, {system:.1f} system)"
        )
    await _stop(gateway)
    label = "with cProfile" if profiler else "no profiler"
    print(f"median CPU per request ({label}): {statistics.median(per_request):.1f} us")
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(args.top)
        if args.dump:
            stats.dump_stats(args.dump)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("GET", "POST"), default="GET")
    parser.add_argument("--policy", choices=("limits", "waf", "full"), default="limits")
    parser.add_argument("--access-log", choices=("off", "ecs", "envoy"), default="off")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="serve this many requests after the warm-up and stop (run under valgrind "
        "--tool=callgrind twice with different counts: the difference of the instruction "
        "counts over the difference of requests is the instructions per request)",
    )
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--dump", help="write the cProfile statistics to this file")
    parser.add_argument(
        "--drive", nargs=3, metavar=("PORT", "HEX", "N"), help=argparse.SUPPRESS
    )  # the load client's own process (see _driven)
    args = parser.parse_args()
    if args.drive:
        port, raw, requests = args.drive
        asyncio.run(_drive(int(port), bytes.fromhex(raw), int(requests)))
        return 0
    layout = CpuLayout.for_machine()
    if layout.proxy:
        os.sched_setaffinity(0, {int(layout.proxy)})
    jwks, token = jwt_material()
    docs = {"limits": limits_policy, "waf": waf_policy, "full": lambda: full_policy(jwks)}
    install_event_loop_policy()
    with tempfile.TemporaryDirectory(prefix="wardgate-profile-") as tmp:
        workdir = Path(tmp)
        headers = {"Authorization": f"Bearer {token}"}
        if args.kind == "POST":
            headers["Content-Type"] = "application/json"
        body = json_body(1024) if args.kind == "POST" else b""
        script = wrk_script(workdir / "load.lua", args.kind, body, headers)
        args.raw = _raw_request(args.kind, token)
        policy = write_policy(workdir / "policy.yaml", docs[args.policy]())
        with (
            nginx_upstream(workdir, layout.upstream) as upstream,
            contextlib.suppress(KeyboardInterrupt),
        ):
            asyncio.run(measure(args, upstream, policy, script))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
