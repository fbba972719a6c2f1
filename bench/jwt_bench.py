"""JWT benchmark: per-verification cost in process, and a JWT-protected GET through Wardgate
vs real Envoy 1.40 with its own jwt_authn filter, same keys, same token, in one run.

Part 1 (in process): one request through the compiled ``jwt_authn`` filter (rule match,
extraction, parsing, claims, signature, header effects) for RS256, ES256 and EdDSA, with the
verified-token cache on (the same token again) and off (``jwtCacheSize: 0``); PyJWT's
``jwt.decode`` on the same token and key is the in-process peer.

Part 2 (HTTP, wrk): nginx upstream; Envoy (``--concurrency 1``) with jwt_authn and a
local JWKS; Wardgate (one worker) with the policy ``wardgate import-envoy`` makes of the same
Envoy config; both with the verified-token cache on and off, and both without JWT for the
cost of the filter. Medians of repeated runs; read ratios (2 shared cores).

Usage: ``python bench/jwt_bench.py [--duration S] [--repeats N] [--skip-http]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT)]

from bench.harness import (  # noqa: E402
    envoy_proxy,
    jwt_authn_filter,
    median_load,
    nginx_upstream,
    run_wrk,
    wardgate_proxy,
)

from wardgate.config import load_policy_text  # noqa: E402
from wardgate.config.envoy_import import convert_envoy_jwt  # noqa: E402
from wardgate.filters.api import HttpRequest  # noqa: E402
from wardgate.runtime import RequestPipeline, compile_policy  # noqa: E402

ISSUER = "https://issuer.bench"


def keys() -> dict[str, tuple[Any, dict[str, Any]]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "RS256": (rsa_key, json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))),
        "ES256": (ec_key, json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))),
        "EdDSA": (ed_key, json.loads(OKPAlgorithm.to_jwk(ed_key.public_key()))),
    }


def token_for(alg: str, private: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench", "aud": "api", "iat": now, "exp": now + 86400}
    return jwt.encode(claims, private, algorithm=alg, headers={"kid": alg})


def envoy_jwt_config(jwk: dict[str, Any], cache: bool = True) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": ["api"],
        "local_jwks": {"inline_string": json.dumps({"keys": [jwk]})},
        "require_expiration": True,
    }
    # explicit in both directions: Envoy and Wardgate then run the same cache setting
    provider["jwt_cache_config"] = {"jwt_cache_size": 1000 if cache else 0}
    return {
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
    }


def wardgate_policy(jwk: dict[str, Any], cache: bool = True) -> str:
    result = convert_envoy_jwt(envoy_jwt_config(jwk, cache))
    assert not result.unsupported, result.unsupported
    return yaml.safe_dump(result.policy)


def per_request_us(policy_text: str, token: str, iterations: int, repeats: int) -> float:
    policy = compile_policy(load_policy_text(policy_text))

    async def run() -> list[float]:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(iterations):
                headers = CIMultiDict({"host": "bench", "authorization": f"Bearer {token}"})
                request = HttpRequest("GET", "/bench", "/bench", "", headers)
                reply = await RequestPipeline(policy, request).decode_headers()
                assert reply is None, reply
            samples.append((time.perf_counter() - start) / iterations * 1e6)
        return samples

    return statistics.median(asyncio.run(run()))


def pyjwt_us(token: str, private: Any, alg: str, iterations: int, repeats: int) -> float:
    public = private.public_key()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            jwt.decode(token, public, algorithms=[alg], audience="api", issuer=ISSUER)
        samples.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(samples)


def in_process(all_keys: dict[str, tuple[Any, dict[str, Any]]], repeats: int) -> None:
    print("== In process: one request through jwt_authn (median us/request)")
    print(f"{'alg':6} {'uncached':>9} {'cached':>8} {'pyjwt':>8} {'uncached/pyjwt':>15}")
    for alg, (private, public_jwk) in all_keys.items():
        jwk = {**public_jwk, "kid": alg}
        token = token_for(alg, private)
        iterations = 300 if alg == "RS256" else 500
        uncached = per_request_us(wardgate_policy(jwk, cache=False), token, iterations, repeats)
        cached = per_request_us(wardgate_policy(jwk, cache=True), token, iterations * 4, repeats)
        peer = pyjwt_us(token, private, alg, iterations, repeats)
        print(f"{alg:6} {uncached:9.1f} {cached:8.1f} {peer:8.1f} {uncached / peer:15.2f}")


def envoy_jwt(
    workdir: Path, upstream_port: int, jwt_config: dict[str, Any]
) -> AbstractContextManager[int]:
    """Envoy with jwt_authn configured by ``jwt_config`` (providers, rules)."""
    return envoy_proxy(workdir, upstream_port, http_filters=[jwt_authn_filter(jwt_config)])


def over_http(all_keys: dict[str, tuple[Any, dict[str, Any]]], duration: int, repeats: int) -> None:
    private, jwk = all_keys["RS256"]
    jwk = {**jwk, "kid": "RS256"}
    token = token_for("RS256", private)
    with tempfile.TemporaryDirectory(prefix="wardgate-jwt-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "auth.lua"
        script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        policy = workdir / "policy.yaml"
        policy.write_text(wardgate_policy(jwk))
        uncached_policy = workdir / "policy-uncached.yaml"
        uncached_policy.write_text(wardgate_policy(jwk, cache=False))
        results = {}
        with (
            nginx_upstream(workdir) as upstream,
            envoy_jwt(workdir, upstream, envoy_jwt_config(jwk)) as envoy,
            wardgate_proxy(upstream, policy) as wardgate,
            envoy_jwt(workdir, upstream, envoy_jwt_config(jwk, cache=False)) as envoy_nc,
            wardgate_proxy(upstream, uncached_policy) as wardgate_nc,
            envoy_proxy(workdir, upstream) as envoy_plain,
            wardgate_proxy(upstream, ROOT / "bench" / "passthrough.yaml") as wardgate_plain,
        ):
            targets = (
                ("envoy jwt_authn", envoy),
                ("wardgate jwt_authn", wardgate),
                ("envoy jwt uncached", envoy_nc),
                ("wardgate jwt uncached", wardgate_nc),
                ("envoy no jwt", envoy_plain),
                ("wardgate no jwt", wardgate_plain),
            )
            for _name, port in targets:
                run_wrk(f"http://127.0.0.1:{port}/bench", 1, script)  # warm-up
            # Rounds interleave the targets, so load from other processes on this shared
            # machine spreads over all of them instead of hitting one target's samples.
            samples: dict[str, list[Any]] = {name: [] for name, _ in targets}
            for _ in range(repeats):
                for name, port in targets:
                    url = f"http://127.0.0.1:{port}/bench"
                    samples[name].append(run_wrk(url, duration, script))
            results = {name: median_load(runs) for name, runs in samples.items()}
    print("\n== JWT-protected GET, RS256, same key and token (wrk 1 thread, 32 conns; medians)")
    print("   (jwt_authn: jwtCacheSize 1000 on both; uncached: jwtCacheSize 0 on both)")
    for name, load in results.items():
        print(
            f"{name:22} {load.rps:9.0f} req/s  p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:6.2f} ms"
        )
    for kind in ("jwt_authn", "jwt uncached", "no jwt"):
        ratio = results[f"wardgate {kind}"].rps / results[f"envoy {kind}"].rps
        print(f"wardgate / envoy, {kind}: {ratio:.2f}")
    for peer in ("envoy", "wardgate"):
        cached = results[f"{peer} jwt_authn"].rps / results[f"{peer} no jwt"].rps
        uncached = results[f"{peer} jwt uncached"].rps / results[f"{peer} no jwt"].rps
        print(
            f"{peer}: throughput with JWT / without: cached {cached:.2f}, uncached {uncached:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    all_keys = keys()
    in_process(all_keys, max(args.repeats, 3))
    if not args.skip_http:
        over_http(all_keys, args.duration, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
