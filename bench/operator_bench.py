"""Control-plane benchmark: what admission and reconciliation cost, against peers measured
in the same run.

1. ``inject()`` on a typical pod vs ``jsonpatch.make_patch`` (the generic "mutate a copy,
   diff it" way other injectors compute their patch), per call.
2. An AdmissionReview round trip over TLS (keep-alive, one client) to ``/inject`` vs
   ``GET /healthz`` on the same server (the TLS + HTTP floor).
3. ``apply_baselines`` (app policy + 3 baselines) vs validating the same document with
   ``PolicySpec.model_validate`` alone (the schema floor every reconcile pays anyway).

Medians of repeated timings; read the ratios (2 shared cores).

Usage: ``python bench/operator_bench.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import ipaddress
import json
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT / "operator"), str(ROOT)]

import aiohttp  # noqa: E402
import jsonpatch  # noqa: E402
from bench.harness import median_us  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from wardgate.config import PolicySpec  # noqa: E402
from wardgate.config.baseline import SecurityBaselineSpec  # noqa: E402
from wardgate.config.baseline_merge import apply_baselines  # noqa: E402
from wardgate_operator.admission import start_injector  # noqa: E402
from wardgate_operator.injection import apply_patch, inject  # noqa: E402
from wardgate_operator.models import SidecarConfig  # noqa: E402

TEMPLATE = SidecarConfig.model_validate(
    {"image": "ghcr.io/wardgate/wardgate:0.1.0", "resources": {"limits": {"memory": "256Mi"}}}
)
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "shop-",
        "labels": {"app": "shop", "pod-template-hash": "7d9c"},
        # The default since issue 13: one annotation, the app unchanged.
        "annotations": {"wardgate.dev/microgateway": "shop"},
    },
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "shop:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                "env": [{"name": f"E{i}", "value": "x" * 20} for i in range(20)],
            }
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
}


def diff_injector() -> list[dict[str, Any]]:
    patched = apply_patch(POD, inject(POD, TEMPLATE))
    return list(jsonpatch.make_patch(copy.deepcopy(POD), patched))


def certificate(directory: Path) -> tuple[Path, Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem.decode()


async def round_trips(repeats: int, loops: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, pem = certificate(Path(tmp))
        server = await start_injector(
            host="127.0.0.1", port=0, cert=cert, key=key, template=TEMPLATE
        )
        url = f"https://127.0.0.1:{server.port}"
        context = ssl.create_default_context(cadata=pem)
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": POD,
            },
        }
        body = json.dumps(review).encode()
        inject_s, health_s = [], []
        async with aiohttp.ClientSession() as session:
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(loops):
                    async with session.post(url + "/inject", data=body, ssl=context) as r:
                        await r.read()
                inject_s.append((time.perf_counter() - start) / loops)
                start = time.perf_counter()
                for _ in range(loops):
                    async with session.get(url + "/healthz", ssl=context) as r:
                        await r.read()
                health_s.append((time.perf_counter() - start) / loops)
        await server.close()
    return statistics.median(inject_s), statistics.median(health_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    ours = 1e-6 * median_us(lambda: inject(POD, TEMPLATE), 300, args.repeats)
    peer = 1e-6 * median_us(diff_injector, 300, args.repeats)
    print(
        f"inject(): {ours * 1e6:.0f} us/pod; mutate+diff (jsonpatch.make_patch): "
        f"{peer * 1e6:.0f} us/pod; ratio {peer / ours:.2f}x"
    )

    inject_rt, health_rt = asyncio.run(round_trips(args.repeats, 200))
    print(
        f"AdmissionReview /inject over TLS: {inject_rt * 1e3:.2f} ms; GET /healthz (floor): "
        f"{health_rt * 1e3:.2f} ms; ratio {inject_rt / health_rt:.2f}x"
    )

    doc = {"limits": {"maxUrlBytes": 9000, "allowedMethods": ["GET", "POST", "DELETE"]}}
    app = PolicySpec.model_validate(doc)
    baselines = [
        (f"b{i}", SecurityBaselineSpec.model_validate({"limits": {"maxUrlBytes": 4096 - i}}))
        for i in range(3)
    ]
    merge = 1e-6 * median_us(lambda: apply_baselines(app, baselines), 300, args.repeats)
    schema = 1e-6 * median_us(lambda: PolicySpec.model_validate(doc), 300, args.repeats)
    print(
        f"apply_baselines (3 baselines): {merge * 1e6:.0f} us; PolicySpec.model_validate: "
        f"{schema * 1e6:.0f} us; ratio {merge / schema:.2f}x"
    )


if __name__ == "__main__":
    main()
