"""The admin port (Envoy endpoints) and hot reload under load."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

POLICY_V1 = "headers: {response: {add: [{name: x-policy, value: v1}]}}\n"
POLICY_V2 = "headers: {response: {add: [{name: x-policy, value: v2}]}}\n"


async def _admin(gw, method: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, gw.admin_url + path) as resp:
            return resp.status, await resp.text()


async def test_ready_and_health_check_fail_ok(upstream, gateway):
    gw = await gateway(upstream)
    assert await _admin(gw, "GET", "/ready") == (200, "LIVE\n")
    assert await _admin(gw, "POST", "/healthcheck/fail") == (200, "OK\n")
    assert await _admin(gw, "GET", "/ready") == (503, "DRAINING\n")
    async with aiohttp.ClientSession() as session:  # traffic is still served
        async with session.get(gw.url + "/echo") as resp:
            assert resp.status == 200
    assert await _admin(gw, "POST", "/healthcheck/ok") == (200, "OK\n")
    assert await _admin(gw, "GET", "/ready") == (200, "LIVE\n")


async def test_mutating_endpoints_refuse_get(upstream, gateway):
    gw = await gateway(upstream)
    for path in ("/healthcheck/fail", "/healthcheck/ok", "/drain_listeners", "/quitquitquit"):
        status, body = await _admin(gw, "GET", path)
        assert status == 400 and "POST required" in body
    assert (await _admin(gw, "GET", "/ready"))[0] == 200  # nothing was changed


async def test_server_info_stats_prometheus_config_dump(upstream, gateway):
    gw = await gateway(upstream, POLICY_V1)
    async with aiohttp.ClientSession() as session:
        for path in ("/echo", "/status/500"):
            async with session.get(gw.url + path) as resp:
                await resp.read()
        async with session.request("TRACE", gw.url + "/") as resp:
            await resp.read()
        async with session.get(gw.admin_url + "/server_info") as resp:
            info = await resp.json()
        async with session.get(gw.admin_url + "/stats/prometheus") as resp:
            prom = await resp.text()
        async with session.get(gw.admin_url + "/stats") as resp:
            stats = await resp.text()
        async with session.get(gw.admin_url + "/config_dump") as resp:
            dump = await resp.json()
    assert info["state"] == "LIVE"
    assert info["policy"]["digest"] == gw.process.holder.current.digest
    assert info["policy"]["generation"] == 1
    assert info["uptime_current_epoch"].endswith("s")
    assert 'wardgate_requests_total{code_class="2xx",replied_by="upstream"}' in prom
    assert 'wardgate_requests_total{code_class="4xx",replied_by="limits"}' in prom
    assert "wardgate_request_duration_seconds_bucket" in prom
    assert "wardgate.requests_total.code_class.5xx.replied_by.upstream:" in stats
    assert dump["policy"]["headers"]["response"]["add"][0]["value"] == "v1"
    assert dump["filters"] == ["limits", "waf", "headers", "response_waf"]


async def test_drain_listeners_stops_accepting(upstream, gateway):
    gw = await gateway(upstream)
    address = gw.url
    assert await _admin(gw, "POST", "/drain_listeners") == (200, "OK\n")
    assert (await _admin(gw, "GET", "/ready"))[0] == 503
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(address + "/echo") as resp:
                raise AssertionError(f"still accepting: {resp.status}")
        except aiohttp.ClientConnectorError:
            pass


async def test_reload_under_200_concurrent_requests(upstream, gateway, tmp_path: Path):
    gw = await gateway(upstream, POLICY_V1)
    path = Path(gw.process.options.policy_path)
    failures: list[str] = []
    tags: list[str] = []

    async def client(session: aiohttp.ClientSession, i: int) -> None:
        for _ in range(5):
            try:
                async with session.get(f"{gw.url}/delay/0.02?c={i}") as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures.append(str(resp.status))
                    tags.append(",".join(resp.headers.getall("x-policy", [])))
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))

    async def flip() -> None:
        for i in range(6):
            await asyncio.sleep(0.15)
            path.write_text(POLICY_V2 if i % 2 == 0 else POLICY_V1)
            await gw.process.reload()

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(flip(), *(client(session, i) for i in range(200)))
    assert failures == []
    assert len(tags) == 1000
    assert set(tags) == {"v1", "v2"}  # every response carries exactly one generation's tag
    assert gw.process.holder.current.generation == 7


async def test_invalid_reload_keeps_the_last_good_policy(upstream, gateway):
    gw = await gateway(upstream, POLICY_V1)
    path = Path(gw.process.options.policy_path)
    path.write_text("limits: {maxHeadersCount: many}\n")
    await gw.process.reload()
    assert gw.process.holder.current.generation == 1
    assert "limits.maxHeadersCount" in (gw.process.reloader.last_error or "")
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/echo") as resp:
            assert resp.headers["x-policy"] == "v1"
        async with session.get(gw.admin_url + "/server_info") as resp:
            assert "maxHeadersCount" in (await resp.json())["policy"]["last_reload_error"]
        async with session.get(gw.admin_url + "/stats/prometheus") as resp:
            assert 'wardgate_policy_reloads_total{result="failure"}' in await resp.text()


async def test_watcher_sees_configmap_style_symlink_swap(upstream, tmp_path: Path, gateway):
    # Kubernetes ConfigMap volume layout: policy.yaml -> ..data/policy.yaml, ..data -> ..v1
    for version, text in (("..v1", POLICY_V1), ("..v2", POLICY_V2)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "policy.yaml").write_text(text)
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    gw = await gateway(upstream, POLICY_V1)
    gw.process.reloader.path = tmp_path / "policy.yaml"
    gw.process.reloader._seen = None
    await asyncio.sleep(0.3)
    assert gw.process.holder.current.generation == 1  # same content: no new generation
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")  # the kubelet's atomic swap
    for _ in range(50):
        await asyncio.sleep(0.1)
        if gw.process.holder.current.generation == 2:
            break
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/echo") as resp:
            assert resp.headers["x-policy"] == "v2"
