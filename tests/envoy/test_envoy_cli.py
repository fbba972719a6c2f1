"""``wardgate ext-authz`` and ``wardgate run --ext-authz-*`` as real processes behind real
Envoy."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import grpc

from tests.conftest import ROOT, run_wardgate, wardgate_env


def test_ext_authz_needs_a_listener_and_a_valid_policy(tmp_path: Path):
    policy = tmp_path / "p.yaml"
    policy.write_text("")
    result = run_wardgate("ext-authz", "--policy", str(policy))
    assert result.returncode == 2
    assert "--http" in result.stderr and "--grpc" in result.stderr
    result = run_wardgate("ext-authz", "--policy", str(policy), "--grpc", "nonsense")
    assert result.returncode == 2
    assert "--grpc must be HOST:PORT" in result.stderr
    policy.write_text("limits: {maxUrlBytes: 1}\n")
    result = run_wardgate("ext-authz", "--policy", str(policy), "--grpc", "127.0.0.1:0")
    assert result.returncode == 1
    assert "limits.maxUrlBytes" in result.stderr


class _Process:
    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "wardgate", *args],
            env=wardgate_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr:  # closed at EOF: no pipe left to the garbage collector
            for raw in iter(self.popen.stderr.readline, b""):
                self.lines.append(raw.decode(errors="replace"))

    def wait_for(self, message: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if f'"message":"{message}"' in line:
                    return json.loads(line)["wardgate"]
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {message!r} log line:\n" + "".join(self.lines))

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def _status(url: str, method: str = "GET") -> int:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url) as resp:
            await resp.read()
            return resp.status


async def test_ext_authz_command_serves_envoy_and_stops_cleanly(tmp_path: Path, envoy_stack):
    policy = tmp_path / "p.yaml"
    policy.write_text("limits: {allowedMethods: [GET]}\n")
    proc = _Process(
        "ext-authz",
        "--policy",
        str(policy),
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    )
    try:
        info = proc.wait_for("ext_authz listening")
        assert any("body cap" in note for note in info["limitations"])
        ports = (_port(info["grpc"]), _port(info["http"]))
        for example in ("ext-authz-grpc.yaml", "ext-authz-http.yaml"):
            stack = await envoy_stack(example, authz_ports=ports)
            assert await _status(stack.url + "/echo") == 200
            assert await _status(stack.url + "/echo", "DELETE") == 405
        admin = f"http://{info['admin']}"
        async with aiohttp.ClientSession() as session:
            async with session.get(admin + "/stats/prometheus") as resp:
                metrics = await resp.text()
            assert 'wardgate_requests_total{code_class="4xx",replied_by="limits"} 2.0' in metrics
            async with session.get(admin + "/server_info") as resp:
                server_info = await resp.json()
            assert server_info["policy"]["filters"][0] == "limits"
            assert await _status(admin + "/ready") == 200
            async with session.post(admin + "/healthcheck/fail") as resp:
                assert resp.status == 200
            assert await _status(admin + "/ready") == 503
        async with grpc.aio.insecure_channel(info["grpc"]) as channel:
            health = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=bytes,
                response_deserializer=bytes,
            )
            assert await health(b"") == b"\x08\x02"  # NOT_SERVING: Envoy and kubelet stop
    finally:
        assert proc.stop() == 0


async def test_run_serves_native_and_ext_authz_from_one_policy(
    tmp_path: Path, upstream: str, envoy_stack
):
    policy = tmp_path / "p.yaml"
    policy.write_text("limits: {allowedMethods: [GET]}\n")
    proc = _Process(
        "run",
        "--upstream",
        upstream,
        "--policy",
        str(policy),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--ext-authz-grpc",
        "127.0.0.1:0",
        "--access-log",
        "off",
    )
    try:
        native = proc.wait_for("listening")
        info = proc.wait_for("ext_authz listening")
        stack = await envoy_stack("ext-authz-grpc.yaml", authz_ports=(_port(info["grpc"]), 1))
        for url in (f"http://{native['listen']}", stack.url):
            assert await _status(url + "/echo") == 200
            assert await _status(url + "/echo", "DELETE") == 405
        # One policy, one reload: both doors change together.
        policy.write_text("limits: {allowedMethods: [GET, DELETE]}\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await _status(f"http://{native['listen']}/echo", "DELETE") == 200:
                break
            await asyncio.sleep(0.1)
        assert await _status(stack.url + "/echo", "DELETE") == 200
    finally:
        assert proc.stop() == 0


def test_validate_says_what_the_policy_cannot_get_over_ext_authz(tmp_path: Path):
    policy = tmp_path / "p.yaml"
    policy.write_text("headers: {response: {add: [{name: x-a, value: b}]}}\n")
    result = run_wardgate("validate", str(policy))
    assert result.returncode == 0
    notes = [line for line in result.stdout.splitlines() if "note (envoy)" in line]
    assert any("headers, response_waf have response phases" in n and "ext_proc" in n for n in notes)
    assert any("body cap (104857600 bytes)" in n for n in notes)
    # Without a header policy and with the WAF (and so its response side) off, nothing
    # claims a response phase.
    policy.write_text("waf: {mode: off}\n")
    result = run_wardgate("validate", str(policy))
    assert "response phases" not in result.stdout
