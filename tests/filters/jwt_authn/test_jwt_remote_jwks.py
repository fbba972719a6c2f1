"""Remote JWKS over real HTTP (an aiohttp server on 127.0.0.1, port 0): on-demand fetch,
caching, key rotation, unknown kid (refetch once, shared, rate-limited), outage with
staleness, never-fetched (503), background refresh, survival across policy reloads."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.filters.jwt_authn.conftest import K1
from tests.filters.jwt_authn.helpers import (
    ISSUER,
    claims,
    compiled,
    ec_key,
    policy,
    rsa_key,
    send,
)
from wardgate.filters.jwt_authn import jwks as jwks_module
from wardgate.filters.jwt_authn import stats

K2 = ec_key("k2")


def remote_policy(url: str, **remote: object) -> str:
    provider = {
        "issuer": ISSUER,
        "remoteJwks": {"httpUri": {"uri": url, "timeout": "2s"}, **remote},
    }
    return policy({"idp": provider})


def _cache(url: str) -> jwks_module.RemoteJwks:
    return jwks_module._REGISTRY[url]


def _count(counter, **labels) -> float:
    return counter.labels(**labels)._value.get() if labels else counter._value.get()


async def test_keys_are_fetched_once_and_cached(jwks_server):
    pol = compiled(remote_policy(jwks_server.url))
    assert jwks_server.hits == 0  # nothing is fetched at compile time
    for _ in range(3):
        assert (await send(pol, token=K1.sign(claims()))).status == 200
    assert jwks_server.hits == 1


async def test_key_rotation_new_kid_triggers_one_refetch(jwks_server):
    pol = compiled(remote_policy(jwks_server.url, minRefreshInterval="1ms"))
    assert (await send(pol, token=K1.sign(claims()))).status == 200
    jwks_server.keys = [K2]  # rotated: k1 gone, k2 new
    assert (await send(pol, token=K2.sign(claims()))).status == 200
    assert jwks_server.hits == 2
    # the retired key: its kid is now unknown, one refetch, then refused
    out = await send(pol, token=K1.sign(claims(sub="new")))
    assert (out.status, out.reason) == (401, "unknown_kid")


async def test_unknown_kid_right_after_a_fetch_is_refused_without_refetch(jwks_server):
    pol = compiled(remote_policy(jwks_server.url, minRefreshInterval="1h"))
    assert (await send(pol, token=K1.sign(claims()))).status == 200
    assert jwks_server.hits == 1
    stranger = rsa_key("k-unknown")
    out = await send(pol, token=stranger.sign(claims()))
    assert (out.status, out.reason) == (401, "unknown_kid")
    out = await send(pol, token=stranger.sign(claims(sub="again")))
    assert (out.status, out.reason) == (401, "unknown_kid")
    # the fetch that just happened counts against minRefreshInterval: no refetch storm
    assert jwks_server.hits == 1


async def test_unknown_kid_refetch_happens_once_when_interval_allows(jwks_server):
    pol = compiled(remote_policy(jwks_server.url, minRefreshInterval="1h"))
    stranger = rsa_key("k-unknown")
    jwks_server.keys = [K1]
    # no keys yet: the first request fetches; its kid is unknown; the rate limit (the
    # fetch just happened) forbids a second fetch: refused after exactly one fetch
    out = await send(pol, token=stranger.sign(claims()))
    assert out.reason == "unknown_kid" and jwks_server.hits == 1
    _cache(jwks_server.url).last_attempt -= 7200  # the interval has passed
    out = await send(pol, token=stranger.sign(claims()))
    assert out.reason == "unknown_kid" and jwks_server.hits == 2
    out = await send(pol, token=stranger.sign(claims()))
    assert out.reason == "unknown_kid" and jwks_server.hits == 2


async def test_concurrent_requests_share_one_fetch(jwks_server):
    jwks_server.gate = asyncio.Event()
    pol = compiled(remote_policy(jwks_server.url))
    tasks = [asyncio.create_task(send(pol, token=K1.sign(claims(n=i)))) for i in range(20)]
    while jwks_server.hits == 0:
        await asyncio.sleep(0.01)
    jwks_server.gate.set()
    results = await asyncio.gather(*tasks)
    assert [r.status for r in results] == [200] * 20
    assert jwks_server.hits == 1


async def test_never_fetched_is_503_counted_and_logged(jwks_server, caplog):
    jwks_server.status = 500
    pol = compiled(remote_policy(jwks_server.url))
    before = _count(stats.JWKS_FETCHES, result="http_status")
    with caplog.at_level(logging.WARNING, logger="wardgate.jwt_authn"):
        out = await send(pol, token=K1.sign(claims()))
    assert (out.status, out.reason) == (503, "jwks_unavailable")
    assert out.header("www-authenticate") is None
    assert _count(stats.JWKS_FETCHES, result="http_status") == before + 1
    record = next(r for r in caplog.records if r.getMessage() == "JWKS fetch failed")
    assert record.wardgate["result"] == "http_status"  # type: ignore[attr-defined]


async def test_unreachable_provider_is_503(unused_tcp_port):
    pol = compiled(remote_policy(f"http://127.0.0.1:{unused_tcp_port}/jwks.json"))
    out = await send(pol, token=K1.sign(claims()))
    assert (out.status, out.reason) == (503, "jwks_unavailable")


async def test_a_hanging_provider_times_out_into_503(jwks_server):
    jwks_server.hang = True
    provider = {
        "issuer": ISSUER,
        "remoteJwks": {"httpUri": {"uri": jwks_server.url, "timeout": "200ms"}},
    }
    pol = compiled(policy({"idp": provider}))
    before = _count(stats.JWKS_FETCHES, result="timeout")
    out = await send(pol, token=K1.sign(claims()))
    assert out.reason == "jwks_unavailable"
    assert _count(stats.JWKS_FETCHES, result="timeout") == before + 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"keys": {}}',
        json.dumps({"keys": [{"kty": "oct", "k": "a" * 43}]}).encode(),  # remote HMAC keys
        b'{"keys": [], "keys": []}',
    ],
)
async def test_an_unusable_jwks_document_is_503(jwks_server, body):
    jwks_server.body = body
    pol = compiled(remote_policy(jwks_server.url))
    assert (await send(pol, token=K1.sign(claims()))).reason == "jwks_unavailable"


async def test_outage_keeps_fetched_keys_until_max_staleness(jwks_server):
    pol = compiled(remote_policy(jwks_server.url, cacheDuration="60s", maxStaleness="10m"))
    assert (await send(pol, token=K1.sign(claims()))).status == 200
    jwks_server.status = 503
    cache = _cache(jwks_server.url)
    cache.fetched_at -= 120  # past cacheDuration, within maxStaleness
    stale_before = _count(stats.JWKS_STALE)
    out = await send(pol, token=K1.sign(claims(n=1)))
    assert out.status == 200
    assert _count(stats.JWKS_STALE) == stale_before + 1
    assert jwks_server.hits == 2  # it did try to refresh
    cache.fetched_at -= 3600  # beyond maxStaleness
    cache.last_failure -= 3600
    out = await send(pol, token=K1.sign(claims(n=2)))
    assert (out.status, out.reason) == (503, "jwks_unavailable")
    jwks_server.status = 200  # the provider is back
    cache.last_failure -= 3600
    assert (await send(pol, token=K1.sign(claims(n=3)))).status == 200


async def test_background_refresh_before_expiry(jwks_server):
    pol = compiled(remote_policy(jwks_server.url, cacheDuration="100s"))
    assert (await send(pol, token=K1.sign(claims()))).status == 200
    _cache(jwks_server.url).fetched_at -= 85  # 85 % of cacheDuration
    jwks_server.gate = asyncio.Event()  # the refresh will wait: the request must not
    out = await send(pol, token=K1.sign(claims(n=1)))
    assert out.status == 200
    while jwks_server.hits < 2:
        await asyncio.sleep(0.01)
    jwks_server.gate.set()
    cache = _cache(jwks_server.url)
    while cache.version < 2:
        await asyncio.sleep(0.01)


async def test_the_cache_survives_a_policy_reload(jwks_server):
    first = compiled(remote_policy(jwks_server.url))
    assert (await send(first, token=K1.sign(claims()))).status == 200
    second = await asyncio.to_thread(compiled, remote_policy(jwks_server.url) + "\n# v2\n")
    assert (await send(second, token=K1.sign(claims(n=2)))).status == 200
    assert jwks_server.hits == 1


async def test_retry_policy_retries_a_failed_fetch(jwks_server):
    jwks_server.status = 500
    remote = {"retryPolicy": {"numRetries": 2, "retryBackOff": {"baseInterval": "10ms"}}}
    pol = compiled(remote_policy(jwks_server.url, **remote))
    assert (await send(pol, token=K1.sign(claims()))).reason == "jwks_unavailable"
    assert jwks_server.hits == 3


async def test_after_a_failed_fetch_requests_do_not_storm_the_provider(jwks_server):
    jwks_server.status = 500
    pol = compiled(remote_policy(jwks_server.url, asyncFetch={"failedRefetchDuration": "1h"}))
    for i in range(5):
        out = await send(pol, token=K1.sign(claims(n=i)))
        assert out.reason == "jwks_unavailable"
    assert jwks_server.hits == 1
    jwks_server.status = 200
    _cache(jwks_server.url).last_failure -= 7200  # the refetch delay has passed
    assert (await send(pol, token=K1.sign(claims()))).status == 200
