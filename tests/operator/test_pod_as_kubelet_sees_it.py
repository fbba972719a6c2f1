"""A new user's workload, injected, as the kubelet and kube-proxy see it (issue 13, item 4).

The user's Deployment: one container with a *named* port, probes on the name and on the
number, restricted security context, and nothing else but the ``wardgate.dev/microgateway``
annotation. For every workload kind the injector handles, after ``wardgate-operator inject
-f`` and after the webhook (JSONPatch applied to the AdmissionReview object), every check of
:mod:`tests.operator.podcheck` holds on every supported Kubernetes version.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.operator.podcheck import (
    KUBE_VERSIONS,
    POD_TEMPLATE_PATHS,
    pod_of,
    pod_problems,
    workload_problems,
)
from tests.operator.test_injector_server import injector, pod_review  # noqa: F401 - fixture
from wardgate_operator.cli import main as operator_main
from wardgate_operator.injection import InjectionError, inject
from wardgate_operator.models import SidecarConfig

IMAGE = "ghcr.io/wardgate/wardgate:0.1.0"
NATIVE = SidecarConfig.model_validate({"image": IMAGE})
CLASSIC = NATIVE.model_copy(update={"mode": "classic"})
NATIVE_SERVICE_VERSIONS = ("1.32", "1.33")

RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def app_container() -> dict[str, Any]:
    return {
        "name": "app",
        "image": "registry.example.com/shop:1.4",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
        "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}},
        "startupProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 30},
        "lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": "http"}}},
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        "securityContext": dict(RESTRICTED),
    }


def pod_template(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {"app": "shop"},
            "annotations": {"wardgate.dev/microgateway": "shop", **(annotations or {})},
        },
        "spec": {
            "containers": [app_container()],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }


def workload(kind: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The user's workload of ``kind`` around :func:`pod_template`."""
    template = pod_template(annotations)
    selector = {"matchLabels": {"app": "shop"}}
    meta = {"name": "shop", "namespace": "shop"}
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**meta, **template["metadata"]},
            "spec": template["spec"],
        }
    if kind in ("Job", "CronJob"):
        template["spec"]["restartPolicy"] = "Never"
        job = {"template": template}
        if kind == "Job":
            return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job}
        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job}},
        }
    spec: dict[str, Any] = {"selector": selector, "template": template}
    if kind == "StatefulSet":
        spec["serviceName"] = "shop"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def cli_inject(tmp_path: Path, doc: dict[str, Any], template: SidecarConfig, capsys: Any) -> Any:
    """``wardgate-operator inject -f FILE --sidecar-config FILE``, the real command."""
    manifest, config = tmp_path / "in.yaml", tmp_path / "sidecar.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    config.write_text(yaml.safe_dump(template.model_dump(mode="json", by_alias=True)))
    capsys.readouterr()
    code = operator_main(["inject", "-f", str(manifest), "--sidecar-config", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.err
    (result,) = list(yaml.safe_load_all(out.out))
    return result


def test_the_users_workload_is_sound_before_injection():
    """The checker's baseline: the input itself passes (the app owns the Service port)."""
    for kind in POD_TEMPLATE_PATHS:
        spec = pod_of(workload(kind))["spec"]
        assert pod_problems(spec, service_port_name="http", service_owner="app") == []


@pytest.mark.parametrize("kind", list(POD_TEMPLATE_PATHS))
def test_cli_inject_classic_passes_every_check_on_every_version(kind, tmp_path, capsys):
    result = cli_inject(tmp_path, workload(kind), CLASSIC, capsys)
    assert workload_problems(result, service_port_name="http") == []


@pytest.mark.parametrize("kind", list(POD_TEMPLATE_PATHS))
def test_cli_inject_native_passes_every_check_where_native_ports_resolve(kind, tmp_path, capsys):
    result = cli_inject(tmp_path, workload(kind), NATIVE, capsys)
    assert (
        workload_problems(result, service_port_name="http", kube_versions=NATIVE_SERVICE_VERSIONS)
        == []
    )
    # Before 1.32 the endpoints controller ignores named ports of native sidecars: the
    # checker says so (the chart's sidecar.mode "auto" picks classic there).
    old = workload_problems(result, service_port_name="http", kube_versions=("1.31",))
    assert old == [
        "[1.31] Service targetPort 'http' resolves to nothing on Kubernetes 1.31, not ['wardgate']"
    ]


def test_what_moved_and_what_stayed(tmp_path, capsys):
    result = cli_inject(tmp_path, workload("Deployment"), CLASSIC, capsys)
    app, sidecar = pod_of(result)["spec"]["containers"]
    # The app keeps its port, without the name; its probes keep reaching it by number.
    assert app["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert app["readinessProbe"]["httpGet"]["port"] == 8080
    assert app["livenessProbe"]["httpGet"]["port"] == 8080
    assert app["startupProbe"]["tcpSocket"]["port"] == 8080
    assert app["lifecycle"]["preStop"]["httpGet"]["port"] == 8080
    # The sidecar listens on its own port, carries the name, forwards to the app's port.
    assert sidecar["ports"] == [
        {"name": "http", "containerPort": 15080, "protocol": "TCP"},
        {"name": "wardgate-status", "containerPort": 15021, "protocol": "TCP"},
    ]
    args = sidecar["args"]
    assert args[args.index("--upstream") + 1] == "http://127.0.0.1:8080"
    assert args[args.index("--listen") + 1] == "0.0.0.0:15080"
    assert args[args.index("--status") + 1] == "0.0.0.0:15021"
    assert args[args.index("--admin") + 1] == "127.0.0.1:9901"
    for probe in ("readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"] == {
            "path": "/ready",
            "port": "wardgate-status",
            "scheme": "HTTP",
        }


def test_legacy_annotations_still_work_and_probes_follow_the_app(tmp_path, capsys):
    """Pods written for the old injector (app moved to app-port) keep working."""
    legacy = {"wardgate.dev/service-port": "8080", "wardgate.dev/app-port": "8081"}
    result = cli_inject(tmp_path, workload("Deployment", legacy), CLASSIC, capsys)
    assert workload_problems(result, service_port_name="http") == []
    app, sidecar = pod_of(result)["spec"]["containers"]
    assert app["ports"] == [{"containerPort": 8081, "protocol": "TCP"}]
    assert app["readinessProbe"]["httpGet"]["port"] == 8081
    assert app["livenessProbe"]["httpGet"]["port"] == 8081
    args = sidecar["args"]
    assert args[args.index("--listen") + 1] == "0.0.0.0:8080"
    assert args[args.index("--upstream") + 1] == "http://127.0.0.1:8081"


def test_several_app_ports_an_annotation_picks_the_protected_one(tmp_path, capsys):
    doc = workload("Deployment")
    app = doc["spec"]["template"]["spec"]["containers"][0]
    app["ports"] = [
        {"name": "web", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    for probe in ("readinessProbe", "startupProbe"):
        app[probe] = {"httpGet": {"path": "/ready", "port": "web"}}
    del app["lifecycle"]
    with pytest.raises(InjectionError, match="several ports"):
        inject(pod_of(doc), CLASSIC)
    doc["spec"]["template"]["metadata"]["annotations"]["wardgate.dev/port-name"] = "web"
    result = cli_inject(tmp_path, doc, CLASSIC, capsys)
    assert workload_problems(result, service_port_name="web") == []
    app_after, sidecar = pod_of(result)["spec"]["containers"]
    assert app_after["ports"][1] == {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
    assert sidecar["ports"][0]["name"] == "web"
    by_number = copy.deepcopy(doc)
    annotations = by_number["spec"]["template"]["metadata"]["annotations"]
    del annotations["wardgate.dev/port-name"]
    annotations["wardgate.dev/app-port"] = "8080"
    again = cli_inject(tmp_path, by_number, CLASSIC, capsys)
    assert pod_of(again)["spec"]["containers"] == pod_of(result)["spec"]["containers"]


def test_host_network_pods_are_refused():
    template = pod_template()
    template["spec"]["hostNetwork"] = True
    with pytest.raises(InjectionError, match="hostNetwork"):
        inject(template, CLASSIC)


@pytest.mark.parametrize(
    ("ports", "annotations", "message"),
    [
        ([], {}, "no TCP container port"),
        ([{"name": "http", "containerPort": 15080}], {}, "sidecar listens on"),
        ([{"name": "http", "containerPort": 15021}], {}, "status port"),
        (
            [{"name": "http", "containerPort": 8080}, {"containerPort": 8081}],
            {"wardgate.dev/app-port": "8081"},
            "'http' is on port 8080",
        ),
        ([{"containerPort": 8080}], {"wardgate.dev/service-port": "8080"}, "needs"),
    ],
)
def test_pods_that_cannot_be_protected_are_refused(ports, annotations, message):
    template = pod_template(annotations)
    template["spec"]["containers"][0]["ports"] = ports
    for probe in ("readinessProbe", "startupProbe", "lifecycle"):
        template["spec"]["containers"][0].pop(probe)
    with pytest.raises(InjectionError, match=message):
        inject(template, CLASSIC)


def test_the_checker_catches_what_the_old_injector_did():
    """The pre-issue-13 result: app port renamed, probe left on the name, a numeric probe
    now on the sidecar's port. Each is reported."""
    spec = pod_of(workload("Pod"))["spec"]
    spec = copy.deepcopy(spec)
    spec["containers"][0]["ports"] = [{"name": "wg-app", "containerPort": 8081}]
    sidecar = {
        "name": "wardgate",
        "image": IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "volumeMounts": [{"name": "wardgate-policy", "mountPath": "/p"}],
        "securityContext": dict(RESTRICTED),
    }
    spec["containers"].append(sidecar)
    problems = pod_problems(spec, service_port_name="http")
    assert "app readinessProbe.httpGet: named port 'http' not in app" in problems
    assert "app livenessProbe.httpGet: port 8080 belongs to wardgate" in problems
    assert "wardgate: volume 'wardgate-policy' does not exist" in problems


def test_the_checker_catches_two_owners_of_the_service_name_and_duplicate_ports():
    spec = copy.deepcopy(pod_of(workload("Pod"))["spec"])
    spec["containers"].append(
        {
            "name": "wardgate",
            "image": IMAGE,
            "ports": [{"name": "http", "containerPort": 8080}],
            "securityContext": dict(RESTRICTED),
        }
    )
    problems = pod_problems(spec, service_port_name="http")
    assert "port 8080/TCP declared by app and wardgate" in problems
    assert "port name http on app and wardgate" in problems
    assert any("resolves to ['app', 'wardgate']" in p for p in problems)


def _as_pod(kind: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The Pod a controller creates from the workload's template (generateName, no
    namespace in the object)."""
    template = copy.deepcopy(pod_of(workload(kind, annotations)))
    meta = {k: v for k, v in template["metadata"].items() if k not in ("name", "namespace")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta, "generateName": "shop-"},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("kind", list(POD_TEMPLATE_PATHS))
@pytest.mark.parametrize("mode", ["native", "classic"])
async def test_webhook_output_passes_every_check(injector, kind, mode):  # noqa: F811
    """Over real TLS: the AdmissionReview the API server sends, the JSONPatch applied."""
    review = pod_review()
    pod = _as_pod(kind, {"wardgate.dev/sidecar-mode": mode})
    review["request"]["object"] = pod
    status, answer = await injector.post("/inject", review)
    assert status == 200 and answer["response"]["allowed"] is True, answer
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    result = jsonpatch.apply_patch(pod, patch)
    versions = KUBE_VERSIONS if mode == "classic" else NATIVE_SERVICE_VERSIONS
    assert workload_problems(result, service_port_name="http", kube_versions=versions) == []
    assert inject(result, NATIVE) == []  # reinvocation: nothing more


port_entries = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["http", "web", "metrics", "grpc", None]),
            "containerPort": st.sampled_from([8080, 8081, 9090, 3000]),
        }
    ),
    min_size=0,
    max_size=3,
    unique_by=(lambda p: p["containerPort"]),
)


@settings(max_examples=80, deadline=None)
@given(
    ports=port_entries,
    probe_ports=st.lists(st.sampled_from(["http", "web", "metrics", 8080, 9090]), max_size=3),
    annotations=st.sampled_from(
        [{}, {"wardgate.dev/app-port": "8080"}, {"wardgate.dev/port-name": "web"}]
    ),
)
def test_any_pod_is_refused_or_passes_every_check(ports, probe_ports, annotations):
    """Whatever ports and probes a (valid) pod has: injection refuses it with a reason, or
    the result passes every kubelet-view check."""
    entries = [{k: v for k, v in p.items() if v is not None} | {"protocol": "TCP"} for p in ports]
    names = {p["name"] for p in entries if "name" in p}
    numbers = {p["containerPort"] for p in entries}
    if len(names) != sum(1 for p in entries if "name" in p):
        return  # duplicate names: the API server refuses such a pod before us
    template = pod_template(annotations)
    app = template["spec"]["containers"][0]
    app["ports"] = entries
    for probe in ("readinessProbe", "livenessProbe", "startupProbe", "lifecycle"):
        app.pop(probe)
    probes = [p for p in probe_ports if (p in names if isinstance(p, str) else p in numbers)]
    for kind, port in zip(
        ("readinessProbe", "livenessProbe", "startupProbe"), probes, strict=False
    ):
        app[kind] = {"tcpSocket": {"port": port}}
    before = pod_problems(template["spec"])
    assert before == []  # the input is a pod the kubelet would run
    try:
        patch = inject(template, CLASSIC)
    except InjectionError:
        return
    result = jsonpatch.apply_patch(template, patch)
    (sidecar,) = [c for c in result["spec"]["containers"] if c["name"] == "wardgate"]
    service_name = sidecar["ports"][0]["name"]
    assert pod_problems(result["spec"], service_port_name=service_name) == []
