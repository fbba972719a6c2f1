"""The ext_authz server reloads its policy like ``wardgate run``: a changed file is the new
decision for the next check; an invalid file keeps the last good policy."""

from __future__ import annotations

import asyncio
import time

import aiohttp


async def _status_becomes(url: str, want: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    status = 0
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.delete(url) as resp:
                status = resp.status
            if status == want:
                return status
            await asyncio.sleep(0.05)
    return status


async def test_policy_change_reaches_envoy_decisions_and_bad_policy_is_ignored(envoy_stack):
    stack = await envoy_stack("ext-authz-grpc.yaml", "limits: {allowedMethods: [GET]}\n")
    url = stack.url + "/echo"
    assert await _status_becomes(url, 405) == 405
    stack.authz.reloader.path.write_text("limits: {allowedMethods: [GET, DELETE]}\n")
    assert await _status_becomes(url, 200) == 200
    generation = stack.authz.holder.current.generation
    stack.authz.reloader.path.write_text("limits: {allowedMethods: oops}\n")
    deadline = time.monotonic() + 15
    while stack.authz.reloader.last_error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert stack.authz.reloader.last_error is not None
    assert stack.authz.holder.current.generation == generation
    assert await _status_becomes(url, 200) == 200  # still the last good policy
