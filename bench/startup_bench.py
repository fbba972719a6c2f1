"""Start-up benchmark: from ``wardgate run`` (default policy) to ``/ready``, and a reload.

Each start runs with a HOME nobody can write (a sidecar's read-only root filesystem):

- *cold*: no store, no cache: every Hyperscan database is compiled (what every pod start
  paid before the store);
- *cached*: no store, a warm private cache (``$WARDGATE_HS_CACHE``), as on a workstation;
- *image layout*: the store ``wardgate precompile-waf`` writes at image build time, no
  cache at all (what an injected sidecar does).

Then a *reload that changes only exceptions*: the time from rewriting the policy file to the
admin port reporting the new generation (no rule changes, so no database is compiled).

Wall time depends on the machine's load; CPU seconds of the gateway process at ``/ready``
are printed beside it. Usage: ``python bench/startup_bench.py [--quick]`` (``--quick``
skips the cold start, which takes tens of seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.harness import cpu_seconds, free_port  # noqa: E402

WARDGATE = [sys.executable, "-m", "wardgate"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read()
    except OSError:
        return 0, b""


class Gateway:
    """One ``wardgate run`` process; :attr:`ready_s` and :attr:`cpu_s` once it is ready."""

    def __init__(self, env: dict[str, str], policy: Path | None = None) -> None:
        self.admin = free_port()
        args = ["run", "--upstream", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{free_port()}",
                "--admin", f"127.0.0.1:{self.admin}", "--access-log", "off"]  # fmt: skip
        if policy is not None:
            args += ["--policy", str(policy)]
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [*WARDGATE, *args], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while _get(f"http://127.0.0.1:{self.admin}/ready")[0] != 200:
            if self.process.poll() is not None:
                raise SystemExit("wardgate run exited before it was ready")
            time.sleep(0.01)
        self.ready_s = time.perf_counter() - started
        self.cpu_s = cpu_seconds(self.process.pid)

    def generation(self) -> int:
        _status, body = _get(f"http://127.0.0.1:{self.admin}/server_info")
        return int(json.loads(body)["policy"]["generation"]) if body else 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def environment(home: Path, store: str, cache: str) -> dict[str, str]:
    env = dict(os.environ, HOME=str(home), WARDGATE_HS_STORE=store, WARDGATE_HS_CACHE=cache)
    env["PYTHONPATH"] = f"{ROOT / 'gateway'}"
    return env


def starts(env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds to ``/ready`` over ``runs`` starts."""
    walls, cpus = [], []
    for _ in range(runs):
        gateway = Gateway(env)
        walls.append(gateway.ready_s)
        cpus.append(gateway.cpu_s)
        gateway.stop()
    return statistics.median(walls), statistics.median(cpus)


def reload_exceptions_only(env: dict[str, str], work: Path, runs: int) -> float:
    """Median seconds from rewriting the policy (another exception) to the new generation."""
    policy = work / "policy.yaml"
    exception = (
        "waf:\n  exceptions:\n    - ruleIds: ['942100']\n      locations: ['query:q{n}']\n"
        "      reason: bench\n"
    )
    policy.write_text(exception.format(n=0))
    gateway = Gateway(env, policy)
    samples = []
    try:
        for n in range(1, runs + 1):
            before = gateway.generation()
            started = time.perf_counter()
            policy.write_text(exception.format(n=n))
            os.kill(gateway.process.pid, 1)  # SIGHUP: reload now, not at the next poll
            while gateway.generation() == before:
                time.sleep(0.005)
            samples.append(time.perf_counter() - started)
    finally:
        gateway.stop()
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir(mode=0o500)
        cache, store = work / "cache", work / "store"
        cache.mkdir(mode=0o700)
        built = subprocess.run(
            [*WARDGATE, "precompile-waf", "--out", str(store)],
            env=dict(os.environ, PYTHONPATH=str(ROOT / "gateway")), cwd=ROOT,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if built.returncode != 0:
            raise SystemExit(built.stderr)
        print("# Start-up: `wardgate run` (default policy) to /ready, HOME not writable")
        print(f"  {'':<44}{'wall (median)':>14}{'CPU':>10}")
        rows: list[tuple[str, tuple[float, float]]] = []
        if not args.quick:
            rows.append(
                ("cold: no store, no cache (compiles)", starts(environment(home, "", ""), 1))
            )
        for entry in store.glob("*.hsdb"):  # a warm cache: same names as the store
            (cache / entry.name).write_bytes(entry.read_bytes())
        rows.append(
            ("cached: private cache, no store", starts(environment(home, "", str(cache)), runs))
        )
        rows.append(
            ("image layout: store only, no cache", starts(environment(home, str(store), ""), runs))
        )
        for name, (wall, cpu) in rows:
            print(f"  {name:<44}{wall:>12.2f} s{cpu:>8.2f} s")
        seconds = reload_exceptions_only(environment(home, str(store), ""), work, runs)
        print(
            f"\n  reload changing only exceptions (SIGHUP to new generation): {seconds * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
