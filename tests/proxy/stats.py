"""Reading one sample from the gateway's Prometheus endpoint (counters are process-wide in
in-process tests, so tests compare before and after)."""

from __future__ import annotations

import aiohttp


async def metric(admin_url: str, name: str, labels: str = "") -> float:
    """The value of ``name{labels}`` (``labels`` as written in the exposition, e.g.
    ``kind="request_headers"``), 0 when absent."""
    async with aiohttp.ClientSession() as session:
        async with session.get(admin_url + "/stats/prometheus") as resp:
            text = await resp.text()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0
