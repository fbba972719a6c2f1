"""End to end through ``wardgate run`` (a real process): the token is checked, stripped
unless ``forward``, claims reach the upstream as headers, requirement trees hold, refusals
carry ``WWW-Authenticate`` and show in the access log and metrics; a hot reload keeps the
fetched JWKS."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import yaml

from tests.filters.jwt_authn.conftest import K1
from tests.filters.jwt_authn.helpers import ISSUER, claims, ed_key, jwks

PARTNER = ed_key("partner-1")
PARTNER_ISS = "https://partner.example"


def _policy(jwks_url: str, partner_file: Path, user_header: str = "x-user") -> str:
    doc = {
        "jwt": {
            "providers": {
                "corp": {
                    "issuer": ISSUER,
                    "audiences": ["orders"],
                    "remoteJwks": {"httpUri": {"uri": jwks_url, "timeout": "2s"}},
                    "claimToHeaders": [
                        {"headerName": user_header, "claimName": "sub"},
                        {"headerName": "x-tenant", "claimName": "org.tenant"},
                    ],
                },
                "partner": {
                    "issuer": PARTNER_ISS,
                    "localJwks": {"filename": str(partner_file)},
                    "fromHeaders": [{"name": "x-partner-token"}],
                    "forward": True,
                },
            },
            "rules": [
                {"match": {"path": "/echo/health"}, "skip": True},
                {
                    "match": {"prefix": "/echo/admin"},
                    "requires": {"providerName": "corp"},
                    "claims": {"scopes": ["admin"]},
                },
                {
                    "match": {"prefix": "/echo"},
                    "requires": {
                        "requiresAny": {
                            "requirements": [{"providerName": "corp"}, {"providerName": "partner"}]
                        }
                    },
                },
            ],
        }
    }
    return yaml.safe_dump(doc)


def _upstream_headers(body: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_jwt_through_wardgate_run(tmp_path, upstream, jwks_server, gateway_process):
    partner_file = tmp_path / "partner-jwks.json"  # as a mounted Kubernetes Secret would be
    partner_file.write_text(jwks(PARTNER))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(_policy(jwks_server.url, partner_file))
    gw = gateway_process("--upstream", upstream, "--policy", str(policy_file))
    token = K1.sign(claims(org={"tenant": "acme"}))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/echo") as resp:
            assert resp.status == 401
            www = resp.headers["www-authenticate"]
            assert www.startswith('Bearer realm="http://') and "error=" not in www  # as Envoy
            problem = await resp.json(content_type=None)
            assert problem["reason"] == "missing" and problem["filter"] == "jwt_authn"

        headers = {"authorization": f"Bearer {token}", "x-user": "mallory"}
        async with http.get(f"{gw.url}/echo", headers=headers) as resp:
            assert resp.status == 200
            seen = _upstream_headers(await resp.json())
        assert seen["x-user"] == ["alice"]
        assert seen["x-tenant"] == ["acme"]
        assert "authorization" not in seen  # forward: false

        partner = PARTNER.sign(claims(iss=PARTNER_ISS, aud=None))
        async with http.get(f"{gw.url}/echo", headers={"x-partner-token": partner}) as resp:
            assert resp.status == 200
            seen = _upstream_headers(await resp.json())
        assert seen["x-partner-token"] == [partner]  # forward: true
        assert "x-user" not in seen

        async with http.get(f"{gw.url}/echo/admin", headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json(content_type=None))["reason"] == "insufficient_claims"
        admin = K1.sign(claims(scope="orders:read admin"))
        async with http.get(
            f"{gw.url}/echo/admin", headers={"authorization": f"Bearer {admin}"}
        ) as resp:
            assert resp.status == 200

        async with http.get(f"{gw.url}/echo/health") as resp:
            assert resp.status == 200
        async with http.get(f"{gw.url}/other") as resp:
            assert resp.status == 403

        expired = K1.sign(claims(exp=int(time.time()) - 3600))
        async with http.get(
            f"{gw.url}/echo", headers={"authorization": f"Bearer {expired}"}
        ) as resp:
            assert resp.status == 401
            assert 'error="invalid_token"' in resp.headers["www-authenticate"]
            assert (await resp.json(content_type=None))["reason"] == "expired"

        async with http.get(f"{gw.admin_url}/stats/prometheus") as resp:
            metrics = await resp.text()
        assert 'wardgate_jwt_decisions_total{reason="expired",result="refused"} 1.0' in metrics
        assert 'wardgate_jwt_jwks_fetches_total{result="success"} 1.0' in metrics

        # hot reload: a new claim header name; the fetched JWKS is reused (no new fetch)
        policy_file.write_text(_policy(jwks_server.url, partner_file, user_header="x-subject"))
        deadline = time.monotonic() + 30
        while True:
            async with http.get(f"{gw.url}/echo", headers=headers) as resp:
                seen = _upstream_headers(await resp.json())
            if "x-subject" in seen or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert seen["x-subject"] == ["alice"]
        assert seen["x-user"] == ["mallory"]  # no longer a claim header: the client's own
        assert jwks_server.hits == 1

    gw.stop()
    log = "\n".join(gw.stdout_lines + gw.stderr_lines)
    assert token not in log and partner not in log  # tokens never reach the logs
    assert token.split(".")[2] not in log
    access = [json.loads(line) for line in gw.stdout_lines if line.startswith("{")]
    refused = [a for a in access if a["http.response.status_code"] == 401]
    assert {a["wardgate"]["reason"] for a in refused} == {"missing", "expired"}
    assert all(a["wardgate"]["replied_by"] == "jwt_authn" for a in refused)


def test_wardgate_explain_decides_jwt_offline(tmp_path):
    from tests.conftest import run_wardgate

    (tmp_path / "jwks.json").write_text(jwks(PARTNER))
    policy_file = tmp_path / "policy.yaml"
    provider = {"issuer": PARTNER_ISS, "localJwks": {"filename": "jwks.json"}}
    rules = [{"match": {"prefix": "/"}, "requires": {"providerName": "p"}}]
    policy_file.write_text(yaml.safe_dump({"jwt": {"providers": {"p": provider}, "rules": rules}}))
    token = PARTNER.sign(claims(iss=PARTNER_ISS))
    request = tmp_path / "req.yaml"
    request.write_text(
        yaml.safe_dump({"path": "/x", "headers": {"authorization": f"Bearer {token}"}})
    )
    allowed = run_wardgate("explain", "--policy", str(policy_file), "--request", str(request))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    request.write_text(yaml.safe_dump({"path": "/x"}))
    refused = run_wardgate("explain", "--policy", str(policy_file), "--request", str(request))
    assert refused.returncode == 1
    result = json.loads(refused.stdout)
    assert (result["status"], result["reason"]) == (401, "missing")
    assert token not in allowed.stdout
