"""Memory over a run with per-request-unique values: does RSS stay flat?

One ``wardgate run`` worker with the default WAF (limits + WAF, enforcing) behind ``wrk``;
every request carries a query value, a short header value and a 600-character header value
that no earlier request had (a counter in the wrk script), so nothing is answered from the
WAF's memo and each long value adds a digest key (``waf/engine/memo.py``). RSS of the worker
is sampled every ``--every`` seconds; the figures are RSS after the warm-up, at the end, the
peak, and the growth over the second half of the run (MiB per minute, least squares), which
is about 0 for a flat line.

Usage: ``python bench/memory_bench.py [--seconds S] [--every S]``; the default run is 60 s,
``--seconds 600`` is the 10-minute run of issue 17.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.harness import (  # noqa: E402
    PIDS,
    RESULTS,
    CpuLayout,
    ensure_tools,
    nginx_upstream,
    pinned,
    rss_mib,
    wardgate_proxy,
)
from bench.harness.workload import waf_policy, write_policy  # noqa: E402

UNIQUE_SCRIPT = """
counter = 0
filler = string.rep("abcdefghij", 60)
request = function()
  counter = counter + 1
  local id = tostring(counter)
  return wrk.format("GET", "/items?page=" .. id .. "&q=blue+shoes+" .. id, {
    ["X-Session"] = "s" .. id,
    ["X-Trace"] = filler:sub(1, 600 - #id) .. id,
  })
end
"""
"""Every request differs in its query values and two header values (one of 600 chars)."""


def growth_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) over the second half of ``samples``, per
    minute."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs, ys = [t for t, _ in half], [m for _, m in half]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--every", type=float, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    ensure_tools()
    cpus = CpuLayout.for_machine()
    with tempfile.TemporaryDirectory(prefix="wardgate-memory-") as tmp:
        workdir = Path(tmp)
        script = workdir / "unique.lua"
        script.write_text(UNIQUE_SCRIPT)
        policy = write_policy(workdir / "waf.yaml", waf_policy())
        with (
            nginx_upstream(workdir, cpus.upstream) as upstream,
            wardgate_proxy(upstream, policy, cpus.proxy) as port,
        ):
            pid = PIDS[port]
            url = f"http://127.0.0.1:{port}/"
            total = args.warmup + args.seconds
            cmd = ["wrk", "-t1", "-c16", f"-d{total}s", "-s", str(script), url]
            wrk = subprocess.Popen(pinned(cmd, cpus.load), stdout=subprocess.PIPE, text=True)
            time.sleep(args.warmup)
            start = time.monotonic()
            samples = [(0.0, rss_mib(pid))]
            while wrk.poll() is None and time.monotonic() - start < args.seconds:
                time.sleep(args.every)
                samples.append((time.monotonic() - start, rss_mib(pid)))
            out = wrk.communicate()[0]
    requests = out.split(" requests in")[0].split()[-1] if " requests in" in out else "?"
    figures = {
        "seconds": args.seconds,
        "requests": requests,
        "rss_mib_after_warmup": round(samples[0][1], 1),
        "rss_mib_end": round(samples[-1][1], 1),
        "rss_mib_peak": round(max(m for _, m in samples), 1),
        "growth_mib_per_minute_second_half": round(growth_per_minute(samples), 2),
        "samples": [(round(t, 1), round(m, 1)) for t, m in samples],
    }
    print(
        f"== Memory, default WAF, per-request-unique values ({args.seconds} s after a "
        f"{args.warmup} s warm-up, {requests} requests): RSS {figures['rss_mib_after_warmup']}"
        f" -> {figures['rss_mib_end']} MiB (peak {figures['rss_mib_peak']}), growth over the "
        f"second half {figures['growth_mib_per_minute_second_half']} MiB/min"
    )
    if "Non-2xx" in out:
        print(f"  warning: refused requests in the run:\n{out}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
