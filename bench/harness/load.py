"""Load and its figures: ``wrk`` for peak throughput, ``bench/pace.c`` for latency at a fixed
rate, medians over interleaved rounds, and in-process timing of a function.

Methodology shared by every suite:

* **Interleaved rounds** (:func:`rotated`): every round measures every target once, in a
  rotated order, so load from other processes on a shared machine spreads over all targets
  instead of one target's samples; figures are medians over rounds.
* **CPU per request** (``run_wrk(pid=...)``): the proxy's CPU time over the requests it
  served; unlike req/s it does not depend on how much CPU the neighbours took meanwhile.
* **Latency at a fixed rate** (:func:`run_pace`): evenly spaced requests, each timed from
  when it was due, not from when it could be sent (no coordinated omission).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.harness.procs import ROOT, cpu_seconds, pinned

T = TypeVar("T")


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
    url: str,
    duration: float,
    script: Path | None,
    cpus: str = "",
    pid: int | None = None,
    connections: int = 32,
) -> Load:
    """Peak throughput: ``wrk``, 1 thread, ``connections`` connections, on ``cpus`` when
    given. With ``pid`` (the proxy's), also the CPU time it spent per request."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
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


def wrk_script(
    path: Path, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None
) -> Path:
    """Write a wrk Lua script sending ``method`` with ``body`` and ``headers`` to ``path``."""
    lines = [f'wrk.method = "{method}"']
    if body:
        lines.append(f"wrk.body = {_lua_string(body)}")
    lines += [
        f'wrk.headers["{name}"] = {_lua_string(value.encode())}'
        for name, value in (headers or {}).items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal (every byte escaped as ``\\ddd``: no quoting to get
    wrong)."""
    return '"' + "".join(f"\\{byte:03d}" for byte in data) + '"'


PACE_CONNECTIONS = 8
"""Connections of the fixed-rate latency run (one request in flight on each): at half of
the peak and sub-millisecond latency about one is busy, so 8 leave room for stalls without
the generator becoming the bottleneck."""


def build_pace(workdir: Path) -> Path:
    """Compile ``bench/pace.c`` (the constant-rate generator) into ``workdir``."""
    binary = workdir / "pace"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(ROOT / "bench" / "pace.c")], check=True)
    return binary


def run_pace(
    pace: Path,
    port: int,
    duration: int,
    rate: float,
    cpus: str = "",
    body: int | Path | None = None,
    content_type: str = "application/octet-stream",
    headers: tuple[str, ...] = (),
) -> Load:
    """``rate`` evenly spaced requests/s for ``duration`` s over :data:`PACE_CONNECTIONS`
    connections, latency from each request's due time (``bench/pace.c`` says why). With
    ``body`` (a byte count, or a file), a POST; ``headers`` ("Name: value") go on each."""
    cmd = [str(pace), "127.0.0.1", str(port), "/bench?x=1", f"{rate:.0f}", str(duration)]
    cmd.append(str(PACE_CONNECTIONS))
    if body is not None or headers:
        cmd.append(f"@{body}" if isinstance(body, Path) else str(-1 if body is None else body))
        cmd += [content_type, *headers]
    out = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, check=True).stdout
    fields = dict(line.split("=", 1) for line in out.split())
    if int(fields["errors"]):
        print(f"    warning: {fields['errors']} errors from port {port}")
    return Load(float(fields["rps"]), int(fields["p50_us"]) / 1000, int(fields["p99_us"]) / 1000)


def median_load(samples: list[Load]) -> Load:
    """The median of each figure over ``samples`` (rounds)."""
    cpu = [s.cpu_us for s in samples if s.cpu_us is not None]
    return Load(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        statistics.median(cpu) if cpu else None,
    )


def rotated(names: list[T], turn: int) -> list[T]:
    """``names`` starting at position ``turn``: each round begins with another target."""
    turn %= len(names)
    return names[turn:] + names[:turn]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_us(fn: Callable[[], object], number: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean µs per call of ``fn`` over ``number`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)
