"""Processes of a benchmark: ports, start/stop, readiness, CPU pinning, CPU time and RSS.

Every bench script starts its peers through :func:`process` (SIGTERM on the way out, SIGKILL
after 10 s) and reads what a process cost from ``/proc`` (:func:`cpu_seconds`,
:func:`rss_mib`), so two suites never measure the same thing two ways.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
ENVOY = str(BIN / "envoy") if (BIN / "envoy").exists() else "envoy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
GATEWAY_ENV = dict(os.environ, PYTHONPATH=str(ROOT / "gateway"))
"""The environment a ``python -m wardgate`` child needs to import this tree's gateway."""

PIDS: dict[int, int] = {}
"""Listening port -> process id of each proxy started here (for :func:`cpu_seconds`)."""


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
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def apt_install(*packages: str) -> None:
    """Install Debian ``packages`` when running as root with apt-get; silent otherwise
    (the caller checks for what it needs and says what is missing)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, env=env)


def ensure_tools() -> None:
    """wrk, a C compiler (for ``bench/pace.c``) and nginx: installed when missing (as root)."""
    packages = {"wrk": "wrk", "cc": "gcc", "nginx": "nginx-light"}
    missing = [
        tool
        for tool in packages
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        apt_install(*(packages[m] for m in missing))
    for tool, package in (("wrk", "wrk"), ("cc", "gcc")):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (Debian package {package})")


def wait_http(url: str, timeout: float = 30) -> None:
    """Return once ``url`` answers with a 2xx/3xx; exit the benchmark after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {timeout} s")


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{proc.args!r} exited: {err[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout} s")


@contextlib.contextmanager
def process(
    cmd: list[str], env: dict[str, str] | None = None, quiet: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` running for the ``with`` block; SIGTERM after, SIGKILL if still there 10 s
    later. Its stderr is a pipe (read on a failed start), or discarded with ``quiet``."""
    stderr = subprocess.DEVNULL if quiet else subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def only_child(pid: int) -> int:
    """The one child of process ``pid`` (nginx's worker under its master), else ``pid``."""
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) == 1:
            return int(children[0])
    return pid
