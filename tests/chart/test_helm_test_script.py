"""``helm test``'s script (``charts/wardgate/files/helm-test.py``) run as the test pod runs
it, against TLS servers on 127.0.0.1 that present the certificate the chart generated: it
verifies the certificate against the chart's CA and the Service DNS name, and reports each
failure with what it expected."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.chart.render import CHART, NAMESPACE, RELEASE, Rendered, render

SCRIPT = CHART / "files" / "helm-test.py"
SERVICE_URL = f"https://{RELEASE}-wardgate-injector.{NAMESPACE}.svc:443"


def write_tls(r: Rendered, directory: Path) -> dict[str, Path]:
    secret = r.one("Secret", "-injector-tls")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, value in secret["data"].items():
        paths[key] = directory / key
        paths[key].write_bytes(base64.b64decode(value))
    sidecar = directory / "sidecar.yaml"
    sidecar.write_text(r.one("ConfigMap", "-sidecar")["data"]["sidecar.yaml"])
    paths["sidecar.yaml"] = sidecar
    return paths


Handler = Callable[[dict[str, Any]], dict[str, Any]]


async def start_tls_server(files: dict[str, Path], inject: Handler) -> tuple[web.AppRunner, int]:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def inject_handler(request: web.Request) -> web.Response:
        review = await request.json()
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": inject(review["request"]),
            }
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/inject", inject_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files["tls.crt"], files["tls.key"])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def run_script(
    files: dict[str, Path], port: int, url: str = SERVICE_URL, ca: Path | None = None
) -> tuple[int, str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "WARDGATE_INJECTOR_URL": url,
        "WARDGATE_CONNECT_ADDRESS": f"127.0.0.1:{port}",
        "WARDGATE_CA_FILE": str(ca or files["ca.crt"]),
        "WARDGATE_SIDECAR_CONFIG": str(files["sidecar.yaml"]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def allow_without_patch(request: dict[str, Any]) -> dict[str, Any]:
    return {"uid": request["uid"], "allowed": True}


@pytest.fixture
def chart_tls(tmp_path: Path) -> dict[str, Path]:
    return write_tls(render(), tmp_path / "tls")


@pytest.fixture
async def server(chart_tls: dict[str, Path]) -> AsyncIterator[int]:
    runner, port = await start_tls_server(chart_tls, allow_without_patch)
    yield port
    await runner.cleanup()


async def test_verified_tls_then_refuses_an_injector_that_does_not_inject(
    chart_tls: dict[str, Path], server: int
) -> None:
    code, out, err = await run_script(chart_tls, server)
    assert f"ok: {SERVICE_URL}/healthz over verified TLS" in out
    assert code == 1
    assert "FAIL: pod asking for a sidecar: expected an allowed JSONPatch" in err


async def test_refuses_a_certificate_from_another_ca(
    chart_tls: dict[str, Path], server: int, tmp_path: Path
) -> None:
    other = write_tls(render(), tmp_path / "other")  # a second install: a different CA
    code, out, err = await run_script(chart_tls, server, ca=other["ca.crt"])
    assert code == 1 and "ok:" not in out
    assert "CERTIFICATE_VERIFY_FAILED" in err


async def test_refuses_a_certificate_for_another_name(
    chart_tls: dict[str, Path], server: int
) -> None:
    code, out, err = await run_script(
        chart_tls, server, url=f"https://someone-else.{NAMESPACE}.svc:443"
    )
    assert code == 1 and "ok:" not in out
    assert "CERTIFICATE_VERIFY_FAILED" in err and "someone-else" in err


async def test_refuses_a_wrong_uid_echo(chart_tls: dict[str, Path]) -> None:
    runner, port = await start_tls_server(
        chart_tls, lambda req: {"uid": "not-" + req["uid"], "allowed": True}
    )
    try:
        code, _, err = await run_script(chart_tls, port)
    finally:
        await runner.cleanup()
    assert code == 1 and "echoed uid" in err


async def test_refuses_a_patch_with_another_image(chart_tls: dict[str, Path]) -> None:
    patch = [
        {
            "op": "add",
            "path": "/spec/initContainers",
            "value": [{"name": "wardgate", "image": "evil:1"}],
        }
    ]

    def wrong_image(request: dict[str, Any]) -> dict[str, Any]:
        return {"uid": request["uid"], "allowed": True, "patchType": "JSONPatch",
                "patch": base64.b64encode(json.dumps(patch).encode()).decode()}  # fmt: skip

    runner, port = await start_tls_server(chart_tls, wrong_image)
    try:
        code, _, err = await run_script(chart_tls, port)
    finally:
        await runner.cleanup()
    assert code == 1
    assert "the patch adds no container with image ghcr.io/wardgate/wardgate:0.1.0" in err


def test_plain_http_url_is_refused_clearly(chart_tls: dict[str, Path]) -> None:
    import subprocess

    env = {"PATH": os.environ["PATH"], "WARDGATE_INJECTOR_URL": "http://x:80", "WARDGATE_CA_FILE": str(chart_tls["ca.crt"]),
           "WARDGATE_SIDECAR_CONFIG": str(chart_tls["sidecar.yaml"])}  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "must be https://" in result.stderr and "Traceback" not in result.stderr
