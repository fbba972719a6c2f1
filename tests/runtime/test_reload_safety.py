"""A reload never weakens the policy by accident (issue 19, faults 2 and 3): a file caught
mid-rewrite is not read, an empty document is refused, a removed filter is a warning, and
the watcher survives whatever the file holds."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import aiohttp
import pytest

from tests.filters.jwt_authn.helpers import ec_key, local_provider, policy

JWT_POLICY = policy({"p": local_provider(ec_key())}) + "waf: {mode: off}\n"


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_rewriting_a_jwt_policy_never_lets_a_request_without_token_through(upstream, gateway):
    gw = await gateway(upstream, JWT_POLICY)
    path = Path(gw.process.options.policy_path)
    statuses: list[int] = []
    done = asyncio.Event()

    async def hammer() -> None:
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                statuses.append(await _status(session, gw.url + "/echo"))

    async def rewrite_like_a_generator() -> None:
        # `generator > policy.yaml`: truncate, then write in pieces (a slow generator).
        for _ in range(20):
            with path.open("w") as out:
                out.flush()
                await asyncio.sleep(0.03)
                half = len(JWT_POLICY) // 2
                out.write(JWT_POLICY[:half])
                out.flush()
                await asyncio.sleep(0.03)
                out.write(JWT_POLICY[half:])
            await asyncio.sleep(0.05)
        # Keep asking until every reload the rewrites started has finished (compiling a
        # policy read half-way can take a while) and the watcher has had another look.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while gw.process.reloader._lock.locked() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        done.set()

    await asyncio.gather(hammer(), rewrite_like_a_generator())
    assert len(statuses) > 100
    assert 200 not in statuses, statuses.count(200)
    assert set(statuses) == {401}
    assert "jwt_authn" in gw.process.holder.current.filter_names()


async def test_an_empty_document_is_refused_on_reload(upstream, gateway):
    gw = await gateway(upstream, JWT_POLICY)
    path = Path(gw.process.options.policy_path)
    path.write_text("# regenerated below\n\n")
    await gw.process.reload()
    assert gw.process.holder.current.generation == 1
    assert "empty" in (gw.process.reloader.last_error or "")
    async with aiohttp.ClientSession() as session:
        assert await _status(session, gw.url + "/echo") == 401
    path.write_text("{}\n")  # the default policy, on purpose
    await gw.process.reload()
    assert gw.process.holder.current.generation == 2
    assert "jwt_authn" not in gw.process.holder.current.filter_names()


async def test_removing_a_filter_on_reload_is_a_warning_naming_it(upstream, gateway, caplog):
    gw = await gateway(upstream, JWT_POLICY)
    Path(gw.process.options.policy_path).write_text("waf: {mode: off}\n")
    with caplog.at_level(logging.WARNING, logger="wardgate.reload"):
        await gw.process.reload()
    assert gw.process.holder.current.generation == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    details = warnings[0].wardgate["policy"]  # type: ignore[attr-defined]
    assert details["removed_filters"] == ["jwt_authn"]
    assert "jwt" in details["changed_sections"]
    assert "BEGIN" not in str(details) and '"x"' not in str(details)  # no key material


@pytest.mark.parametrize(
    "content",
    [
        "a: " + "[" * 5000 + "]" * 5000,
        "".join(" " * i + f"k{i}:\n" for i in range(400)),
        "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"{n}: &{n} [{','.join(['*' + p] * 10)}]\n"
            for p, n in zip("abcdef", "bcdefg", strict=True)
        ),
    ],
    ids=["flow-nesting", "block-nesting", "alias-bomb"],
)
async def test_the_watcher_survives_any_file_and_applies_later_edits(upstream, gateway, content):
    gw = await gateway(upstream, "waf: {mode: off}\n")
    path = Path(gw.process.options.policy_path)
    path.write_text(content)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if gw.process.reloader.last_error:
            break
    assert gw.process.reloader.last_error
    assert "nested deeper" in gw.process.reloader.last_error or "aliases" in (
        gw.process.reloader.last_error
    )
    async with aiohttp.ClientSession() as session:  # POST /reload answers, no 500
        async with session.post(gw.admin_url + "/reload") as resp:
            assert resp.status == 200
    path.write_text("headers: {response: {add: [{name: x-policy, value: later}]}}\n")
    os.utime(path)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if gw.process.holder.current.generation == 2:
            break
    assert gw.process.holder.current.generation == 2
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/echo") as resp:
            assert resp.headers["x-policy"] == "later"
