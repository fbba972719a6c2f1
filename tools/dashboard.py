"""Generator of ``charts/wardgate/files/dashboard.json``, the Grafana dashboard (``make generate``
writes it; a test checks drift and that every query names metrics and labels the gateway
exports).

Registered in :mod:`tools.generated` (``make generate`` writes it, ``make verify`` checks it).
"""

from __future__ import annotations

import json
from typing import Any

Panel = dict[str, Any]

SEL = 'namespace=~"$namespace", pod=~"$pod"'
"""Every query is filtered by the dashboard variables (labels the PodMonitor adds)."""
RATE = "[$__rate_interval]"
BLOCKED = 'replied_by!~"upstream|gateway"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def timeseries(
    panel_id: int,
    title: str,
    exprs: list[tuple[str, str]],
    unit: str,
    x: int,
    y: int,
    description: str = "",
) -> Panel:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {"refId": chr(65 + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def stat(
    panel_id: int,
    title: str,
    expr: str,
    unit: str,
    x: int,
    y: int,
    description: str = "",
    red_from: float | None = None,
) -> Panel:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_from is not None:
        steps.append({"color": "red", "value": red_from})
    return {
        "id": panel_id,
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": 6, "h": 4},
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [{"refId": "A", "expr": expr, "datasource": DATASOURCE}],
    }


def rate(series: str, matchers: str = "", by: str = "") -> str:
    inner = f"rate({series}{{{SEL}{', ' + matchers if matchers else ''}}}{RATE})"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{SEL}}}{RATE})))"


def mean(histogram: str) -> str:
    return f"{rate(histogram + '_sum')} / {rate(histogram + '_count')}"


