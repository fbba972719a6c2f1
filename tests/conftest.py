"""Shared fixtures: the demo upstream and gateways, in-process or as real processes, all on
real sockets on 127.0.0.1 with ports chosen by the kernel."""

from __future__ import annotations

import inspect
import io
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from hypothesis import settings

from wardgate.config import load_policy_text
from wardgate.observability.logs import AccessLog
from wardgate.proxy.demo import start_demo_upstream
from wardgate.proxy.server import GatewayProcess, RunOptions
from wardgate.runtime import compile_policy

# Property tests explore new inputs on every local run (that is how they find bugs); in CI
# (CI=true) they replay a fixed sequence, so a red run is a regression, not a lottery.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[None]:
    """In async tests, a blocking call (file or socket I/O, ``time.sleep``, ...) that
    Wardgate's own code makes inside the event loop fails the test (as in aiohttp's suite):
    one such call stalls every connection of the worker. Tests and libraries may block;
    the allowances below are the calls we keep on purpose, each with its reason."""
    if not inspect.iscoroutinefunction(request.function):
        yield
        return
    with blockbuster_ctx(["wardgate", "wardgate_operator"]) as bb:
        for function in bb.functions.values():
            for filename, functions in BLOCKING_ALLOWED:
                function.can_block_in(filename, functions)
        yield


BLOCKING_ALLOWED: list[tuple[str, set[str]]] = [
    # Compiling a policy reads rule files and the Hyperscan store: the gateway does it
    # before its loop starts or in a thread (reload: asyncio.to_thread); tests compile
    # policies inline in async tests and fixtures.
    ("wardgate/runtime/compiled.py", {"compile_policy"}),
    ("wardgate/runtime/loading.py", {"load_compiled"}),
    # The reloader's first fingerprint of the policy files, taken once when the gateway is
    # built (before serving); its watch rounds stat the files in a thread.
    ("wardgate/runtime/reload.py", {"__init__"}),
    # Likewise the TLS files: read and fingerprinted once when the listener is built.
    ("wardgate/proxy/tls.py", {"__init__"}),
    # A metrics scrape: prometheus_client's process collector reads /proc/self (memory,
    # never a disk wait) and, with several workers, the multiprocess value files.
    ("wardgate/observability/metrics.py", {"render_prometheus", "render_stats"}),
    # Stopping the ext_authz gRPC server: grpc.aio joins its poller thread once the last
    # server is gone (the server is no longer serving anything by then).
    ("wardgate/envoy/server.py", {"stop"}),
    # A test importing a module on first use (a lazy import inside an async test).
    ("<frozen importlib._bootstrap>", {"_find_and_load"}),
    # The admission webhook's certificate reloader reads its files once when it is built,
    # before the server answers anything (its periodic checks run in a thread).
    ("wardgate_operator/admission.py", {"_current_stamp"}),
]


@pytest.fixture
async def recording_upstream() -> AsyncIterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """An upstream that answers ``ok`` and records (method, raw path, body) of every request
    it receives, so a test can prove what was, and was not, forwarded. The body is read
    from the stream, so it has no size ceiling (``request.read()`` stops at 1 MiB)."""
    from aiohttp import web

    seen: list[tuple[str, str, bytes]] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        parts = []
        while chunk := await request.content.read(65536):
            parts.append(chunk)
        seen.append((request.method, request.raw_path, b"".join(parts)))
        return web.Response(text="ok")

    server = web.Server(handler)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """The demo upstream, in the test's event loop."""
    runner, port = await start_demo_upstream()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@dataclass
class InProcessGateway:
    process: GatewayProcess
    access_log: io.StringIO

    @property
    def url(self) -> str:
        return f"http://{self.process.state.listen}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.process.state.admin}"

    def access_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.getvalue().splitlines() if line]


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start in-process gateways: ``await gateway(upstream_url, policy_yaml, **options)``."""
    started: list[GatewayProcess] = []

    async def start(upstream_url: str, policy: str = "", **options: Any) -> InProcessGateway:
        path = tmp_path / f"policy-{len(started)}.yaml"
        path.write_text(policy)
        opts = RunOptions(
            upstream=upstream_url,
            policy_path=str(path),
            listen_port=0,
            admin_port=0,
            drain_timeout=options.pop("drain_timeout", 5.0),
            reload_interval=options.pop("reload_interval", 0.1),
            **options,
        )
        compiled = compile_policy(load_policy_text(policy))
        log = io.StringIO()
        process = GatewayProcess(opts, compiled, serve_admin=True, access_log=AccessLog("ecs", log))
        await process.start()
        started.append(process)
        return InProcessGateway(process, log)

    yield start
    for process in started:
        process.stopping.set()
        await process.run_until_stopped()


@dataclass
class GatewaySubprocess:
    popen: subprocess.Popen[bytes]
    listen: str
    admin: str
    stderr_lines: list[str] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def stop(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


def wardgate_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "gateway"), str(ROOT / "operator")])
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def run_wardgate(
    *args: str, input_: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a short ``wardgate`` CLI command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "wardgate", *args],
        env=wardgate_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
        input=input_.decode() if input_ is not None else None,
        text=True,
        cwd=ROOT,
    )


def _pump(
    stream: Any,
    sink: list[str],
    ready: threading.Event | None,
    found: list[dict[str, Any]],
    marker: str,
) -> None:
    with stream:  # closed at EOF (the process exited): no pipe left to the collector
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            sink.append(line)
            if ready is not None and not ready.is_set() and marker in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
                ready.set()


@pytest.fixture
def gateway_process() -> Iterator[Callable[..., GatewaySubprocess]]:
    """Start ``wardgate run`` as a real process; waits until it logs that it listens."""
    started: list[GatewaySubprocess] = []

    def start(
        *args: str, marker: str = '"listening"', wait: bool = True, limit_fds: int | None = None
    ) -> GatewaySubprocess:
        def limit() -> None:  # runs in the child: caps soft and hard descriptor limits
            if limit_fds is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))

        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wardgate",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                *args,
            ],
            env=wardgate_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            preexec_fn=limit if limit_fds is not None else None,  # noqa: PLW1509 - no threads use it
        )
        ready = threading.Event()
        found: list[dict[str, Any]] = []
        proc = GatewaySubprocess(popen, "", "")
        threading.Thread(
            target=_pump, args=(popen.stderr, proc.stderr_lines, ready, found, marker), daemon=True
        ).start()
        threading.Thread(
            target=_pump, args=(popen.stdout, proc.stdout_lines, None, [], ""), daemon=True
        ).start()
        started.append(proc)
        if not wait:
            return proc
        deadline = time.monotonic() + 30
        while not ready.wait(0.1):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gateway did not start:\n" + "\n".join(proc.stderr_lines))
        info = found[0]["wardgate"]
        proc.listen, proc.admin = info["listen"], info["admin"]
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)
