"""Before/after on a shared machine: two source trees' Wardgate with the same policy, and
nginx + ModSecurity + CRS, measured in the same rounds.

On a loaded machine the CPU time per request of every proxy drifts by tens of percent from
one run to the next (cache and memory-bandwidth contention), so comparing a change against
figures of an earlier run says little. This script starts Wardgate from ``--before`` (a
checkout or ``git archive`` of the older tree: its ``gateway/`` is put first on
``PYTHONPATH``) and from this tree, one worker each on the proxy CPU, and sends each the
same GET (694-byte bearer token) or 1 KiB JSON POST of ``make bench`` in rotated order,
round after round. It prints req/s and proxy CPU µs per request per round, their medians,
and the medians of the per-round ratios (after / before, each / ModSecurity).

Usage: ``python bench/ab_compare.py --before /tmp/base [--policy full|waf|limits]
[--rounds 5] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT)]

from bench.harness.load import Load, rotated, run_wrk, wrk_script  # noqa: E402
from bench.harness.procs import (  # noqa: E402
    CpuLayout,
    free_port,
    pinned,
    process,
    wait_http,
)
from bench.harness.targets import (  # noqa: E402
    PIDS,
    ensure_modsecurity,
    nginx_modsecurity,
    nginx_upstream,
)
from bench.harness.workload import (  # noqa: E402
    full_policy,
    json_body,
    jwt_material,
    limits_policy,
    waf_policy,
    write_policy,
)


@contextlib.contextmanager
def wardgate_from(tree: Path, upstream: int, policy: Path, cpus: str) -> Iterator[int]:
    """``wardgate run`` with the code of ``tree`` (its ``gateway/`` first on the path)."""
    port, admin = free_port(), free_port()
    cmd = [sys.executable, "-m", "wardgate", "run", "--upstream", f"http://127.0.0.1:{upstream}"]
    cmd += ["--policy", str(policy), "--listen", f"127.0.0.1:{port}"]
    cmd += ["--admin", f"127.0.0.1:{admin}", "--access-log", "off", "--log-level", "error"]
    cmd += ["--workers", "1"]
    env = dict(os.environ, PYTHONPATH=str(tree / "gateway"))
    with process(pinned(cmd, cpus), env=env) as proc:
        wait_http(f"http://127.0.0.1:{admin}/ready")
        PIDS[port] = proc.pid
        yield port


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--policy", choices=("full", "waf", "limits"), default="full")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    cpus = CpuLayout.for_machine()
    jwks, token = jwt_material()
    doc = {"full": full_policy(jwks), "waf": waf_policy(), "limits": limits_policy()}
    auth = {"Authorization": f"Bearer {token}"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        scripts = {
            "GET": wrk_script(work / "get.lua", headers=auth),
            "POST": wrk_script(
                work / "post.lua",
                "POST",
                json_body(1024),
                {**auth, "Content-Type": "application/json"},
            ),
        }
        policy = write_policy(work / "policy.yaml", doc[args.policy])
        upstream = stack.enter_context(nginx_upstream(work, cpus.upstream))
        ports = {
            "before": stack.enter_context(
                wardgate_from(args.before.resolve(), upstream, policy, cpus.proxy)
            ),
            "after": stack.enter_context(wardgate_from(ROOT, upstream, policy, cpus.proxy)),
        }
        if ensure_modsecurity() is None:
            ports["modsecurity"] = stack.enter_context(
                nginx_modsecurity(work, upstream, cpus.proxy)
            )[0]
        for kind, script in scripts.items():
            measure(kind, script, ports, cpus, args)
    return 0


def measure(
    kind: str, script: Path, ports: dict[str, int], cpus: CpuLayout, args: argparse.Namespace
) -> None:
    """Rounds of ``kind`` against every target, then medians and per-round ratios."""
    loads: dict[str, list[Load]] = {name: [] for name in ports}
    for turn in range(args.rounds):
        for name in rotated(list(ports), turn):
            url = f"http://127.0.0.1:{ports[name]}/bench?x=1"
            loads[name].append(run_wrk(url, args.duration, script, cpus.load, PIDS[ports[name]]))
        row = "  ".join(
            f"{n} {loads[n][-1].rps:7.0f}/s {loads[n][-1].cpu_us:7.1f}us" for n in ports
        )
        print(f"{kind} round {turn + 1}: {row}", flush=True)
    for name, samples in loads.items():
        rps = statistics.median(s.rps for s in samples)
        cpu = statistics.median(s.cpu_us or 0.0 for s in samples)
        print(f"{kind} {name:>12}: median {rps:7.0f} req/s, {cpu:7.1f} CPU us/request")
    pairs = [("after", "before")]
    pairs += [(n, "modsecurity") for n in ("before", "after") if "modsecurity" in loads]
    for top, bottom in pairs:
        by_rps = [a.rps / b.rps for a, b in zip(loads[top], loads[bottom], strict=True)]
        by_cpu = [
            (b.cpu_us or 0.0) / (a.cpu_us or 1.0)
            for a, b in zip(loads[top], loads[bottom], strict=True)
        ]
        print(
            f"{kind} {top} / {bottom}: {statistics.median(by_rps):.2f}x req/s, "
            f"{statistics.median(by_cpu):.2f}x by CPU per request (median of per-round ratios)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