def panels() -> list[Panel]:
    req = "wardgate_requests_total"
    return [
        stat(1, "Requests / s", rate(req), "reqps", 0, 0),
        stat(
            2, "Blocked by a filter", f"{rate(req, BLOCKED)} / {rate(req)}", "percentunit", 6, 0,
            "Share of requests a filter (limits, JWT, OpenAPI, WAF) answered instead of the upstream.",
        ),
        stat(
            3, "Filter errors / s (fail closed)", rate("wardgate_filter_errors_total"), "reqps", 12, 0,
            "Exceptions inside filters. Each refused its request (fail closed): above 0 needs a look.",
            red_from=0.001,
        ),
        stat(
            4, "Policy reload failures (1h)",
            f'sum(increase(wardgate_policy_reloads_total{{{SEL}, result="failure"}}[1h]))', "short", 18, 0,
            "A failed reload keeps the last good policy; the new one is not in force.", red_from=1,
        ),
        timeseries(5, "Requests by status class", [(rate(req, by="code_class"), "{{code_class}}")], "reqps", 0, 4),
        timeseries(
            6, "Requests answered by a filter",
            [(rate(req, BLOCKED, by="replied_by, code_class"), "{{replied_by}} {{code_class}}")], "reqps", 12, 4,
            "Which filter refused requests. A jump after a deploy is often a false positive: see the "
            "tuning sections of docs/gateway.md and docs/jwt.md.",
        ),
        timeseries(
            7, "Request latency (end to end)",
            [(quantile(0.5, "wardgate_request_duration_seconds"), "p50"),
             (quantile(0.99, "wardgate_request_duration_seconds"), "p99")], "s", 0, 12,
        ),
        timeseries(
            8, "Upstream latency and gateway overhead",
            [(quantile(0.5, "wardgate_upstream_duration_seconds"), "upstream p50"),
             (quantile(0.99, "wardgate_upstream_duration_seconds"), "upstream p99"),
             (f"{mean('wardgate_request_duration_seconds')} - {mean('wardgate_upstream_duration_seconds')}",
              "mean gateway overhead")], "s", 12, 12,
        ),
        timeseries(
            9, "Upstream failures by response flag",
            [(rate("wardgate_upstream_failures_total", by="flag"), "{{flag}}"),
             (rate("wardgate_upstream_protocol_errors_total", by="kind"), "protocol error {{kind}}")],
            "reqps", 0, 20,
            "Envoy response flags: UF connection failure, UH no healthy upstream, UT timeout, UC reset, "
            "UPE protocol error (a response head over the limits). Protocol errors by kind: "
            "excess_data (bytes after a whole response), response_headers_too_large.",
        ),
        timeseries(
            10, "Detections (detect mode, let through)",
            [(rate("wardgate_detections_total", by="filter"), "{{filter}}")], "reqps", 12, 20,
            "Violations that enforce mode would refuse.",
        ),
        timeseries(
            11, "Filter errors by filter",
            [(rate("wardgate_filter_errors_total", by="filter"), "{{filter}}")], "reqps", 0, 28,
        ),
        timeseries(
            12, "Policy reloads and generation",
            [(f"sum by (result) (increase(wardgate_policy_reloads_total{{{SEL}}}[5m]))", "reloads {{result}}"),
             (f"max by (namespace, pod) (wardgate_policy_generation{{{SEL}}})", "generation {{namespace}}/{{pod}}")],
            "short", 12, 28, "Pods of one Microgateway converge on one generation after a change.",
        ),
        timeseries(
            13, "JWT decisions",
            [(rate("wardgate_jwt_decisions_total", 'result="refused"', by="reason"), "refused {{reason}}"),
             (rate("wardgate_jwt_decisions_total", 'result!="refused"', by="result"), "{{result}}")],
            "reqps", 0, 36, "Refusals by reason code (expired, bad_signature, audience, ...).",
        ),
        timeseries(
            14, "JWKS and verification cache",
            [(rate("wardgate_jwt_jwks_fetches_total", by="result"), "JWKS fetch {{result}}"),
             (rate("wardgate_jwt_jwks_stale_uses_total"), "stale keys used"),
             (rate("wardgate_jwt_verified_cache_hits_total"), "verified-token cache hits")],
            "reqps", 12, 36,
            "Failed fetches and stale-key use mean an identity provider is unreachable.",
        ),
        timeseries(
            15, "WAF matches by family and action",
            [(rate("wardgate_waf_matches_total", by="family, action"), "{{family}} {{action}}")],
            "reqps", 0, 44,
            "block: part of a refused request; detect: a family in detect mode. A new rule id "
            "dominating after a deploy is the first place to look for a false positive "
            "(docs/waf.md, tuning).",
        ),
        timeseries(
            16, "WAF refusals by reason (request shape)",
            [(rate("wardgate_waf_refusals_total", by="reason"), "{{reason}}")], "reqps", 12, 44,
            "Bodies that could not be inspected: over the limit, bad encodings, unparsable.",
        ),
        timeseries(
            17, "WAF response leaks by signature",
            [(rate("wardgate_waf_response_leaks_total", by="signature, action"),
              "{{signature}} {{action}}")], "reqps", 0, 52,
            "Upstream responses with SQL errors, stack traces or directory listings; block: "
            "replaced by a generic 502. A steady rate is a bug in the service, not an attack.",
        ),
        timeseries(
            18, "Client connections and overload",
            [(f"sum by (namespace, pod) (wardgate_downstream_cx_active{{{SEL}}})",
              "open {{namespace}}/{{pod}}"),
             (rate("wardgate_downstream_cx_overflow_total"), "refused 503 (at maxConnections)"),
             (rate("wardgate_downstream_cx_idle_closed_total"), "idle closed for room"),
             (rate("wardgate_downstream_timeouts_total", by="kind"), "timeout {{kind}}"),
             (rate("wardgate_downstream_protocol_errors_total", by="kind"), "refused {{kind}}")],
            "short", 12, 52,
            "Refusals at the connection cap mean proxy.maxConnections (or the descriptor limit) "
            "is too low for the traffic, or a flood; timeouts are clients too slow with their "
            "headers or body (docs/gateway.md, slow clients and overload).",
        ),
        timeseries(
            19, "TLS handshakes and upstream TLS failures",
            [(rate("wardgate_tls_handshakes_total", 'result="failure"', by="reason"), "refused {{reason}}"),
             (rate("wardgate_tls_handshakes_total", 'result="success"'), "accepted"),
             (rate("wardgate_upstream_tls_failures_total"), "upstream TLS failure (503 UF)")],
            "reqps", 0, 60,
            "Refused handshakes by reason (unknown_ca, expired, no_client_certificate, "
            "old_protocol, sni_mismatch, timeout...). closed is mostly TCP health checks.",
        ),
        timeseries(
            20, "TLS certificate: time to expiry and reloads",
            [(f"min by (namespace, pod) (wardgate_tls_certificate_expiry_timestamp_seconds{{{SEL}}}) - time()",
              "expires in {{namespace}}/{{pod}}"),
             (f"sum by (result) (increase(wardgate_tls_certificate_reloads_total{{{SEL}}}[5m]))",
              "reloads {{result}}")],
            "s", 12, 60,
            "A failed reload keeps the last good certificate; a falling time to expiry means "
            "renewals do not arrive (cert-manager, Secret mount).",
        ),
        timeseries(
            21, "HTTP/2 and gRPC connections",
            [(f"sum by (namespace, pod) (wardgate_http2_connections{{{SEL}}})",
              "HTTP/2 open {{namespace}}/{{pod}}"),
             (rate("wardgate_http2_refused_streams_total"), "streams refused (maxConcurrentStreams)"),
             (rate("wardgate_http2_premature_resets_total"), "streams reset by the client"),
             (rate("wardgate_http2_connections_abandoned_total", by="reason"),
              "connections closed {{reason}}")],
            "short", 0, 68,
            "Refused streams mean clients open more streams than --http2-max-concurrent-streams "
            "allows; closed connections by reason are protocol violations or attacks (rapid "
            "reset, CONTINUATION or control-frame floods).",
        ),
    ]  # fmt: skip


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "label": label,
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "wardgate-overview",
        "title": "Wardgate",
        "description": "Wardgate sidecars: traffic, blocks by filter, latency, upstream failures, "
        "JWT, policy reloads.",
        "tags": ["wardgate", "waf", "api-gateway"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                    "current": {},
                    "hide": 0,
                },
                variable(
                    "namespace", "Namespace", "label_values(wardgate_requests_total, namespace)"
                ),
                variable(
                    "pod",
                    "Pod",
                    'label_values(wardgate_requests_total{namespace=~"$namespace"}, pod)',
                ),
            ]
        },
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
