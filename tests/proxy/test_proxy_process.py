"""``wardgate run`` as a real process: streaming with bounded memory, workers, signals."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import aiohttp

from tests.conftest import run_wardgate
from wardgate.proxy.demo import pattern_bytes, start_demo_upstream

MIB = 1024 * 1024


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _upstream_in_thread() -> tuple[str, threading.Event]:
    ready = threading.Event()
    stop = threading.Event()
    box: list[int] = []

    def main() -> None:
        async def serve() -> None:
            runner, port = await start_demo_upstream()
            box.append(port)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await runner.cleanup()

        asyncio.run(serve())

    threading.Thread(target=main, daemon=True).start()
    ready.wait(10)
    return f"http://127.0.0.1:{box[0]}", stop


async def test_50_mib_upload_and_download_byte_exact_with_bounded_memory(gateway_process, tmp_path):
    upstream, stop = _upstream_in_thread()
    # The WAF refuses bodies over its inspection limit by default; this test streams.
    policy = tmp_path / "policy.yaml"
    policy.write_text("waf: {oversizeAction: allowUninspected}\n")
    try:
        gw = gateway_process("--upstream", upstream, "--policy", str(policy))
        baseline = _rss_mib(gw.popen.pid)
        size = 50 * MIB
        digest = hashlib.sha256()
        block = os.urandom(MIB)

        async def body():
            for _ in range(50):
                digest.update(block)
                yield block

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            # Chunked upload: the upstream gets the same bytes, still chunked.
            async with session.post(gw.url + "/upload", data=body()) as resp:
                assert resp.status == 200, "\n".join(gw.stderr_lines)
                result = await resp.json()
            assert result["length"] == size
            assert result["sha256"] == digest.hexdigest()
            assert result["transferEncoding"] == "chunked"
            # Upload with Content-Length: forwarded with the same Content-Length.
            payload = block * 50
            async with session.post(gw.url + "/upload", data=payload) as resp:
                result = await resp.json()
            assert result["contentLength"] == str(size)
            assert result["sha256"] == hashlib.sha256(payload).hexdigest()
            del payload
            # Download.
            expected = hashlib.sha256()
            got = hashlib.sha256()
            async with session.get(gw.url + f"/bytes/{size}") as resp:
                assert resp.headers["content-length"] == str(size)
                async for chunk in resp.content.iter_chunked(MIB):
                    got.update(chunk)
            block_pattern = pattern_bytes(0, 251 * 261)
            sent = 0
            while sent < size:
                piece = block_pattern[: min(len(block_pattern), size - sent)]
                expected.update(piece)
                sent += len(piece)
            assert got.hexdigest() == expected.hexdigest()
        # 150 MiB went through; the gateway's peak memory grew by a small, bounded amount.
        assert _peak_rss_mib(gw.popen.pid) - baseline < 40
    finally:
        stop.set()


def test_invalid_policy_at_start_exits_non_zero(tmp_path: Path, gateway_process):
    policy = tmp_path / "bad.yaml"
    policy.write_text("limits:\n  maxUrlBytes: 5\n  bogus: 1\n")
    gw = gateway_process("--upstream", "http://127.0.0.1:9", "--policy", str(policy), wait=False)
    assert gw.popen.wait(30) == 1
    text = "\n".join(gw.stderr_lines)
    assert "limits.maxUrlBytes" in text and "limits.bogus: unknown field" in text


def test_bad_arguments_are_usage_errors():
    result = run_wardgate("run", "--upstream", "ftp://x")
    assert result.returncode == 2 and "upstream must be an http(s)" in result.stderr
    result = run_wardgate("run", "--upstream", "http://127.0.0.1:1", "--listen", "nope")
    assert result.returncode == 2 and "--listen must be HOST:PORT" in result.stderr


async def test_sigterm_drains_in_flight_requests(gateway_process):
    upstream, stop = _upstream_in_thread()
    try:
        gw = gateway_process("--upstream", upstream)
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(session.get(gw.url + "/delay/1"))
            await asyncio.sleep(0.3)
            gw.popen.send_signal(signal.SIGTERM)
            resp = await request
            assert resp.status == 200
            await resp.read()
        code = await asyncio.to_thread(gw.popen.wait, 15)
        assert code == 0
    finally:
        stop.set()


async def test_quitquitquit_stops_the_gateway(gateway_process):
    gw = gateway_process("--upstream", "http://127.0.0.1:9")
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.admin_url + "/quitquitquit") as resp:
            assert (resp.status, await resp.text()) == (200, "OK\n")
    assert await asyncio.to_thread(gw.popen.wait, 15) == 0


async def test_workers_share_the_port_and_metrics_add_up(gateway_process):
    upstream, stop = _upstream_in_thread()
    try:
        gw = gateway_process(
            "--upstream", upstream, "--workers", "2", marker='"supervising workers"'
        )
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:  # workers start after the supervisor logs
                try:
                    async with session.get(gw.url + "/echo") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectorError:
                    pass
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            pids_seen = set()
            for _ in range(60):
                # A new connection each time: the kernel spreads them over the workers.
                async with aiohttp.ClientSession() as fresh:
                    async with fresh.get(gw.url + "/echo") as resp:
                        assert resp.status == 200
                        await resp.read()
            async with session.get(gw.admin_url + "/server_info") as resp:
                info = await resp.json()
            assert len(info["workers"]) == 2
            pids_seen.update(info["workers"])
            # A worker counts a request after its last byte went out, so the client can be
            # a moment ahead of the counters: poll until they settle, then demand exactness.
            deadline = time.monotonic() + 10
            while True:
                async with session.get(gw.admin_url + "/stats/prometheus") as resp:
                    prom = await resp.text()
                line = next(
                    x
                    for x in prom.splitlines()
                    if x.startswith(
                        'wardgate_requests_total{code_class="2xx",replied_by="upstream"}'
                    )
                )
                counted = float(line.split()[-1])
                if counted >= 61.0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert counted == 61.0
            # A worker that dies is replaced.
            os.kill(info["workers"][0], signal.SIGKILL)
            deadline = time.monotonic() + 20
            while True:
                await asyncio.sleep(0.3)
                async with session.get(gw.admin_url + "/server_info") as resp:
                    workers = (await resp.json())["workers"]
                if len(workers) == 2 and info["workers"][0] not in workers:
                    break
                assert time.monotonic() < deadline
        assert await asyncio.to_thread(gw.stop) == 0
    finally:
        stop.set()
