"""The NetworkPolicy per Microgateway (issue 13, item 1): rendered, schema-valid, admitting
only the sidecar's ports; created, updated and (opt-out) deleted by the operator on kmock.
Whether a CNI enforces it is for a real cluster (docs/operator.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chart.k8s import selector_matches
from tests.operator.kmock_support import (
    MICROGATEWAY,
    VersionedEmulator,
    declare_resources,
    eventually,
    obj,
    running_operator,
)
from tests.operator.podcheck import schema_problems
from tests.operator.test_operator_kmock import create_namespace
from wardgate_operator.kube import microgateways_path
from wardgate_operator.models import parse_microgateway_spec
from wardgate_operator.rendering import SidecarPorts, render_network_policy

NETPOLS = "networking.k8s.io/v1/networkpolicies"


DEFAULT_PORTS = SidecarPorts()


def rendered(spec: dict[str, Any], ports: SidecarPorts = DEFAULT_PORTS) -> dict[str, Any]:
    return render_network_policy(
        name="shop", namespace="shop", uid="u-1", spec=parse_microgateway_spec(spec), ports=ports
    )


def ingress_ports(policy: dict[str, Any]) -> list[int]:
    (rule,) = policy["spec"]["ingress"]
    assert "from" not in rule  # from anywhere, but only to these ports
    return [p["port"] for p in rule["ports"]]


def test_admits_only_the_sidecar_ports_and_validates():
    policy = rendered({"podSelector": {"matchLabels": {"app": "shop"}}})
    assert ingress_ports(policy) == [15021, 15080]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress untouched
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "shop"}}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert schema_problems(policy) == []


def test_legacy_service_port_and_extra_ports_and_expressions():
    policy = rendered(
        {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]
            },
            "servicePort": 8080,
            "appPort": 8081,
            "networkPolicy": {"allowPorts": [9090]},
        },
        SidecarPorts(proxy=15080, status=15021),
    )
    assert ingress_ports(policy) == [8080, 9090, 15021]  # never the app's 8081
    assert selector_matches(policy["spec"]["podSelector"], {"app": "shop"})
    assert not selector_matches(policy["spec"]["podSelector"], {"app": "other"})
    assert schema_problems(policy) == []


def test_ports_follow_the_chart_settings(monkeypatch):
    monkeypatch.setenv("WARDGATE_SIDECAR_PROXY_PORT", "18080")
    monkeypatch.setenv("WARDGATE_SIDECAR_STATUS_PORT", "18021")
    assert SidecarPorts.from_env() == SidecarPorts(18080, 18021)


@pytest.mark.kmock(cls=VersionedEmulator)
@pytest.mark.timeout(120)
async def test_operator_creates_updates_and_deletes_it(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")

    def netpol() -> dict[str, Any] | None:
        return obj(kmock, NETPOLS, "shop", "wardgate-shop")

    async with running_operator(kmock, interval=30) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        policy = await eventually(netpol, message="NetworkPolicy")
        assert ingress_ports(policy) == [8080, 15021]  # MICROGATEWAY is a legacy one
        await api.merge_patch(
            microgateways_path("shop", "shop"),
            {
                "spec": {
                    "servicePort": None,
                    "appPort": None,
                    "networkPolicy": {"allowPorts": [9090]},
                }
            },
        )
        await eventually(
            lambda: netpol() and ingress_ports(netpol() or {}) == [9090, 15021, 15080],
            message="updated NetworkPolicy",
        )
        await api.merge_patch(
            microgateways_path("shop", "shop"), {"spec": {"networkPolicy": {"enabled": False}}}
        )
        await eventually(lambda: netpol() is None, message="NetworkPolicy deleted (opt-out)")
