"""Pure functions from specs to Kubernetes objects (plain dicts). No I/O.

The ConfigMap holds exactly what the sidecar loads (``policy.yaml``, the effective policy
with every default written out) and the digest the sidecar will report for it, so
"propagated" is a string comparison.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from wardgate.config.policy import PolicySpec
from wardgate_operator.injection import (
    ANNOTATION_CPU,
    ANNOTATION_MEMORY,
    ANNOTATION_MICROGATEWAY,
    configmap_name,
    tls_annotations,
)
from wardgate_operator.models import API_VERSION, MicrogatewaySpec, SidecarConfig
from wardgate_operator.podports import (
    ANNOTATION_APP_PORT,
    ANNOTATION_PORT_NAME,
    ANNOTATION_SERVICE_PORT,
)

ANNOTATION_DIGEST = "wardgate.dev/policy-digest"
ANNOTATION_BASELINES = "wardgate.dev/baselines"
LABEL_MICROGATEWAY = "wardgate.dev/microgateway"
MANAGED_BY = {"app.kubernetes.io/managed-by": "wardgate-operator"}
POLICY_KEY = "policy.yaml"


def policy_yaml(policy: PolicySpec) -> str:
    """The policy document the sidecar loads: every field written out, camelCase."""
    header = "# Effective policy rendered by wardgate-operator (app policy + baselines).\n"
    body = yaml.safe_dump(policy.model_dump(mode="json", by_alias=True), sort_keys=True)
    return header + body


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    """The controller owner reference to a Microgateway (garbage collection)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Microgateway",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def render_configmap(
    *, name: str, namespace: str, uid: str, effective: PolicySpec, baselines: Sequence[str] = ()
) -> dict[str, Any]:
    """The ConfigMap for Microgateway ``namespace/name`` carrying ``effective``."""
    annotations = {ANNOTATION_DIGEST: effective.digest()}
    if baselines:
        annotations[ANNOTATION_BASELINES] = ",".join(sorted(baselines))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(name),
            "namespace": namespace,
            "labels": {**MANAGED_BY, LABEL_MICROGATEWAY: _label_value(name)},
            "annotations": annotations,
            "ownerReferences": [owner_reference(name, uid)],
        },
        "data": {POLICY_KEY: policy_yaml(effective)},
    }


def _label_value(name: str) -> str:
    """Label values are at most 63 characters; longer names are cut (the owner reference
    is the authoritative link)."""
    return name[:63].rstrip("-.")


def pod_annotations(spec: MicrogatewaySpec, name: str) -> dict[str, str]:
    """The annotations a workload's pod template needs for the injector to add this
    Microgateway's sidecar (the injector reads only the pod). Only the first is required;
    the others repeat what the Microgateway sets explicitly (``spec.tls`` included: without
    its annotations the sidecar serves plain HTTP, reported as ``Degraded``)."""
    out = {ANNOTATION_MICROGATEWAY: name}
    if spec.service_port is not None:
        out[ANNOTATION_SERVICE_PORT] = str(spec.service_port)
    if spec.app_port is not None:
        out[ANNOTATION_APP_PORT] = str(spec.app_port)
    if spec.port_name != "http":
        out[ANNOTATION_PORT_NAME] = spec.port_name
    requests = spec.sidecar.resources.requests
    if requests.cpu is not None:
        out[ANNOTATION_CPU] = requests.cpu
    if requests.memory is not None:
        out[ANNOTATION_MEMORY] = requests.memory
    out.update(tls_annotations(spec.tls))
    return out


# --- the NetworkPolicy -----------------------------------------------------------------

ENV_PROXY_PORT = "WARDGATE_SIDECAR_PROXY_PORT"
ENV_STATUS_PORT = "WARDGATE_SIDECAR_STATUS_PORT"


@dataclass(frozen=True, slots=True)
class SidecarPorts:
    """The sidecar's network ports as the injector configures them (the chart passes the
    same ``sidecar.proxyPort``/``sidecar.statusPort`` to both)."""

    proxy: int = SidecarConfig.model_fields["proxy_port"].default
    status: int = SidecarConfig.model_fields["status_port"].default

    @classmethod
    def from_env(cls) -> SidecarPorts:
        """From ``WARDGATE_SIDECAR_PROXY_PORT``/``WARDGATE_SIDECAR_STATUS_PORT`` (defaults
        otherwise)."""
        default = cls()
        return cls(
            int(os.environ.get(ENV_PROXY_PORT) or default.proxy),
            int(os.environ.get(ENV_STATUS_PORT) or default.status),
        )


def network_policy_name(microgateway: str) -> str:
    """The NetworkPolicy of a Microgateway (same name as its ConfigMap)."""
    return configmap_name(microgateway)


def render_network_policy(
    *, name: str, namespace: str, uid: str, spec: MicrogatewaySpec, ports: SidecarPorts
) -> dict[str, Any]:
    """Ingress to the selected pods only on the sidecar's proxy port (``servicePort`` for
    pods injected the legacy way), its status port and ``networkPolicy.allowPorts``.
    Egress is not restricted. NetworkPolicies add up: another policy admitting the app's
    port reopens it (``docs/operator.md``)."""
    proxy = spec.service_port if spec.service_port is not None else ports.proxy
    numbers = sorted({proxy, ports.status, *spec.network_policy.allow_ports})
    selector = spec.pod_selector.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(name),
            "namespace": namespace,
            "labels": {**MANAGED_BY, LABEL_MICROGATEWAY: _label_value(name)},
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "podSelector": {k: v for k, v in selector.items() if v},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": n} for n in numbers]}],
        },
    }


# --- status ----------------------------------------------------------------------------

CONDITION_TYPES = ("Accepted", "Ready", "Propagated", "Degraded", "BaselineCompliant")


def condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A ``metav1.Condition``; ``lastTransitionTime`` is kept from ``previous`` when the
    status did not change (so ``kubectl wait`` and alerting see real transitions)."""
    text = "Unknown" if status is None else ("True" if status else "False")
    since = now
    for old in previous:
        if old.get("type") == type_ and old.get("status") == text:
            since = str(old.get("lastTransitionTime") or now)
    return {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], updates: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``previous`` with each condition in ``updates`` replaced by type, in a stable
    order (the five known types first)."""
    by_type = {str(c.get("type")): dict(c) for c in previous}
    for update in updates:
        by_type[str(update["type"])] = dict(update)
    known = [by_type.pop(t) for t in CONDITION_TYPES if t in by_type]
    return known + [by_type[t] for t in sorted(by_type)]
