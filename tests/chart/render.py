"""Rendering the chart with the real Helm engine (helm-python-sdk, Helm v4's Go SDK via
ctypes): what ``helm template`` / ``helm install --dry-run`` produce, as parsed objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import helm_python as helm
import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "wardgate"
RELEASE = "wg"
NAMESPACE = "wardgate-system"
KUBE_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"webhooks": {"tls": {"mode": "certManager"}}},
    "cert-manager-issuer": {
        "webhooks": {
            "tls": {
                "mode": "certManager",
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        }
    },
    "classic-sidecar": {
        "sidecar": {"mode": "classic", "adminPort": 15000, "adminAddress": "0.0.0.0"}
    },
    "restricted-namespaces": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "baseline": {
        "securityBaseline": {
            "enabled": True,
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "spec": {
                "waf": {"minimumMode": "enforce", "enforceFamilies": ["sqli", "xss"]},
                "jwt": {"required": True},
                "limits": {"maxRequestBodyBytes": 1048576, "allowedMethods": ["GET", "POST"]},
                "delegableExceptions": [
                    {"ruleIds": ["942100"], "paths": ["/search"], "reason": "free-text search"}
                ],
            },
        }
    },
    "monitoring": {
        "monitoring": {
            "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "serviceMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        "networkPolicy": {"enabled": True},
    },
    "injector-reads-baselines": {
        "injector": {"baselinesFromCluster": True},
        "networkPolicy": {"enabled": True},
    },
    "hardened-overrides": {
        "images": {
            "operator": {
                "repository": "registry.example.com/wardgate-operator",
                "tag": "",
                "digest": "sha256:" + "a" * 64,
                "pullPolicy": "Always",
            }
        },
        "webhooks": {"inject": {"failurePolicy": "Ignore"}, "excludeNamespaces": ["monitoring"]},
        "injector": {"replicas": 3, "podDisruptionBudget": {"enabled": False}},
        "podSecurity": {"runAsUser": None, "runAsGroup": None},
        "imagePullSecrets": ["regcred"],
        "tests": {"enabled": False},
    },
}
"""Value sets every structural test runs against."""


@dataclass(frozen=True)
class Rendered:
    """One render: the objects (NOTES excluded) and the NOTES text."""

    objects: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
        return found[0]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every pod spec rendered: Deployments' templates and bare (test) Pods."""
        for o in self.objects:
            if o["kind"] == "Deployment":
                yield o["metadata"]["name"], o["spec"]["template"]["spec"]
            elif o["kind"] == "Pod":
                yield o["metadata"]["name"], o["spec"]


def render(
    values: dict[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    upgrade: bool = False,
) -> Rendered:
    """Render offline (``lookup`` returns nothing, as in ``helm template``)."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(
            values or {},
            name=RELEASE,
            namespace=namespace,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )
    return parse(manifests)


def parse(manifests: dict[str, str]) -> Rendered:
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(tuple(objects), notes)
