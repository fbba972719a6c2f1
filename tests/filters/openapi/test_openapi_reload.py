"""A changed spec is a new policy generation: in a ConfigMap volume (the policy text is
the same, the spec next to it changed) and as a plain edit of the spec file alone."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp

POLICY = "openapi:\n  specFile: openapi.json\n  rejectUnknownQueryParameters: false\n"


def spec(*methods: str) -> str:
    ops = {m: {"responses": {"200": {"description": "ok"}}} for m in methods}
    return json.dumps(
        {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/echo": ops}}
    )


async def _status(url: str, method: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + "/echo") as resp:
            return resp.status


async def _wait_generation(gw, generation: int) -> None:
    for _ in range(100):
        if gw.process.holder.current.generation >= generation:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no generation {generation}: {gw.process.reloader.last_error}")


async def test_configmap_swap_with_only_the_spec_changed(upstream, gateway, tmp_path: Path):
    for version, methods in (("..v1", ("get",)), ("..v2", ("get", "post"))):
        (tmp_path / version).mkdir()
        (tmp_path / version / "policy.yaml").write_text(POLICY)  # identical text
        (tmp_path / version / "openapi.json").write_text(spec(*methods))
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    os.symlink("..data/openapi.json", tmp_path / "openapi.json")
    gw = await gateway(upstream, "")
    gw.process.reloader.path = tmp_path / "policy.yaml"
    gw.process.reloader._seen = ()
    await _wait_generation(gw, 2)
    assert await _status(gw.url, "GET") == 200
    assert await _status(gw.url, "POST") == 405
    first = gw.process.holder.current.digest
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
    await _wait_generation(gw, 3)
    assert gw.process.holder.current.digest != first
    assert await _status(gw.url, "POST") == 200


async def test_editing_the_spec_file_alone_reloads(upstream, gateway, tmp_path: Path):
    (tmp_path / "openapi.json").write_text(spec("get"))
    (tmp_path / "policy.yaml").write_text(POLICY)
    gw = await gateway(upstream, "")
    gw.process.reloader.path = tmp_path / "policy.yaml"
    gw.process.reloader._seen = ()
    await _wait_generation(gw, 2)
    assert await _status(gw.url, "POST") == 405
    (tmp_path / "openapi.json").write_text(spec("get", "post", "delete"))
    await _wait_generation(gw, 3)
    assert await _status(gw.url, "POST") == 200
    # A broken spec keeps the last good policy.
    (tmp_path / "openapi.json").write_text("{not json")
    for _ in range(50):
        if gw.process.reloader.last_error:
            break
        await asyncio.sleep(0.1)
    assert "openapi" in (gw.process.reloader.last_error or "")
    assert await _status(gw.url, "DELETE") == 200
