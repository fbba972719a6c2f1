"""Rendered manifests: every object valid for Kubernetes 1.29-1.33, and the invariants a
platform team checks before installing (replicas, disruption budget, webhook settings, least
privilege RBAC, restricted pod security)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart import k8s
from tests.chart.render import KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS, Rendered, render

OPERATOR_RULES = {
    ("wardgate.dev", "microgateways"): {"get", "list", "watch", "patch"},
    ("wardgate.dev", "microgateways/status"): {"get", "patch", "update"},
    ("wardgate.dev", "securitybaselines"): {"get", "list", "watch"},
    ("wardgate.dev", "securitybaselines/status"): {"get", "patch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create", "patch", "delete"},
}
"""The operator's permissions, exactly (the operator <-> chart contract)."""

CLUSTER_SCOPED = {"securitybaselines", "securitybaselines/status", "namespaces"}


@pytest.fixture(scope="module")
def renders() -> dict[str, Rendered]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def default(renders: dict[str, Rendered]) -> Rendered:
    return renders["defaults"]


# --- every object is valid Kubernetes ------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_builtin_object_validates(
    renders: dict[str, Rendered], value_set: str, version: str
) -> None:
    builtin = [o for o in renders[value_set].objects if k8s.is_builtin(o)]
    assert len(builtin) >= 10
    for obj in builtin:
        k8s.validate(obj, version)


