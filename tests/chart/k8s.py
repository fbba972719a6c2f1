"""Small, exact re-implementations of Kubernetes semantics the chart tests reason about:
label selector matching (as the API server applies a webhook's namespaceSelector) and the
Pod Security Standard "restricted" checks (as the PodSecurity admission plugin applies them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes_validate

BUILTIN_GROUPS = (
    "v1",
    "apps/",
    "policy/",
    "rbac.authorization.k8s.io/",
    "networking.k8s.io/",
    "admissionregistration.k8s.io/",
    "apiextensions.k8s.io/",
)


def is_builtin(obj: Mapping[str, Any]) -> bool:
    """Objects kubernetes-validate has schemas for (the API server's own kinds)."""
    api = str(obj["apiVersion"])
    return api == "v1" or api.startswith(BUILTIN_GROUPS[1:])


def validate(obj: Mapping[str, Any], version: str) -> None:
    """Validate against the strict OpenAPI schema of Kubernetes ``version`` (no unknown
    fields, every type checked): raises kubernetes_validate.ValidationError."""
    kubernetes_validate.validate(dict(obj), version, strict=True)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: all matchLabels and all matchExpressions hold."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_labels(name: str, **labels: str) -> dict[str, str]:
    """A namespace's labels as the API server sets them (kubernetes.io/metadata.name is
    automatic and immutable since 1.22)."""
    return {"kubernetes.io/metadata.name": name, **labels}


RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """What the Pod Security Standard "restricted" (v1.29+) refuses in ``pod_spec``, plus the
    read-only root filesystem this project requires on top."""
    problems: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(flag)
    for vol in pod_spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {vol['name']}: {sorted(kinds)}")
    pod_sc = pod_spec.get("securityContext", {})
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
    if not containers:
        problems.append("no containers")
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if not (
            sc.get("runAsNonRoot") is True
            or (pod_sc.get("runAsNonRoot") is True and "runAsNonRoot" not in sc)
        ):
            problems.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        for port in c.get("ports", []):
            if "hostPort" in port:
                problems.append(f"{name}: hostPort")
    return problems
