"""TLS benchmark: Wardgate against Envoy 1.40 with the same certificate, in the same run.

* **Keep-alive TLS GET** (``wrk``, 1 thread, 32 connections over HTTPS): requests per
  second through each proxy's TLS listener to the same nginx upstream. Target: Wardgate
  >= 0.5x Envoy.
* **TLS handshakes per second**: the same, with ``Connection: close`` on every request,
  so each request is a new TCP connection and a full TLS handshake (ECDSA P-256, TLS 1.3,
  no session resumption).
* **mTLS identity forwarding**: the added CPU per request of what a verified client
  certificate costs on the request path (identity lookup, the ``x-forwarded-client-cert``
  header, the access-log fields, a ``peer`` rule), in-process, next to what the
  ``x-forwarded-for`` handling costs. ``wrk`` cannot present client certificates, so this
  part is a micro-benchmark of the code that runs per request; the handshake itself is
  OpenSSL's.

Same methodology as ``bench/run.py`` (pinning, interleaved rounds, medians).

Usage: ``python bench/tls_bench.py [--duration S] [--repeats N] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "gateway"))
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    PIDS,
    RESULTS,
    CpuLayout,
    ensure_tools,
    envoy_proxy,
    median_us,
    nginx_upstream,
    rotated,
    run_wrk,
    wardgate_proxy,
)
from tests.tls_support import Ca  # noqa: E402

PASSTHROUGH = ROOT / "bench" / "passthrough.yaml"


def identity_forwarding_cost(ca: Ca) -> dict[str, float]:
    """Per-request µs of the mTLS identity path, in-process."""
    from multidict import CIMultiDict

    from wardgate.config import load_policy_text
    from wardgate.config.proxy import ProxySpec
    from wardgate.filters.api import HttpRequest
    from wardgate.filters.peer import compile as compile_peer
    from wardgate.proxy.tls import peer_of
    from wardgate.runtime.forwarding import apply_forwarded_headers
    from wardgate.runtime.identity import (
        client_certificate_fields,
        identity_from_der,
        set_client_cert_header,
    )

    leaf = ca.issue(
        "billing",
        uris=("spiffe://cluster.local/ns/shop/sa/billing",),
        dns=("billing.shop.svc",),
        usage="client",
    )
    peer = identity_from_der(leaf.der, "spiffe://cluster.local/ns/shop/sa/orders")

    class FakeSsl:
        wardgate_peer = peer

    class Transport:
        def get_extra_info(self, name: str) -> object:
            return FakeSsl() if name == "ssl_object" else None

    transport = Transport()
    headers: CIMultiDict[str] = CIMultiDict(
        {"host": "orders", "user-agent": "bench", "accept": "*/*"}
    )
    proxy = ProxySpec()

    def forwarding() -> None:
        h = headers.copy()
        apply_forwarded_headers(h, proxy, "10.0.0.1", "https")

    def identity() -> None:
        h = headers.copy()
        found = peer_of(transport)  # type: ignore[arg-type]
        h.popall("x-forwarded-client-cert", None)
        set_client_cert_header(h, found)
        client_certificate_fields(found)

    policy = load_policy_text(
        "peer:\n  rules:\n    - match: {prefix: /}\n      principals:\n"
        "        - uri: {prefix: 'spiffe://cluster.local/ns/shop/'}\n"
    )
    config = compile_peer(policy)
    assert config is not None
    flt = config.create_filter()
    request = HttpRequest("GET", "/orders", "/orders", "", headers.copy(), peer=peer)

    def rule() -> None:  # the coroutine never suspends: drive it by hand
        coro = flt.decode_headers(request)
        with contextlib.suppress(StopIteration):
            coro.send(None)

    return {
        "x_forwarded_for_us": median_us(forwarding, 20000, 5),
        "identity_forwarding_us": median_us(identity, 20000, 5),
        "peer_rule_us": median_us(rule, 20000, 5),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeats = 2, 1
    ca = Ca("Bench CA")
    print("== mTLS identity forwarding (in-process, µs per request)", flush=True)
    micro = identity_forwarding_cost(ca)
    for name, value in micro.items():
        print(f"  {name:<26} {value:7.2f}")
    ensure_tools()
    RESULTS.mkdir(parents=True, exist_ok=True)
    cpus = CpuLayout.for_machine()
    print(f"CPU layout: {cpus.describe()}", flush=True)
    samples: dict[str, dict[str, list[float]]] = {
        "keepalive": {"envoy": [], "wardgate": []},
        "handshake": {"envoy": [], "wardgate": []},
        "cpu_us": {"envoy": [], "wardgate": []},
    }
    with tempfile.TemporaryDirectory(prefix="wardgate-tls-bench-") as tmp:
        workdir = Path(tmp)
        # wrk sends the URL host as SNI: the certificate names 127.0.0.1 both ways.
        cert, key = ca.issue(
            "bench", dns=("localhost", "127.0.0.1"), ips=("127.0.0.1",), usage="server"
        ).write(workdir, "server")
        close = workdir / "close.lua"
        close.write_text('wrk.headers["Connection"] = "close"\n')
        with (
            nginx_upstream(workdir, cpus.upstream) as upstream,
            envoy_proxy(workdir, upstream, cpus.proxy, tls=(cert, key)) as envoy,
            wardgate_proxy(
                upstream, PASSTHROUGH, cpus.proxy, ("--tls-cert", cert, "--tls-key", key)
            ) as wardgate,
        ):
            targets = {"envoy": envoy, "wardgate": wardgate}
            for port in targets.values():  # warm up (and check both answer over TLS)
                run_wrk(f"https://127.0.0.1:{port}/bench", 1, None, cpus.load)
            for turn in range(args.repeats):
                for name in rotated(list(targets), turn):
                    url = f"https://127.0.0.1:{targets[name]}/bench"
                    load = run_wrk(url, args.duration, None, cpus.load, PIDS.get(targets[name]))
                    samples["keepalive"][name].append(load.rps)
                    samples["cpu_us"][name].append(load.cpu_us or 0.0)
                    load = run_wrk(url, args.duration, close, cpus.load)
                    samples["handshake"][name].append(load.rps)
    report: dict[str, object] = {"identity_forwarding": micro}
    print("\n== TLS through each proxy (wrk, 1 thread, 32 connections; medians)")
    for kind, label in (
        ("keepalive", "keep-alive TLS GET req/s"),
        ("handshake", "TLS handshakes/s (Connection: close)"),
    ):
        envoy_rps = statistics.median(samples[kind]["envoy"])
        wardgate_rps = statistics.median(samples[kind]["wardgate"])
        ratios = [
            w / e
            for w, e in zip(samples[kind]["wardgate"], samples[kind]["envoy"], strict=True)
            if e
        ]
        ratio = statistics.median(ratios) if ratios else 0.0
        print(
            f"  {label:<40} envoy {envoy_rps:9.0f}  wardgate {wardgate_rps:9.0f}  "
            f"ratio {ratio:4.2f}"
        )
        report[kind] = {"envoy": envoy_rps, "wardgate": wardgate_rps, "wardgate_vs_envoy": ratio}
    cpu = {name: statistics.median(v) for name, v in samples["cpu_us"].items()}
    print(
        f"  {'keep-alive CPU per request (us)':<40} envoy {cpu['envoy']:9.1f}  "
        f"wardgate {cpu['wardgate']:9.1f}"
    )
    report["keepalive_cpu_us"] = cpu
    (RESULTS / "tls.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
