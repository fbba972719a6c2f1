"""Envoy + Wardgate: the cost of asking Wardgate from Envoy, against Envoy alone, Envoy's own
jwt_authn, and native ``wardgate run``, in one run on this machine.

Targets (all in front of the same nginx upstream, one worker / ``--concurrency 1`` each):

* ``envoy``: Envoy alone, a plain reverse proxy;
* ``envoy+jwt_authn``: Envoy verifying an RS256 JWT itself (local JWKS), the Envoy-native
  way to do what Wardgate's jwt filter does;
* ``envoy+grpc``: Envoy + Wardgate gRPC ext_authz (``examples/envoy/ext-authz-grpc.yaml``);
* ``envoy+http``: Envoy + Wardgate HTTP ext_authz (``examples/envoy/ext-authz-http.yaml``);
* ``envoy+ext_proc``: Envoy + Wardgate ext_proc, headers only (bodies not sent);
* ``wardgate``: native ``wardgate run``;
* ``*+jwt``: the gRPC and HTTP doors and native ``wardgate run`` with a JWT policy verifying
  the same token as ``envoy+jwt_authn`` (same key, issuer, audience): the comparable pair;
* ``*+waf``: the same doors with ``bench/passthrough.yaml`` as is (the WAF, on by default,
  enforcing).

Otherwise Wardgate runs the pass-through policy (``bench/passthrough.yaml`` with the WAF
off: limits only) on every door, so the figures compare the doors, not policies. Load: ``wrk`` (1 thread, 32
connections, GET). Medians of the repeats; read ratios, not absolute numbers (2 shared
cores).

Usage: ``python bench/envoy_bench.py [--duration S] [--repeats N] [--quick]``
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gateway")]

from bench.run import (  # noqa: E402
    BIN,
    Load,
    ensure_tools,
    envoy_proxy,
    free_port,
    median_load,
    nginx_upstream,
    process,
    run_wrk,
    wait_http,
    wardgate_proxy,
)
from tests.envoy.harness import (  # noqa: E402
    ADMIN,
    GRPC_AUTHZ,
    HTTP_AUTHZ,
    LISTEN,
    UPSTREAM,
    render,
)

PASSTHROUGH = ROOT / "bench" / "passthrough.yaml"
ENVOY = str(BIN / "envoy") if (BIN / "envoy").exists() else "envoy"


def _envoy(config: Path) -> contextlib.AbstractContextManager[object]:
    cmd = [ENVOY, "-c", str(config), "--concurrency", "1", "--log-level", "error"]
    cmd += ["--disable-hot-restart"]
    return process(cmd)


@contextlib.contextmanager
def wardgate_ext_authz(policy: Path) -> Iterator[tuple[int, int]]:
    grpc_port, http_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'gateway'}")
    cmd = [sys.executable, "-m", "wardgate", "ext-authz", "--policy", str(policy)]
    cmd += ["--grpc", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}"]
    cmd += ["--log-level", "error"]
    with process(cmd, env=env):
        wait_http_any(f"http://127.0.0.1:{http_port}/")  # answers every path: up when it does
        yield grpc_port, http_port


@contextlib.contextmanager
def envoy_example(
    workdir: Path, example: str, upstream: int, authz: tuple[int, int], **overrides: object
) -> Iterator[int]:
    listen, admin = free_port(), free_port()
    ports = {LISTEN: listen, ADMIN: admin, UPSTREAM: upstream}
    ports |= {GRPC_AUTHZ: authz[0], HTTP_AUTHZ: authz[1]}
    config = render(example, workdir, ports, **overrides)
    doc = yaml.safe_load(config.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"].pop("access_log", None)  # the bench measures the decision, not logs
    config.write_text(yaml.safe_dump(doc))
    with _envoy(config):
        wait_http(f"http://127.0.0.1:{admin}/ready")
        yield listen


def wait_http_any(url: str, timeout: float = 30) -> None:
    """Up when it answers at all (a JWT policy answers 401 without a token)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def passthrough_policy(workdir: Path) -> Path:
    """``bench/passthrough.yaml`` with the WAF (on by default) turned off: limits only."""
    doc = yaml.safe_load(PASSTHROUGH.read_text()) or {}
    doc["waf"] = {"mode": "off"}
    path = workdir / "passthrough.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def jwt_policy(workdir: Path, jwks: str) -> Path:
    """The pass-through policy plus a JWT provider like the Envoy jwt_authn target's."""
    doc = yaml.safe_load(passthrough_policy(workdir).read_text())
    doc["jwt"] = {
        "providers": {
            "bench": {
                "issuer": "https://issuer.bench",
                "audiences": ["bench"],
                "localJwks": {"inlineString": jwks},
                "forward": True,
            }
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "bench"}}],
    }
    path = workdir / "jwt-policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_material() -> tuple[str, str]:
    """An RS256 key pair: (JWKS JSON, a token valid for an hour)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "bench",
        "alg": "RS256",
        "use": "sig",
        "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": _b64url(numbers.e.to_bytes(3, "big")),
    }
    header = _b64url(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {"iss": "https://issuer.bench", "aud": "bench", "sub": "u1", "exp": now + 3600}
    payload = _b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return json.dumps({"keys": [jwk]}), f"{header}.{payload}.{_b64url(signature)}"


@contextlib.contextmanager
def envoy_jwt_authn(workdir: Path, upstream: int, jwks: str) -> Iterator[int]:
    listen, admin = free_port(), free_port()
    ports = {LISTEN: listen, ADMIN: admin, UPSTREAM: upstream, GRPC_AUTHZ: 1, HTTP_AUTHZ: 1}
    config = render("ext-authz-grpc.yaml", workdir, ports)
    doc = yaml.safe_load(config.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"].pop("access_log", None)
    hcm["typed_config"]["http_filters"][0] = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": "https://issuer.bench",
                    "audiences": ["bench"],
                    "local_jwks": {"inline_string": jwks},
                    "forward": True,
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }
    doc["static_resources"]["clusters"] = [
        c for c in doc["static_resources"]["clusters"] if c["name"] == "upstream"
    ]
    config.write_text(yaml.safe_dump(doc))
    with _envoy(config):
        wait_http(f"http://127.0.0.1:{admin}/ready")
        yield listen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 s (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeats = 3, 1
    ensure_tools()
    jwks, token = jwt_material()
    results: dict[str, Load] = {}
    with tempfile.TemporaryDirectory(prefix="wardgate-envoy-bench-") as tmp:
        workdir = Path(tmp)
        auth_lua = workdir / "auth.lua"
        auth_lua.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        jwt_file = jwt_policy(workdir, jwks)
        passthrough = passthrough_policy(workdir)
        with (
            nginx_upstream(workdir) as upstream,
            wardgate_ext_authz(passthrough) as authz,
            wardgate_ext_authz(jwt_file) as authz_jwt,
            wardgate_ext_authz(PASSTHROUGH) as authz_waf,
            envoy_proxy(workdir, upstream) as envoy,
            envoy_jwt_authn(workdir, upstream, jwks) as envoy_jwt,
            envoy_example(workdir, "ext-authz-grpc.yaml", upstream, authz) as envoy_grpc,
            envoy_example(workdir, "ext-authz-http.yaml", upstream, authz) as envoy_http,
            envoy_example(
                workdir,
                "ext-proc.yaml",
                upstream,
                authz,
                processing_mode={"request_body_mode": "NONE", "response_body_mode": "NONE"},
            ) as envoy_proc,
            envoy_example(workdir, "ext-authz-grpc.yaml", upstream, authz_jwt) as grpc_jwt,
            envoy_example(workdir, "ext-authz-http.yaml", upstream, authz_jwt) as http_jwt,
            envoy_example(workdir, "ext-authz-grpc.yaml", upstream, authz_waf) as grpc_waf,
            envoy_example(workdir, "ext-authz-http.yaml", upstream, authz_waf) as http_waf,
            wardgate_proxy(upstream, passthrough) as wardgate,
            wardgate_proxy(upstream, jwt_file) as wardgate_jwt,
            wardgate_proxy(upstream, PASSTHROUGH) as wardgate_waf,
        ):
            targets = {
                "envoy": (envoy, None),
                "envoy+jwt_authn": (envoy_jwt, auth_lua),
                "envoy+grpc": (envoy_grpc, None),
                "envoy+http": (envoy_http, None),
                "envoy+ext_proc": (envoy_proc, None),
                "wardgate": (wardgate, None),
                "envoy+grpc+jwt": (grpc_jwt, auth_lua),
                "envoy+http+jwt": (http_jwt, auth_lua),
                "wardgate+jwt": (wardgate_jwt, auth_lua),
                "envoy+grpc+waf": (grpc_waf, None),
                "envoy+http+waf": (http_waf, None),
                "wardgate+waf": (wardgate_waf, None),
            }
            for name, (port, script) in targets.items():
                url = f"http://127.0.0.1:{port}/bench?x=1"
                run_wrk(url, 1, script)  # warm-up
                samples = [run_wrk(url, args.duration, script) for _ in range(args.repeats)]
                results[name] = median_load(samples)
                print(f"  {name:16} {results[name].rps:9.0f} req/s", flush=True)
    report(results)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "envoy.json").write_text(json.dumps({k: vars(v) for k, v in results.items()}, indent=2))
    return 0


def report(results: dict[str, Load]) -> None:
    envoy, native = results["envoy"].rps, results["wardgate"].rps
    jwt = results["envoy+jwt_authn"].rps
    print("\n== Envoy + Wardgate (wrk GET, 1 thread, 32 connections; medians)")
    print(
        f"{'target':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs envoy':>9} "
        f"{'vs native':>10} {'vs jwt_authn':>13}"
    )
    for name, load in results.items():
        print(
            f"{name:16} {load.rps:9.0f} {load.p50_ms:8.2f} {load.p99_ms:8.2f} "
            f"{load.rps / envoy:9.2f} {load.rps / native:10.2f} {load.rps / jwt:13.2f}"
        )
    print(
        "vs native: against `wardgate run` with the pass-through policy (limits only). +jwt: "
        "verifying the same RS256 token as envoy+jwt_authn (compare with that row). +waf: "
        "the default policy (WAF on, enforcing): compare with wardgate+waf."
    )


if __name__ == "__main__":
    raise SystemExit(main())
