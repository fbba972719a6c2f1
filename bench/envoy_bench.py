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
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gateway")]

from bench.harness import (  # noqa: E402
    ENVOY,
    GATEWAY_ENV,
    Load,
    ensure_tools,
    envoy_proxy,
    free_port,
    jwt_authn_filter,
    median_load,
    nginx_upstream,
    process,
    run_wrk,
    wait_http,
    wait_port,
    wardgate_proxy,
    wrk_script,
)
from bench.harness.workload import (  # noqa: E402
    envoy_jwt_config,
    full_policy,
    jwt_material,
    limits_policy,
    write_policy,
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


def _envoy(config: Path) -> contextlib.AbstractContextManager[object]:
    cmd = [ENVOY, "-c", str(config), "--concurrency", "1", "--log-level", "error"]
    cmd += ["--disable-hot-restart"]
    return process(cmd)


@contextlib.contextmanager
def wardgate_ext_authz(policy: Path) -> Iterator[tuple[int, int]]:
    grpc_port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "wardgate", "ext-authz", "--policy", str(policy)]
    cmd += ["--grpc", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}"]
    cmd += ["--log-level", "error"]
    with process(cmd, env=GATEWAY_ENV) as proc:
        wait_port(http_port, proc)
        wait_port(grpc_port, proc)
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


def passthrough_policy(workdir: Path) -> Path:
    """``bench/passthrough.yaml``: limits only (the WAF off)."""
    return write_policy(workdir / "passthrough.yaml", limits_policy())


def jwt_policy(workdir: Path, jwks: str) -> Path:
    """The pass-through policy plus a JWT provider like the Envoy jwt_authn target's."""
    doc = limits_policy()
    doc["jwt"] = full_policy(jwks)["jwt"]
    return write_policy(workdir / "jwt-policy.yaml", doc)


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
        auth_lua = wrk_script(workdir / "auth.lua", headers={"Authorization": f"Bearer {token}"})
        jwt_file = jwt_policy(workdir, jwks)
        passthrough = passthrough_policy(workdir)
        with (
            nginx_upstream(workdir) as upstream,
            wardgate_ext_authz(passthrough) as authz,
            wardgate_ext_authz(jwt_file) as authz_jwt,
            wardgate_ext_authz(PASSTHROUGH) as authz_waf,
            envoy_proxy(workdir, upstream) as envoy,
            envoy_proxy(
                workdir, upstream, http_filters=[jwt_authn_filter(envoy_jwt_config(jwks))]
            ) as envoy_jwt,
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
