"""The arithmetic behind the connection cap and the body clock (the behaviour itself is
tested over sockets in test_proxy_slow_clients)."""

from __future__ import annotations

import asyncio
import resource

import pytest

from wardgate.config.proxy import ProxySpec
from wardgate.proxy.overload import connection_budget, effective_limit, raise_nofile_limit
from wardgate.proxy.timeouts import BodyClock


@pytest.mark.parametrize(("nofile", "budget"), [(400, 8), (1024, 320), (65536, 32576), (100, 1)])
def test_budget_leaves_room_for_upstreams_pool_and_reserve(nofile, budget):
    assert connection_budget(nofile) == budget


def test_effective_limit_is_the_lower_of_policy_and_budget():
    assert effective_limit(4096, 320) == 320
    assert effective_limit(100, 320) == 100


def test_soft_nofile_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = raise_nofile_limit()
    assert now >= soft
    if hard != resource.RLIM_INFINITY:
        assert now == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_body_clock_earns_time_per_byte_and_counts_only_waiting():
    proxy = ProxySpec.model_validate({"timeouts": {"requestBody": "2s"}, "minRequestBodyRate": 100})
    clock = BodyClock(proxy)
    assert clock.remaining() == pytest.approx(2.0)
    assert clock.remaining(expect=300) == pytest.approx(5.0)

    async def read(data: bytes, delay: float) -> bytes:
        await asyncio.sleep(delay)
        return data

    async def scenario() -> None:
        await clock.read(read(b"x" * 100, 0.2))  # +1 s earned, 0.2 s spent
        assert clock.remaining() == pytest.approx(2.8, abs=0.1)
        await asyncio.sleep(0.5)  # not waiting for the client: not counted
        assert clock.remaining() == pytest.approx(2.8, abs=0.1)
        with pytest.raises(TimeoutError):
            await clock.read(read(b"late", 10))
        assert clock.timed_out

    asyncio.run(scenario())