def test_custom_resources_are_only_the_expected_kinds(renders: dict[str, Rendered]) -> None:
    # kubernetes-validate has no schemas for CRD kinds; these are checked field by field in
    # their own tests (cert-manager, prometheus-operator, SecurityBaseline).
    custom = {
        (o["apiVersion"], o["kind"])
        for r in renders.values()
        for o in r.objects
        if not k8s.is_builtin(o)
    }
    assert custom == {
        ("cert-manager.io/v1", "Certificate"),
        ("cert-manager.io/v1", "Issuer"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("wardgate.dev/v1alpha1", "SecurityBaseline"),
    }


def test_validation_catches_a_broken_object(default: Rendered) -> None:
    # The validator is strict: an unknown field in a rendered Deployment is refused.
    deploy = yaml.safe_load(yaml.safe_dump(default.one("Deployment", "-operator")))
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(Exception, match="livenessprobe"):
        k8s.validate(deploy, "1.31")


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_names_and_namespaces(renders: dict[str, Rendered], value_set: str) -> None:
    watched = set(VALUE_SETS[value_set].get("operator", {}).get("watchNamespaces", []))
    names = set()
    for obj in renders[value_set].objects:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        assert key not in names, f"duplicate {key}"
        names.add(key)
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in ("Role", "RoleBinding"):
            assert meta["namespace"] in watched
        elif obj["kind"] in (
            "ConfigMap",
            "Secret",
            "Service",
            "ServiceAccount",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Certificate",
            "Issuer",
            "PodMonitor",
            "ServiceMonitor",
            "Pod",
        ):
            assert meta["namespace"] == NAMESPACE, key
        else:
            assert "namespace" not in meta, f"{key} is cluster-scoped"


# --- workloads ----------------------------------------------------------------------------


def test_operator_deployment(renders: dict[str, Rendered]) -> None:
    deploy = renders["defaults"].one("Deployment", "-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "--all-namespaces"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}[probe["port"]]
    assert port == 8080
    assert container["image"] == "ghcr.io/wardgate/wardgate-operator:0.1.0"

    restricted = renders["restricted-namespaces"].one("Deployment", "-operator")
    (container,) = restricted["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "--namespace", "team-a", "--namespace", "team-b"]


def test_injector_deployment_pdb_and_spread(default: Rendered) -> None:
    deploy = default.one("Deployment", "-injector")
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = spec["template"]["metadata"]["labels"]
    assert k8s.selector_matches(spec["selector"], pod_labels)
    (container,) = spec["template"]["spec"]["containers"]
    assert container["args"] == [
        "injector", "--listen", "0.0.0.0:9443", "--tls-cert", "/tls/tls.crt",
        "--tls-key", "/tls/tls.key", "--sidecar-config", "/etc/wardgate/sidecar.yaml",
    ]  # fmt: skip
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"https": 9443}

    # The files the args name exist in the pod: /tls from the TLS Secret, /etc/wardgate from
    # the sidecar ConfigMap (mounted as directories, so updates reach the pod).
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes[mounts["/tls"]]["secret"]["secretName"] == f"{RELEASE}-wardgate-injector-tls"
    cm = volumes[mounts["/etc/wardgate"]]["configMap"]["name"]
    assert "sidecar.yaml" in default.one("ConfigMap", cm.removeprefix(RELEASE))["data"]
    assert all("subPath" not in m for m in container["volumeMounts"])

    pdb = default.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert k8s.selector_matches(pdb["spec"]["selector"], pod_labels)
    # ...and selects nothing else (the operator must stay drainable).
    operator_labels = default.one("Deployment", "-operator")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert not k8s.selector_matches(pdb["spec"]["selector"], operator_labels)

    spread = spec["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert all(k8s.selector_matches(c["labelSelector"], pod_labels) for c in spread)

    service = default.one("Service", "-injector")
    assert k8s.selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]


def test_injector_reading_baselines_gets_exactly_that(renders: dict[str, Rendered]) -> None:
    r = renders["injector-reads-baselines"]
    sa = r.one("ServiceAccount", "-injector")
    assert sa["automountServiceAccountToken"] is True
    deploy = r.one("Deployment", "-injector")
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert (
        deploy["spec"]["template"]["spec"]["containers"][0]["args"][-1]
        == "--baselines-from-cluster"
    )
    role = r.one("ClusterRole", "-injector")
    assert _rules([role]) == {
        ("wardgate.dev", "securitybaselines"): {"get", "list"},
        ("", "namespaces"): {"get"},
    }
    (binding,) = [
        b
        for b in r.of_kind("ClusterRoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    # The operator's permissions are unchanged.
    assert _rules([r.one("ClusterRole", "-operator")]) == OPERATOR_RULES
    # Egress only to DNS and the API server.
    policy = next(
        p for p in r.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-injector")
    )
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} == {
        53,
        443,
        6443,
    }


def test_injector_replicas_and_pdb_are_configurable(renders: dict[str, Rendered]) -> None:
    r = renders["hardened-overrides"]
    assert r.one("Deployment", "-injector")["spec"]["replicas"] == 3
    assert r.of_kind("PodDisruptionBudget") == []


def test_injector_has_no_api_access(renders: dict[str, Rendered]) -> None:
    for name, r in renders.items():
        if VALUE_SETS[name].get("injector", {}).get("baselinesFromCluster"):
            continue
        sa = r.one("ServiceAccount", "-injector")
        assert sa["automountServiceAccountToken"] is False
        pod = r.one("Deployment", "-injector")["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == sa["metadata"]["name"]
        for binding in [*r.of_kind("RoleBinding"), *r.of_kind("ClusterRoleBinding")]:
            assert all(s["name"] != sa["metadata"]["name"] for s in binding["subjects"])


def test_sidecar_config_file(renders: dict[str, Rendered]) -> None:
    doc = yaml.safe_load(renders["defaults"].one("ConfigMap", "-sidecar")["data"]["sidecar.yaml"])
    assert doc == {
        "image": "ghcr.io/wardgate/wardgate:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "proxyPort": 15080,
        "statusPort": 15021,
        "adminPort": 9901,
        "adminAddress": "127.0.0.1",
        # auto: Helm's built-in version offline (>= 1.32): native. Before 1.32 the template
        # picks classic (semverCompare on .Capabilities.KubeVersion; helm-python-sdk's render
        # takes no kube version, so only a real `helm install` on such a cluster shows it).
        "mode": "native",
    }
    classic = yaml.safe_load(
        renders["classic-sidecar"].one("ConfigMap", "-sidecar")["data"]["sidecar.yaml"]
    )
    assert (classic["mode"], classic["adminPort"], classic["adminAddress"]) == (
        "classic",
        15000,
        "0.0.0.0",
    )
    # A sidecar template change rolls the injector (the checksum annotation differs).
    checksums = {
        name: r.one("Deployment", "-injector")["spec"]["template"]["metadata"]["annotations"][
            "checksum/sidecar-config"
        ]
        for name, r in renders.items()
        if name in ("defaults", "classic-sidecar")
    }
    assert checksums["defaults"] != checksums["classic-sidecar"]


def test_image_digest_wins_over_tag(renders: dict[str, Rendered]) -> None:
    r = renders["hardened-overrides"]
    images = {c["image"] for _, pod in r.pod_specs() for c in pod["containers"]}
    assert images == {"registry.example.com/wardgate-operator@sha256:" + "a" * 64}
    for _, pod in r.pod_specs():
        assert all(c["imagePullPolicy"] == "Always" for c in pod["containers"])


# --- pod security ---------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_restricted_pod_security_everywhere(renders: dict[str, Rendered], value_set: str) -> None:
    pods = list(renders[value_set].pod_specs())
    assert len(pods) >= 2
    for name, pod in pods:
        assert k8s.restricted_violations(pod) == [], name
        if VALUE_SETS[value_set].get("podSecurity", {}).get("runAsUser", 65532) is not None:
            assert pod["securityContext"]["runAsUser"] == 65532
        else:  # OpenShift: the platform picks the UID; runAsNonRoot still holds
            assert "runAsUser" not in pod["securityContext"]
        for c in pod["containers"]:
            assert "resources" in c and c["resources"]["limits"]["memory"]
            # Read-only root: the only writable path is an emptyDir at /tmp.
            writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            assert writable <= {"/tmp"}, name


def test_restricted_check_catches_weakened_pods(default: Rendered) -> None:
    # The checker is not vacuous: each weakening is reported.
    pod = yaml.safe_load(
        yaml.safe_dump(default.one("Deployment", "-operator")["spec"]["template"]["spec"])
    )
    sc = pod["containers"][0]["securityContext"]
    sc["readOnlyRootFilesystem"] = False
    sc["capabilities"] = {"drop": ["NET_RAW"]}
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    found = k8s.restricted_violations(pod)
    assert len(found) == 4, found


# --- RBAC ---------------------------------------------------------------------------------


def _rules(objs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for obj in objs:
        for rule in obj["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {obj['metadata']['name']}"
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rbac_has_no_wildcards_and_no_escalation(
    renders: dict[str, Rendered], value_set: str
) -> None:
    r = renders[value_set]
    rules = _rules([*r.of_kind("ClusterRole"), *r.of_kind("Role")])
    for (_group, resource), verbs in rules.items():
        assert resource not in (
            "secrets",
            "roles",
            "clusterroles",
            "rolebindings",
            "clusterrolebindings",
            "serviceaccounts/token",
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
        )
        assert not verbs & {"escalate", "bind", "impersonate", "*"}


def test_operator_rbac_is_exactly_the_contract(renders: dict[str, Rendered]) -> None:
    r = renders["defaults"]
    (role,) = r.of_kind("ClusterRole")
    assert role["metadata"]["name"].endswith("-operator")
    assert _rules([role]) == OPERATOR_RULES
    assert r.of_kind("Role") == []
    (binding,) = r.of_kind("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = r.one("ServiceAccount", "-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert (
        r.one("Deployment", "-operator")["spec"]["template"]["spec"]["serviceAccountName"]
        == sa["metadata"]["name"]
    )


def test_restricted_namespaces_get_roles_not_cluster_wide_access(
    renders: dict[str, Rendered],
) -> None:
    r = renders["restricted-namespaces"]
    role = r.one("ClusterRole", "-operator")
    # Only what is cluster-scoped stays in the ClusterRole.
    assert {res for _, res in _rules([role])} == CLUSTER_SCOPED
    roles = r.of_kind("Role")
    assert sorted(x["metadata"]["namespace"] for x in roles) == ["team-a", "team-b"]
    for ns_role in roles:
        expected = {k: v for k, v in OPERATOR_RULES.items() if k[1] not in CLUSTER_SCOPED}
        assert _rules([ns_role]) == expected
    bindings = r.of_kind("RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["kind"]) for b in bindings) == [
        ("team-a", "Role"), ("team-b", "Role"),
    ]  # fmt: skip


# --- webhooks -----------------------------------------------------------------------------


def _webhook(r: Rendered, kind: str, name: str | None = None) -> dict[str, Any]:
    """The webhook ``name`` of the configuration ``kind`` (its first one by default)."""
    (config,) = r.of_kind(kind)
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    return hooks[name] if name else config["webhooks"][0]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_webhook_settings(renders: dict[str, Rendered], value_set: str) -> None:
    r = renders[value_set]
    expected_policy = (
        VALUE_SETS[value_set].get("webhooks", {}).get("inject", {}).get("failurePolicy", "Fail")
    )
    inject = _webhook(r, "MutatingWebhookConfiguration")
    assert inject["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert inject["reinvocationPolicy"] == "IfNeeded"
    assert inject["failurePolicy"] == expected_policy
    validate = _webhook(r, "ValidatingWebhookConfiguration")
    assert validate["rules"] == [
        {
            "apiGroups": ["wardgate.dev"],
            "apiVersions": ["v1alpha1"],
            "resources": ["microgateways"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert validate["failurePolicy"] == "Fail"
    baselines = _webhook(
        r, "ValidatingWebhookConfiguration", "validate.securitybaselines.wardgate.dev"
    )
    assert baselines["rules"] == [
        {
            "apiGroups": ["wardgate.dev"],
            "apiVersions": ["v1alpha1"],
            "resources": ["securitybaselines"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Cluster",
        }
    ]
    assert "namespaceSelector" not in baselines  # cluster-scoped: would not apply
    assert baselines["failurePolicy"] == "Fail"
    (config,) = r.of_kind("ValidatingWebhookConfiguration")
    assert [h["name"] for h in config["webhooks"]] == [
        "validate.microgateways.wardgate.dev",
        "validate.securitybaselines.wardgate.dev",
    ]
    service = r.one("Service", "-injector")
    for hook, path in ((inject, "/inject"), (validate, "/validate"), (baselines, "/validate")):
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 5
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["clientConfig"]["service"] == {
            "name": service["metadata"]["name"], "namespace": NAMESPACE, "path": path,
            "port": service["spec"]["ports"][0]["port"],
        }  # fmt: skip


NAMESPACES = {
    "release": (
        k8s.namespace_labels(NAMESPACE, **{"wardgate.dev/inject": "enabled"}),
        False,
        False,
    ),
    "kube-system": (
        k8s.namespace_labels("kube-system", **{"wardgate.dev/inject": "enabled"}),
        False,
        False,
    ),
    "opted-in": (k8s.namespace_labels("shop", **{"wardgate.dev/inject": "enabled"}), True, True),
    "not-opted-in": (k8s.namespace_labels("blog"), False, True),
    "other-value": (
        k8s.namespace_labels("blog", **{"wardgate.dev/inject": "disabled"}),
        False,
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(NAMESPACES))
def test_webhook_namespace_selection(default: Rendered, case: str) -> None:
    labels, injected, validated = NAMESPACES[case]
    inject = _webhook(default, "MutatingWebhookConfiguration")
    validate = _webhook(default, "ValidatingWebhookConfiguration")
    assert k8s.selector_matches(inject["namespaceSelector"], labels) is injected
    assert k8s.selector_matches(validate["namespaceSelector"], labels) is validated


def test_release_namespace_is_excluded_wherever_it_is_installed() -> None:
    r = render({"webhooks": {"excludeNamespaces": ["monitoring"]}}, namespace="platform")
    inject = _webhook(r, "MutatingWebhookConfiguration")
    for ns in ("platform", "kube-system", "monitoring"):
        labels = k8s.namespace_labels(ns, **{"wardgate.dev/inject": "enabled"})
        assert not k8s.selector_matches(inject["namespaceSelector"], labels), ns
    assert k8s.selector_matches(
        inject["namespaceSelector"],
        k8s.namespace_labels(NAMESPACE, **{"wardgate.dev/inject": "enabled"}),
    )


def test_pod_opt_out_label(default: Rendered) -> None:
    selector = _webhook(default, "MutatingWebhookConfiguration")["objectSelector"]
    assert k8s.selector_matches(selector, {"app": "shop"})
    assert not k8s.selector_matches(selector, {"app": "shop", "wardgate.dev/inject": "false"})


def test_custom_opt_in_label() -> None:
    r = render({"webhooks": {"namespaceLabel": {"key": "example.com/waf", "value": "on"}}})
    selector = _webhook(r, "MutatingWebhookConfiguration")["namespaceSelector"]
    assert k8s.selector_matches(selector, k8s.namespace_labels("shop", **{"example.com/waf": "on"}))
    assert not k8s.selector_matches(
        selector, k8s.namespace_labels("shop", **{"wardgate.dev/inject": "enabled"})
    )


# --- NOTES --------------------------------------------------------------------------------


def test_notes_tell_how_to_opt_in_and_warn_about_ignore(renders: dict[str, Rendered]) -> None:
    notes = renders["defaults"].notes
    assert "kubectl label namespace <app-namespace> wardgate.dev/inject=enabled" in notes
    assert "helm test wg" in notes
    assert "CRDs: installed and upgraded by this release and kept on uninstall" in notes
    assert "WARNING" not in notes
    assert "WARNING: injection failurePolicy is Ignore" in renders["hardened-overrides"].notes


@pytest.mark.parametrize(
    ("labels", "entries"),
    [
        ({"wardgate.dev/inject": "enabled"}, ["inject.wardgate.dev"]),
        ({"wardgate.dev/injection": "enabled"}, ["inject-deprecated-label.wardgate.dev"]),
        (
            {"wardgate.dev/inject": "enabled", "wardgate.dev/injection": "enabled"},
            ["inject.wardgate.dev"],  # never twice
        ),
        ({"wardgate.dev/injection": "disabled"}, []),
        ({}, []),
    ],
)
def test_deprecated_namespace_label_is_accepted_once(
    default: Rendered, labels: dict[str, str], entries: list[str]
) -> None:
    from wardgate_operator.injection import DEPRECATED_NAMESPACE_LABEL

    (config,) = default.of_kind("MutatingWebhookConfiguration")
    matched = [
        hook["name"]
        for hook in config["webhooks"]
        if k8s.selector_matches(hook["namespaceSelector"], k8s.namespace_labels("shop", **labels))
    ]
    assert matched == entries
    deprecated = config["webhooks"][1]["namespaceSelector"]["matchExpressions"][0]
    assert deprecated["key"] == DEPRECATED_NAMESPACE_LABEL
    for hook in config["webhooks"]:  # the excluded namespaces stay excluded for both
        system = k8s.namespace_labels("kube-system", **labels)
        assert not k8s.selector_matches(hook["namespaceSelector"], system)
    off = render({"webhooks": {"acceptDeprecatedNamespaceLabel": False}})
    (config,) = off.of_kind("MutatingWebhookConfiguration")
    assert [h["name"] for h in config["webhooks"]] == ["inject.wardgate.dev"]
