"""The status listener (issue 13, item 2): read-only, on all interfaces, own port; the
in-process gateway and ``wardgate run --status`` as a real process (the sidecar's command)."""

from __future__ import annotations

import aiohttp
import pytest

from wardgate.admin.status import STATUS_PATHS

MUTATING = ("/healthcheck/fail", "/healthcheck/ok", "/drain_listeners", "/quitquitquit", "/reload")


async def _call(url: str, method: str = "GET") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url) as resp:
            return resp.status, await resp.text()


async def test_ready_policy_and_metrics(upstream, gateway):
    gw = await gateway(upstream, status_port=0)
    status = f"http://{gw.process.state.status}"
    assert gw.process.state.status.startswith("0.0.0.0:")
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/echo") as resp:  # something to count
            assert resp.status == 200
    assert await _call(status + "/ready") == (200, "LIVE\n")
    assert await _call(status + "/healthz/ready") == (200, "LIVE\n")
    async with aiohttp.ClientSession() as session:
        async with session.get(status + "/policy") as resp:
            doc = await resp.json()
    current = gw.process.holder.current
    assert doc == {
        "digest": current.digest,
        "generation": current.generation,
        "state": "LIVE",
        "last_reload_error": None,
    }
    code, text = await _call(status + "/stats/prometheus")
    assert code == 200 and "wardgate_requests_total" in text


async def test_nothing_mutating_is_reachable(upstream, gateway):
    gw = await gateway(upstream, status_port=0)
    status = f"http://{gw.process.state.status}"
    for path in MUTATING:
        for method in ("GET", "POST"):
            code, _ = await _call(status + path, method)
            assert code in (404, 405), (method, path, code)
    for path in ("/config_dump", "/server_info", "/stats", "/"):
        assert (await _call(status + path))[0] == 404
    for path in STATUS_PATHS:
        for method in ("POST", "PUT", "DELETE"):
            assert (await _call(status + path, method))[0] == 405
    assert (await _call(status + "/ready"))[0] == 200  # and the gateway still serves


async def test_ready_follows_the_admin_health_check(upstream, gateway):
    gw = await gateway(upstream, status_port=0)
    status = f"http://{gw.process.state.status}"
    assert (await _call(gw.admin_url + "/healthcheck/fail", "POST"))[0] == 200
    assert await _call(status + "/ready") == (503, "DRAINING\n")


def test_no_status_listener_unless_asked(gateway_process):
    import json

    proc = gateway_process("--upstream", "http://127.0.0.1:9")
    line = next(x for x in proc.stderr_lines if '"listening"' in x)
    assert json.loads(line)["wardgate"]["status"] is None


@pytest.mark.timeout(120)
async def test_wardgate_run_status_flag(gateway_process, upstream):
    """The sidecar's own command line: ``--status 0.0.0.0:PORT``."""
    import json

    proc = gateway_process("--upstream", upstream, "--status", "127.0.0.1:0")
    line = next(x for x in proc.stderr_lines if '"listening"' in x)
    bound = json.loads(line)["wardgate"]["status"]
    assert bound.startswith("127.0.0.1:")
    assert await _call(f"http://{bound}/ready") == (200, "LIVE\n")


@pytest.mark.timeout(180)
async def test_supervisor_serves_the_status_port(gateway_process, tmp_path):
    """``--workers 2``: the supervisor serves the status port beside the admin port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    gateway_process(
        "--upstream",
        "http://127.0.0.1:9",
        "--policy",
        str(policy),
        "--workers",
        "2",
        "--status",
        f"127.0.0.1:{port}",
        marker='"supervising workers"',
    )
    assert await _call(f"http://127.0.0.1:{port}/ready") == (200, "LIVE\n")
    assert (await _call(f"http://127.0.0.1:{port}/quitquitquit", "POST"))[0] == 404
