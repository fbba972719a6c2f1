"""Generator of ``charts/wardgate/values.schema.json`` (``make generate`` writes it; a test checks
drift).

Every object level carries ``additionalProperties: false`` (maps of labels/annotations/
quantities use a typed ``additionalProperties`` instead), so a misspelt value fails
``helm install`` instead of being ignored. Kubernetes-typed values (affinity, tolerations,
label selectors) reuse the strict Kubernetes 1.29 JSON schema definitions shipped with
kubernetes-validate, copied with everything they reference: the chart validates those values
exactly as the API server would validate the fields they end up in.

Registered in :mod:`tools.generated` (``make generate`` writes it, ``make verify`` checks it).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

Schema = dict[str, Any]

K8S_SCHEMA_VERSION = "v1.29.0-local-strict"
"""The oldest Kubernetes version the chart supports (Chart.yaml kubeVersion)."""

K8S_ROOTS = {
    "affinity": "io.k8s.api.core.v1.Affinity",
    "toleration": "io.k8s.api.core.v1.Toleration",
    "labelSelector": "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "networkPolicyPeer": "io.k8s.api.networking.v1.NetworkPolicyPeer",
}
"""Values that are Kubernetes objects: local name -> Kubernetes definition."""

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"


def obj(properties: Schema, *, required: list[str] | None = None, **extra: Any) -> Schema:
    """A closed object: only the listed properties."""
    out: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def string(description: str = "", **extra: Any) -> Schema:
    out: Schema = {"type": "string", **extra}
    if description:
        out["description"] = description
    return out


def string_map(description: str) -> Schema:
    return {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": description,
    }


def label_map(description: str) -> Schema:
    return {
        "type": "object",
        "propertyNames": {"pattern": LABEL_KEY, "maxLength": 316},
        "additionalProperties": {"type": "string", "pattern": LABEL_VALUE, "maxLength": 63},
        "description": description,
    }


def label_pair(description: str) -> Schema:
    return obj(
        {
            "key": string(pattern=LABEL_KEY, maxLength=316),
            "value": string(pattern=LABEL_VALUE, maxLength=63, minLength=1),
        },
        required=["key", "value"],
        description=description,
    )


def ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


def quantity_map(keys: list[str]) -> Schema:
    quantity = {"type": ["string", "number"], "pattern": QUANTITY}
    return obj(dict.fromkeys(keys, quantity))


def resources_schema(keys: list[str], description: str) -> Schema:
    return obj(
        {"requests": quantity_map(keys), "limits": quantity_map(keys)}, description=description
    )


def image() -> Schema:
    return obj(
        {
            "repository": string(minLength=1),
            "tag": string("Defaults to the chart appVersion.", pattern=r"^$|^[\w][\w.-]{0,127}$"),
            "digest": string("sha256 digest; wins over tag.", pattern=r"^$|^sha256:[a-f0-9]{64}$"),
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        },
        required=["repository", "tag", "digest", "pullPolicy"],
    )


def scheduling() -> Schema:
    return {
        "podAnnotations": string_map("Annotations on the pods."),
        "podLabels": label_map("Extra labels on the pods."),
        "nodeSelector": label_map("Node labels the pods must land on."),
        "tolerations": {"type": "array", "items": ref("toleration")},
        "affinity": ref("affinity"),
        "priorityClassName": string(pattern=r"^$|" + DNS_LABEL[1:]),
    }


BASELINE_EXCLUDED = ("namespaceSelector", "defaults")
"""SecurityBaseline spec fields not taken from ``securityBaseline.spec``: the namespace
selector has its own value; ``defaults`` (a partial policy) is left to hand-written
SecurityBaselines."""


def baseline_spec() -> tuple[Schema, Schema]:
    """The default SecurityBaseline's ``spec`` schema, generated from the operator's own model
    (``SecurityBaselineSpec``, ``extra="forbid"``: closed at every level), and the model
    definitions it references (prefixed ``wardgate.``)."""
    from wardgate.config.baseline import SecurityBaselineSpec

    model = SecurityBaselineSpec.model_json_schema(by_alias=True)
    text = json.dumps(model).replace('"#/$defs/', '"#/$defs/wardgate.')
    model = _strip_titles(json.loads(text))
    all_defs: Schema = {f"wardgate.{k}": v for k, v in model.pop("$defs", {}).items()}
    for name in BASELINE_EXCLUDED:
        model["properties"].pop(name)
    model["description"] = (
        "Floors no Microgateway may go below (`kubectl explain securitybaseline.spec`), "
        "validated by the operator's own SecurityBaselineSpec model."
    )
    return model, _closure(model, all_defs)


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _closure(root: Schema, all_defs: Schema) -> Schema:
    """The definitions ``root`` references, transitively."""
    needed: dict[str, Schema] = {}
    pending = re.findall(r'"#/\$defs/([^"]+)"', json.dumps(root))
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed[name] = all_defs[name]
        pending.extend(re.findall(r'"#/\$defs/([^"]+)"', json.dumps(all_defs[name])))
    return dict(sorted(needed.items()))


def values_schema() -> Schema:
    sched = scheduling()
    baseline, baseline_defs = baseline_spec()
    schema: Schema = obj(
        {
            "nameOverride": string(pattern=r"^$|" + DNS_LABEL[1:], maxLength=40),
            "fullnameOverride": string(pattern=r"^$|" + DNS_LABEL[1:], maxLength=40),
            "commonLabels": label_map("Labels on every object."),
            "images": obj(
                {"operator": image(), "gateway": image()}, required=["operator", "gateway"]
            ),
            "imagePullSecrets": {"type": "array", "items": string(pattern=DNS_LABEL)},
            "podSecurity": obj(
                {
                    "runAsUser": {"type": ["integer", "null"], "minimum": 1},
                    "runAsGroup": {"type": ["integer", "null"], "minimum": 1},
                },
                description="UID/GID; 0 (root) is refused.",
            ),
            "operator": obj(
                {
                    "watchNamespaces": {
                        "type": "array",
                        "uniqueItems": True,
                        "items": string(pattern=DNS_LABEL, maxLength=63),
                    },
                    "resources": resources_schema(
                        ["cpu", "memory", "ephemeral-storage"], "Operator container resources."
                    ),
                    **sched,
                }
            ),
            "injector": obj(
                {
                    "baselinesFromCluster": {"type": "boolean"},
                    "replicas": {"type": "integer", "minimum": 1},
                    "podDisruptionBudget": obj(
                        {
                            "enabled": {"type": "boolean"},
                            "maxUnavailable": {"type": "integer", "minimum": 1},
                        }
                    ),
                    "topologySpread": {
                        "type": "array",
                        "items": obj(
                            {
                                "topologyKey": string(pattern=LABEL_KEY),
                                "maxSkew": {"type": "integer", "minimum": 1},
                                "whenUnsatisfiable": {"enum": ["DoNotSchedule", "ScheduleAnyway"]},
                            },
                            required=["topologyKey", "maxSkew", "whenUnsatisfiable"],
                        ),
                    },
                    "resources": resources_schema(
                        ["cpu", "memory", "ephemeral-storage"], "Injector container resources."
                    ),
                    **sched,
                }
            ),
            "crds": obj({"enabled": {"type": "boolean"}, "keep": {"type": "boolean"}}),
            "sidecar": obj(
                {
                    "mode": {"enum": ["auto", "native", "classic"]},
                    "proxyPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "statusPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "adminPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "adminAddress": {"enum": ["127.0.0.1", "0.0.0.0"]},
                    "resources": resources_schema(
                        ["cpu", "memory"], "Sidecar defaults (requests) and ceiling (limits)."
                    ),
                }
            ),
            "webhooks": obj(
                {
                    "namespaceLabel": label_pair("Namespaces opt in with this label."),
                    "acceptDeprecatedNamespaceLabel": {"type": "boolean"},
                    "podOptOutLabel": label_pair("Pods opt out with this label."),
                    "excludeNamespaces": {
                        "type": "array",
                        "items": string(pattern=DNS_LABEL, maxLength=63),
                    },
                    "inject": obj({"failurePolicy": {"enum": ["Fail", "Ignore"]}}),
                    "validate": obj({"failurePolicy": {"enum": ["Fail", "Ignore"]}}),
                    "tls": obj(
                        {
                            "mode": {"enum": ["helm", "certManager"]},
                            "helm": obj(
                                {
                                    "validityDays": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": 36500,
                                    }
                                }
                            ),
                            "certManager": obj(
                                {
                                    "issuerRef": obj(
                                        {
                                            "name": string(minLength=1),
                                            "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                            "group": string(),
                                        }
                                    ),
                                    "duration": string(pattern=DURATION),
                                    "renewBefore": string(pattern=DURATION),
                                }
                            ),
                        }
                    ),
                }
            ),
            "networkPolicy": obj(
                {
                    "enabled": {"type": "boolean"},
                    "apiServerPorts": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                    "injectorIngressFrom": {"type": "array", "items": ref("networkPolicyPeer")},
                }
            ),
            "monitoring": obj(
                {
                    "podMonitor": obj(
                        {
                            "enabled": {"type": "boolean"},
                            "interval": string(pattern=DURATION),
                            "labels": label_map("Labels on the PodMonitor."),
                        }
                    ),
                    "portName": string(pattern=r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$"),
                    "serviceMonitor": obj(
                        {
                            "enabled": {"type": "boolean"},
                            "interval": string(pattern=DURATION),
                            "serviceLabel": label_pair("App Services to scrape carry this."),
                            "labels": label_map("Labels on the ServiceMonitor."),
                        }
                    ),
                    "grafanaDashboard": obj(
                        {
                            "enabled": {"type": "boolean"},
                            "labelKey": string(pattern=LABEL_KEY),
                            "labelValue": string(pattern=LABEL_VALUE),
                            "namespace": string(pattern=r"^$|" + DNS_LABEL[1:]),
                        }
                    ),
                }
            ),
            "securityBaseline": obj(
                {
                    "enabled": {"type": "boolean"},
                    "name": string(pattern=DNS_LABEL, maxLength=63),
                    "namespaceSelector": ref("labelSelector"),
                    "spec": baseline,
                }
            ),
            "tests": obj({"enabled": {"type": "boolean"}}),
        },
        title="Wardgate chart values",
    )
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    schema["$defs"] = {**kubernetes_defs(), **baseline_defs}
    return schema


def kubernetes_defs() -> Schema:
    """The Kubernetes definitions behind :data:`K8S_ROOTS`, with everything they reference."""
    path = resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/{K8S_SCHEMA_VERSION}/_definitions.json"
    )
    all_defs: Schema = json.loads(path.read_text())["$defs"]
    roots = {local: ref(k8s) for local, k8s in K8S_ROOTS.items()}
    return {**roots, **_closure(roots, all_defs)}


def render() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"
