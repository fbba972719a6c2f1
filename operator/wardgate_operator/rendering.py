"""Pure functions from specs to Kubernetes objects (plain dicts). No I/O.

The ConfigMap holds exactly what the sidecar loads (``policy.yaml``, the effective policy
with every default written out) and the digest the sidecar will report for it, so
"propagated" is a string comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from wardgate.config.policy import PolicySpec
from wardgate_operator.injection import (
    ANNOTATION_APP_PORT,
    ANNOTATION_CPU,
    ANNOTATION_MEMORY,
    ANNOTATION_MICROGATEWAY,
    ANNOTATION_PORT_NAME,
    ANNOTATION_SERVICE_PORT,
    configmap_name,
)
from wardgate_operator.models import API_VERSION, MicrogatewaySpec

ANNOTATION_DIGEST = "wardgate.dev/policy-digest"
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
        annotations["wardgate.dev/baselines"] = ",".join(sorted(baselines))
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
    Microgateway's sidecar (the injector reads only the pod)."""
    out = {
        ANNOTATION_MICROGATEWAY: name,
        ANNOTATION_SERVICE_PORT: str(spec.service_port),
        ANNOTATION_APP_PORT: str(spec.app_port),
    }
    if spec.port_name != "http":
        out[ANNOTATION_PORT_NAME] = spec.port_name
    requests = spec.sidecar.resources.requests
    if requests.cpu is not None:
        out[ANNOTATION_CPU] = requests.cpu
    if requests.memory is not None:
        out[ANNOTATION_MEMORY] = requests.memory
    return out


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
