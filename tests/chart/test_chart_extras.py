"""The optional parts: NetworkPolicies, PodMonitor/ServiceMonitor, the Grafana dashboard (whose
queries must name metrics the gateway really exports) and the default SecurityBaseline."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from typing import Any

import pytest
import yaml
from prometheus_client.registry import REGISTRY

import wardgate
from tests.chart import k8s
from tests.chart.render import CHART, NAMESPACE, VALUE_SETS, Rendered, render


@pytest.fixture(scope="module")
def monitoring() -> Rendered:
    return render(VALUE_SETS["monitoring"])


def test_optional_parts_are_off_by_default() -> None:
    r = render()
    for kind in ("NetworkPolicy", "PodMonitor", "ServiceMonitor", "SecurityBaseline"):
        assert r.of_kind(kind) == [], kind
    assert [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")] == []


# --- NetworkPolicy ------------------------------------------------------------------------


def test_network_policies(monitoring: Rendered) -> None:
    policies = {
        p["metadata"]["name"].rsplit("-", 1)[-1]: p["spec"]
        for p in monitoring.of_kind("NetworkPolicy")
    }
    assert set(policies) == {"injector", "operator"}
    for component, spec in policies.items():
        deploy = monitoring.one("Deployment", f"-{component}")
        assert k8s.selector_matches(
            spec["podSelector"], deploy["spec"]["template"]["metadata"]["labels"]
        )
        assert spec["policyTypes"] == ["Ingress", "Egress"]

    injector = policies["injector"]
    assert injector["egress"] == []  # no API access, no outbound connections at all
    (ingress,) = injector["ingress"]
    assert ingress["ports"] == [{"port": 9443, "protocol": "TCP"}]

    operator = policies["operator"]
    assert operator["ingress"] == []
    egress_ports = {p["port"] for rule in operator["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 15021}  # 15021: the sidecars' status ports


def test_injector_ingress_sources_are_configurable() -> None:
    peer = {"ipBlock": {"cidr": "10.0.0.0/24"}}
    r = render({"networkPolicy": {"enabled": True, "injectorIngressFrom": [peer]}})
    injector = next(
        p for p in r.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-injector")
    )
    assert injector["spec"]["ingress"][0]["from"] == [peer]


# --- monitors -----------------------------------------------------------------------------


def test_pod_monitor_scrapes_sidecar_status_ports(monitoring: Rendered) -> None:
    (monitor,) = monitoring.of_kind("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] == "wardgate-status"  # the injector's STATUS_PORT_NAME
    assert endpoint["path"] == "/stats/prometheus"  # served read-only on the status port
    # Pods that opted out carry no sidecar and are not selected.
    assert not k8s.selector_matches(spec["selector"], {"wardgate.dev/inject": "false"})
    assert k8s.selector_matches(spec["selector"], {"app": "shop"})


def test_service_monitor(monitoring: Rendered) -> None:
    (monitor,) = monitoring.of_kind("ServiceMonitor")
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": {"wardgate.dev/metrics": "enabled"}}
    assert spec["endpoints"][0]["port"] == "wardgate-status"
    assert spec["endpoints"][0]["path"] == "/stats/prometheus"


# --- dashboard ----------------------------------------------------------------------------


def _exported_series() -> dict[str, set[str]]:
    """Series names the gateway exposes on /stats/prometheus -> their label names. Every
    module of the gateway is imported first, so every metric it can export is registered."""
    for module in pkgutil.walk_packages(wardgate.__path__, "wardgate."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    series: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.describe() if hasattr(collector, "describe") else []:
            if not family.name.startswith("wardgate_"):
                continue
            labels = set(getattr(collector, "_labelnames", ()))
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "gauge": [""],
            }
            for suffix in suffixes.get(family.type, [""]):
                series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def _dashboard(monitoring: Rendered) -> dict[str, Any]:
    (cm,) = [
        c for c in monitoring.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["wardgate.json"])
    assert shipped == json.loads((CHART / "files" / "dashboard.json").read_text())
    return dict(shipped)


def test_dashboard_queries_name_exported_metrics_and_labels(monitoring: Rendered) -> None:
    dashboard = _dashboard(monitoring)
    exported = _exported_series()
    assert (
        "wardgate_requests_total" in exported
        and "wardgate_request_duration_seconds_bucket" in exported
    )
    # Labels Prometheus adds when scraping (the PodMonitor relabels namespace and pod).
    target_labels = {"namespace", "pod"}
    used: set[str] = set()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for expr in exprs:
        for series, matchers in re.findall(r"(wardgate_[a-z0-9_]+)(?:\{([^}]*)\})?", expr):
            assert series in exported, f"{series} is not exported by the gateway ({expr})"
            used.add(series)
            for label in re.findall(r"([a-z_]+)\s*[!=]~?", matchers):
                assert label in exported[series] | target_labels, f"{series} has no label {label}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert any(label in exported[s] | target_labels for s in used), label
    # Every metric family the gateway exports is on the dashboard.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", s) for s in exported}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", s) for s in used}


def test_dashboard_is_well_formed(monitoring: Rendered) -> None:
    dashboard = _dashboard(monitoring)
    assert dashboard["uid"] == "wardgate-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "pod"}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"]


def test_dashboard_namespace_is_configurable() -> None:
    r = render({"monitoring": {"grafanaDashboard": {"enabled": True, "namespace": "grafana"}}})
    (cm,) = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["namespace"] == "grafana"


# --- SecurityBaseline ---------------------------------------------------------------------


def test_security_baseline_from_values() -> None:
    values = VALUE_SETS["baseline"]["securityBaseline"]
    (baseline,) = render(VALUE_SETS["baseline"]).of_kind("SecurityBaseline")
    assert baseline["apiVersion"] == "wardgate.dev/v1alpha1"
    assert "namespace" not in baseline["metadata"]  # cluster-scoped
    assert baseline["metadata"]["name"] == "wardgate-default"
    assert baseline["spec"] == {"namespaceSelector": values["namespaceSelector"], **values["spec"]}


def test_security_baseline_minimal() -> None:
    (baseline,) = render({"securityBaseline": {"enabled": True}}).of_kind("SecurityBaseline")
    assert baseline["spec"] == {"namespaceSelector": {}}
    yaml.safe_dump(baseline)  # plain data, nothing Helm-specific left


def test_notes_mention_the_namespace() -> None:
    assert NAMESPACE in render().notes
