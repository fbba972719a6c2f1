"""inject(pod, template) -> JSONPatch: the injection matrix, idempotence, hardening, port
takeover; every result applied with `jsonpatch` and validated with kubernetes-validate."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate_operator.injection import (
    InjectionError,
    apply_patch,
    configmap_name,
    inject,
    parse_quantity,
)
from wardgate_operator.models import SidecarConfig

K8S_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33"]

TEMPLATE = SidecarConfig.model_validate(
    {
        "image": "ghcr.io/wardgate/wardgate:0.1.0",
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
    }
)
CLASSIC = TEMPLATE.model_copy(update={"mode": "classic"})


def pod(
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    ann = {
        "wardgate.dev/microgateway": "shop",
        "wardgate.dev/service-port": "8080",
        "wardgate.dev/app-port": "8081",
    }
    ann.update(annotations or {})
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-",
            "annotations": ann,
            "labels": labels or {"app": "shop"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "shop:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ],
            **spec,
        },
    }
    return body


def injected(body: dict[str, Any], template: SidecarConfig = TEMPLATE) -> dict[str, Any]:
    patch = inject(body, template)
    result = jsonpatch.apply_patch(body, patch)
    assert apply_patch(body, patch) == result  # our applier (CLI) agrees with jsonpatch
    return result


def sidecar_of(body: dict[str, Any]) -> dict[str, Any]:
    spec = body["spec"]
    found = [
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "wardgate"
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("template", [TEMPLATE, CLASSIC], ids=["native", "classic"])
def test_injected_pod_is_valid_for_every_supported_kubernetes(version, template):
    result = injected(pod(), template)
    kubernetes_validate.validate(result, version, strict=True)


def test_native_sidecar_is_first_init_container_with_restart_always():
    result = injected(pod(initContainers=[{"name": "migrate", "image": "m:1"}]))
    names = [c["name"] for c in result["spec"]["initContainers"]]
    assert names == ["wardgate", "migrate"]
    assert result["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in result["spec"]["containers"]] == ["app"]


def test_classic_sidecar_is_appended_and_has_no_restart_policy():
    result = injected(pod(), CLASSIC)
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", "wardgate"]
    assert "restartPolicy" not in result["spec"]["containers"][1]
    assert "initContainers" not in result["spec"]


def test_pod_annotation_switches_mode():
    result = injected(pod({"wardgate.dev/sidecar-mode": "classic"}))
    assert result["spec"]["containers"][-1]["name"] == "wardgate"


def test_sidecar_is_hardened_and_runs_the_contract_command():
    container = sidecar_of(injected(pod()))
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["command"] + container["args"] == [
        "wardgate",
        "run",
        "--upstream",
        "http://127.0.0.1:8081",
        "--policy",
        "/etc/wardgate/policy/policy.yaml",
        "--listen",
        "0.0.0.0:8080",
        "--admin",
        "127.0.0.1:9901",
        "--status",
        "0.0.0.0:15021",
    ]
    assert container["readinessProbe"]["httpGet"]["port"] == "wardgate-status"


def test_policy_configmap_is_mounted_as_a_directory():
    result = injected(pod(volumes=[{"name": "data", "emptyDir": {}}]))
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert set(volumes) == {"data", "wardgate-policy", "wardgate-tmp"}
    assert volumes["wardgate-policy"]["configMap"] == {"name": configmap_name("shop")}
    mount = sidecar_of(result)["volumeMounts"][0]
    assert mount == {
        "name": "wardgate-policy",
        "mountPath": "/etc/wardgate/policy",
        "readOnly": True,
    }
    assert "subPath" not in mount  # subPath mounts never see ConfigMap updates


def test_legacy_port_takeover_moves_the_named_port_to_the_sidecar():
    result = injected(pod())
    app_port = result["spec"]["containers"][0]["ports"][0]
    assert app_port == {"containerPort": 8081}
    assert sidecar_of(result)["ports"][0]["name"] == "http"
    assert sidecar_of(result)["ports"][0]["containerPort"] == 8080


def test_custom_port_name():
    body = pod({"wardgate.dev/port-name": "web"})
    body["spec"]["containers"][0]["ports"] = [{"name": "web", "containerPort": 9000}]
    result = injected(body)
    assert "name" not in result["spec"]["containers"][0]["ports"][0]
    assert sidecar_of(result)["ports"][0]["name"] == "web"


def test_resources_from_annotations_are_clamped_to_the_cluster_limit():
    warnings: list[str] = []
    body = pod({"wardgate.dev/sidecar-cpu": "200m", "wardgate.dev/sidecar-memory": "2Gi"})
    patch = inject(body, TEMPLATE, warnings)
    container = sidecar_of(jsonpatch.apply_patch(body, patch))
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert any("sidecar-memory=2Gi" in w for w in warnings)


def test_default_container_annotation_keeps_kubectl_on_the_app():
    result = injected(pod(), CLASSIC)
    assert result["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"


@pytest.mark.parametrize("template", [TEMPLATE, CLASSIC], ids=["native", "classic"])
def test_reinvocation_yields_an_empty_patch(template):
    once = injected(pod(), template)
    assert inject(once, template) == []


def test_reinvocation_after_another_mutator_added_a_container():
    once = injected(pod())
    once["spec"]["containers"].append({"name": "other-sidecar", "image": "o:1"})
    assert inject(once, TEMPLATE) == []


def test_opt_out_label_and_missing_annotation_mean_no_injection():
    assert inject(pod(labels={"wardgate.dev/inject": "false"}), TEMPLATE) == []
    body = pod()
    del body["metadata"]["annotations"]["wardgate.dev/microgateway"]
    assert inject(body, TEMPLATE) == []


def test_pod_without_annotations_map_gets_one():
    body = pod()
    body["metadata"] = {"labels": {"wardgate.dev/inject": "true"}}
    assert inject(body, TEMPLATE) == []  # no microgateway annotation: nothing to inject


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"wardgate.dev/app-port": "8080"}, "must differ"),
        ({"wardgate.dev/app-port": "http"}, "not a port"),
        ({"wardgate.dev/service-port": "70000"}, "not a port"),
        ({"wardgate.dev/app-port": "9901"}, "admin port"),
        ({"wardgate.dev/sidecar-cpu": "lots"}, "quantity"),
        ({"wardgate.dev/sidecar-mode": "ambient"}, "native or classic"),
        ({"wardgate.dev/port-name": "Not_A_Name"}, "port name"),
    ],
)
def test_unusable_requests_are_refused_with_a_reason(annotations, message):
    with pytest.raises(InjectionError, match=message):
        inject(pod(annotations), TEMPLATE)


def test_missing_port_annotation_is_refused():
    body = pod()
    del body["metadata"]["annotations"]["wardgate.dev/app-port"]
    with pytest.raises(InjectionError, match=r"service-port needs wardgate\.dev/app-port"):
        inject(body, TEMPLATE)


def test_quantities():
    assert parse_quantity("100m") * 10 == parse_quantity("1")
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    with pytest.raises(ValueError):
        parse_quantity("1e3")


def test_inject_does_not_modify_its_input():
    body = pod()
    before = copy.deepcopy(body)
    inject(body, TEMPLATE)
    assert body == before


containers = st.lists(
    st.fixed_dictionaries(
        {
            "image": st.just("x:1"),
            "ports": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["http", "metrics", "grpc"]),
                        "containerPort": st.sampled_from([8080, 8081, 9090, 3000]),
                    }
                ),
                max_size=3,
                unique_by=lambda p: p["name"],
            ),
        }
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=60, deadline=None)
@given(
    apps=containers,
    inits=st.integers(0, 2),
    volumes=st.integers(0, 2),
    mode=st.sampled_from(["native", "classic"]),
)
def test_any_pod_shape_injects_once_and_validates(apps, inits, volumes, mode):
    for i, c in enumerate(apps):
        c["name"] = f"c{i}"
    body = pod(
        {"wardgate.dev/sidecar-mode": mode},
        initContainers=[{"name": f"i{i}", "image": "i:1"} for i in range(inits)],
        volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(volumes)],
    )
    body["spec"]["containers"] = apps
    if not inits:
        del body["spec"]["initContainers"]
    if not volumes:
        del body["spec"]["volumes"]
    result = injected(body)
    sidecar_of(result)
    assert inject(result, TEMPLATE) == []
    for c in result["spec"]["containers"]:
        if c["name"] != "wardgate":
            assert all(p.get("name") != "http" for p in c["ports"])
            assert all(p["containerPort"] != 8080 for p in c["ports"])
    kubernetes_validate.validate(result, "1.31", strict=True)


def test_admin_address_opt_in_for_propagation():
    exposed = TEMPLATE.model_copy(update={"admin_address": "0.0.0.0"})
    args = sidecar_of(injected(pod(), exposed))["args"]
    assert args[args.index("--admin") + 1] == "0.0.0.0:9901"
    with pytest.raises(ValueError):
        SidecarConfig.model_validate({"image": "x", "adminAddress": "10.0.0.1"})


def test_baseline_ceiling_lowers_limits_and_requests():
    from wardgate_operator.injection import resource_ceiling

    ceiling = resource_ceiling(
        [{"memory": "192Mi"}, {"memory": "128Mi", "cpu": "2"}, {"cpu": None}]
    )
    assert ceiling == {"memory": "128Mi", "cpu": "2"}
    warnings: list[str] = []
    body = pod({"wardgate.dev/sidecar-memory": "200Mi"})
    result = jsonpatch.apply_patch(body, inject(body, TEMPLATE, warnings, ceiling))
    resources = sidecar_of(result)["resources"]
    assert resources["limits"] == {"cpu": "500m", "memory": "128Mi"}  # 2 CPUs > 500m: kept
    assert resources["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert any("memory limit 256Mi lowered to 128Mi" in w for w in warnings)
    kubernetes_validate.validate(result, "1.33", strict=True)


def test_ceiling_without_a_template_limit_becomes_the_limit():
    bare = SidecarConfig.model_validate({"image": "x:1"})
    result = injected(pod(), bare)
    assert "resources" not in sidecar_of(result)
    result = jsonpatch.apply_patch(pod(), inject(pod(), bare, None, {"cpu": "300m"}))
    assert sidecar_of(result)["resources"] == {"limits": {"cpu": "300m"}}
