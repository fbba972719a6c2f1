"""The operator end to end: kopf running ``wardgate_operator.handlers`` against kmock as the
API server on 127.0.0.1. What a real cluster adds (garbage collection, the apiserver calling
webhooks, kubelet ConfigMap propagation) is listed in docs/operator.md."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from tests.operator.kmock_support import (
    CONFIGMAPS,
    MGW,
    MICROGATEWAY,
    VersionedEmulator,
    conditions,
    declare_resources,
    eventually,
    obj,
    running_operator,
)
from wardgate.config import load_policy_text
from wardgate_operator.kube import BASELINES_PATH, configmaps_path, microgateways_path, pods_path

pytestmark = [pytest.mark.kmock(cls=VersionedEmulator), pytest.mark.timeout(120)]


def baseline_doc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "wardgate.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": spec,
    }


async def create_namespace(kmock: Any, name: str, labels: dict[str, str] | None = None) -> None:
    # kmock 0.8 parses /api/v1/namespaces/NAME as "namespace NAME, no resource", so it
    # cannot store Namespace objects: serve the one GET the operator makes as a reaction.
    kmock[f"get /api/v1/namespaces/{name}"] << {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}},
    }


def cm(kmock: Any, namespace: str = "shop", name: str = "wardgate-shop") -> dict[str, Any] | None:
    return obj(kmock, CONFIGMAPS, namespace, name)


def mgw(kmock: Any, namespace: str = "shop", name: str = "shop") -> dict[str, Any] | None:
    return obj(kmock, MGW, namespace, name)


def configmap_writes(kmock: Any) -> int:
    return sum(1 for r in list(kmock["post"]) + list(kmock["patch"]) if "/configmaps" in str(r.url))


async def test_create_renders_configmap_and_status_then_update_and_invalid_policy(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        configmap = await eventually(lambda: cm(kmock), message="ConfigMap")
        owner = configmap["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "Microgateway" and owner["controller"] is True
        assert owner["uid"] == mgw(kmock)["metadata"]["uid"]
        policy = load_policy_text(configmap["data"]["policy.yaml"])
        assert policy.limits.max_url_bytes == 4096
        digest = configmap["metadata"]["annotations"]["wardgate.dev/policy-digest"]
        assert digest == policy.digest()

        body = await eventually(
            lambda: (
                mgw(kmock)
                if conditions(mgw(kmock)).get("Ready", {}).get("status") == "True"
                else None
            ),
            message="Ready",
        )
        status = body["status"]
        assert status["observedGeneration"] == 1
        assert status["policyDigest"] == digest
        assert conditions(body)["Accepted"]["status"] == "True"
        assert conditions(body)["BaselineCompliant"]["reason"] == "NoBaseline"
        assert all(c["observedGeneration"] == 1 for c in status["conditions"])
        assert not body["metadata"].get("finalizers")  # deletion never waits for us

        # spec update -> new digest, new generation observed
        await api.merge_patch(
            microgateways_path("shop", "shop"), {"spec": {"limits": {"maxUrlBytes": 2048}}}
        )
        await eventually(
            lambda: (
                mgw(kmock)["status"]["observedGeneration"] == 2
                and cm(kmock)["metadata"]["annotations"]["wardgate.dev/policy-digest"] != digest
            ),
            message="second generation rendered",
        )
        good = cm(kmock)
        assert load_policy_text(good["data"]["policy.yaml"]).limits.max_url_bytes == 2048

        # invalid policy -> Accepted False with the field path; the last good ConfigMap stays
        await api.merge_patch(
            microgateways_path("shop", "shop"), {"spec": {"limits": {"maxHeadersCount": 0}}}
        )
        body = await eventually(
            lambda: (
                mgw(kmock)
                if conditions(mgw(kmock)).get("Accepted", {}).get("status") == "False"
                else None
            ),
            message="Accepted False",
        )
        accepted = conditions(body)["Accepted"]
        assert accepted["reason"] == "InvalidSpec"
        assert "spec.limits.maxHeadersCount" in accepted["message"]
        assert accepted["observedGeneration"] == 3
        assert conditions(body)["Ready"]["reason"] == "KeptLastGood"
        assert cm(kmock)["data"] == good["data"]
        event = await eventually(
            lambda: [
                r.data
                for r in kmock["post"]
                if str(r.url).endswith("/namespaces/shop/events")
                and r.data.get("reason") == "InvalidSpec"
            ],
            message="Warning event",
        )
        assert event[0]["type"] == "Warning"
        assert "spec.limits.maxHeadersCount" in event[0]["message"]
        writes = configmap_writes(kmock)
        patches = len(list(kmock["patch"]))
    # no retry storm: the bad spec was handled once (a handful of status/progress patches),
    # and never wrote the ConfigMap
    assert configmap_writes(kmock) == writes
    assert patches < 40


async def test_restart_resumes_without_duplicate_writes(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock) as api:
        await api.create(microgateways_path("shop", None), copy.deepcopy(MICROGATEWAY))
        await eventually(lambda: conditions(mgw(kmock)).get("Ready"), message="Ready")
    writes = configmap_writes(kmock)
    status_writes = sum(1 for r in kmock["patch"] if str(r.url).endswith("/status"))
    async with running_operator(kmock, interval=0.3):
        # Let resume and a few resync timer rounds run.
        seen = len(list(kmock["get"]))
        await eventually(lambda: len(list(kmock["get"])) > seen + 10, message="resync reads")
    assert configmap_writes(kmock) == writes
    # status: at most the first propagation result (no pods: Propagated 0/0, Degraded False)
    later = sum(1 for r in kmock["patch"] if str(r.url).endswith("/status"))
    assert later - status_writes <= 1


async def test_baseline_fan_out_clamps_and_reports(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop", {"tier": "prod"})
    await create_namespace(kmock, "lab", {"tier": "dev"})
    async with running_operator(kmock, interval=30) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        lab = copy.deepcopy(MICROGATEWAY)
        lab["metadata"]["namespace"] = "lab"
        await api.create(microgateways_path("lab"), lab)
        await eventually(lambda: cm(kmock) and cm(kmock, "lab"), message="both ConfigMaps")
        lab_digest = cm(kmock, "lab")["metadata"]["annotations"]["wardgate.dev/policy-digest"]

        await api.create(
            BASELINES_PATH,
            baseline_doc(
                "prod",
                {
                    "namespaceSelector": {"matchLabels": {"tier": "prod"}},
                    "limits": {"maxUrlBytes": 1024, "maxRequestBodyBytes": 4096},
                },
            ),
        )

        def clamped() -> bool:
            policy = load_policy_text(cm(kmock)["data"]["policy.yaml"])
            return (
                policy.limits.max_url_bytes == 1024 and policy.limits.max_request_body_bytes == 4096
            )

        await eventually(clamped, message="baseline applied")
        body = await eventually(
            lambda: (
                mgw(kmock)
                if conditions(mgw(kmock)).get("BaselineCompliant", {}).get("status") == "False"
                else None
            ),
            message="BaselineCompliant False",
        )
        compliant = conditions(body)["BaselineCompliant"]
        assert compliant["reason"] == "Weakened"
        assert "limits.maxUrlBytes: 4096 is over the maximum 1024" in compliant["message"]
        assert body["status"]["baselines"] == ["prod"]
        assert cm(kmock)["metadata"]["annotations"]["wardgate.dev/baselines"] == "prod"
        # the dev namespace is not selected: untouched
        assert (
            cm(kmock, "lab")["metadata"]["annotations"]["wardgate.dev/policy-digest"] == lab_digest
        )

        # the baseline goes away -> the app's own values come back
        await api.delete(f"{BASELINES_PATH}/prod")
        await eventually(
            lambda: load_policy_text(cm(kmock)["data"]["policy.yaml"]).limits.max_url_bytes == 4096,
            message="baseline removed",
        )


async def test_weakening_microgateway_is_clamped_with_a_warning_event(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    await kmock.post(BASELINES_PATH, json=baseline_doc("prod", {"limits": {"maxUrlBytes": 1024}}))
    async with running_operator(kmock, interval=30) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        configmap = await eventually(lambda: cm(kmock), message="ConfigMap")
        assert load_policy_text(configmap["data"]["policy.yaml"]).limits.max_url_bytes == 1024
        event = await eventually(
            lambda: [
                r.data
                for r in kmock["post"]
                if str(r.url).endswith("/events") and r.data.get("reason") == "BaselineWeakened"
            ],
            message="BaselineWeakened event",
        )
        assert "spec.limits.maxUrlBytes: 4096 is over the maximum 1024" in event[0]["message"]


async def test_unenforceable_baseline_keeps_last_good_config(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock, interval=30) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        good = await eventually(lambda: cm(kmock), message="ConfigMap")
        await api.create(BASELINES_PATH, baseline_doc("auth", {"jwt": {"required": True}}))
        body = await eventually(
            lambda: (
                mgw(kmock)
                if conditions(mgw(kmock)).get("Accepted", {}).get("reason") == "BaselineViolation"
                else None
            ),
            message="BaselineViolation",
        )
        assert "JWT authentication is mandatory" in conditions(body)["Accepted"]["message"]
        assert conditions(body)["Ready"]["reason"] == "KeptLastGood"
        assert cm(kmock)["data"] == good["data"]


async def test_configmap_is_recreated_if_deleted(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock, interval=0.3) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        first = await eventually(lambda: cm(kmock), message="ConfigMap")
        await api.delete(configmaps_path("shop", "wardgate-shop"))
        again = await eventually(lambda: cm(kmock), message="ConfigMap recreated by the resync")
        assert again["data"] == first["data"]


def sidecar_pod(name: str, admin: str | None, status: int | None = None) -> dict[str, Any]:
    containers = [{"name": "app", "image": "shop:1"}]
    init: list[dict[str, Any]] = []
    if admin is not None:
        init = [
            {
                "name": "wardgate",
                "image": "gw:1",
                "restartPolicy": "Always",
                "args": ["run", "--admin", admin],
            }
        ]
        if status is not None:
            init[0]["ports"] = [{"name": "wardgate-status", "containerPort": status}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "shop"}},
        "spec": {"initContainers": init, "containers": containers},
        "status": {"phase": "Running", "podIP": "127.0.0.1"},
    }


async def test_propagation_reads_each_sidecars_digest_and_flags_pods_without_one(
    kmock, upstream, gateway
):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock, interval=0.2) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        configmap = await eventually(lambda: cm(kmock), message="ConfigMap")
        # A real gateway loading exactly the rendered policy.yaml plays the sidecar.
        # Its admin port stays on localhost: the operator reads the status port.
        sidecar = await gateway(upstream, configmap["data"]["policy.yaml"], status_port=0)
        status_port = int(sidecar.process.state.status.rsplit(":", 1)[1])
        await api.create(
            pods_path("shop"), sidecar_pod("shop-a", "127.0.0.1:9901", status=status_port)
        )
        await api.create(pods_path("shop"), sidecar_pod("shop-b", None))

        def status_is(propagated: str, degraded: str) -> dict[str, Any] | None:
            body = mgw(kmock)
            c = conditions(body)
            ok = (
                body["status"].get("propagated") == propagated
                and c.get("Degraded", {}).get("status") == degraded
            )
            return body if ok else None

        body = await eventually(lambda: status_is("1/2", "True"), message="1/2, Degraded")
        assert conditions(body)["Propagated"]["status"] == "False"
        assert "shop-b" in conditions(body)["Degraded"]["message"]
        assert conditions(body)["Degraded"]["reason"] == "PodsWithoutSidecar"

        await api.delete(pods_path("shop") + "/shop-b")
        body = await eventually(lambda: status_is("1/1", "False"), message="1/1, healthy")
        assert conditions(body)["Propagated"]["reason"] == "AllPodsCurrent"

        # A spec change: the sidecar still serves the old digest until it reloads the file.
        await api.merge_patch(
            microgateways_path("shop", "shop"), {"spec": {"limits": {"maxUrlBytes": 1000}}}
        )
        body = await eventually(lambda: status_is("0/1", "False"), message="0/1 after change")
        new_policy = cm(kmock)["data"]["policy.yaml"]
        Path(sidecar.process.options.policy_path).write_text(new_policy)  # the kubelet's part
        body = await eventually(lambda: status_is("1/1", "False"), message="reloaded")
        assert body["status"]["policyDigest"] == load_policy_text(new_policy).digest()

        # A file the sidecar cannot load: it keeps serving the last good policy and says so.
        Path(sidecar.process.options.policy_path).write_text("limits: {maxHeadersCount: 0}\n")
        body = await eventually(lambda: status_is("1/1", "True"), message="reload error")
        assert conditions(body)["Degraded"]["reason"] == "ReloadError"
        assert "shop-a" in conditions(body)["Degraded"]["message"]


async def test_reader_never_guesses_a_localhost_admin_port():
    from wardgate_operator.propagation import http_sidecar_reader

    report = await http_sidecar_reader(sidecar_pod("p", "127.0.0.1:9901"))
    assert report.digest is None and report.problem == "admin port bound to localhost"
    report = await http_sidecar_reader(sidecar_pod("p", None))
    assert report.problem == "no sidecar"


async def test_reader_reads_a_legacy_admin_port_on_all_addresses(upstream, gateway):
    """Sidecars injected before the status port existed: /server_info on 0.0.0.0."""
    from wardgate_operator.propagation import http_sidecar_reader

    sidecar = await gateway(upstream, "", admin_host="0.0.0.0")
    port = sidecar.admin_url.rsplit(":", 1)[1]
    report = await http_sidecar_reader(sidecar_pod("p", f"0.0.0.0:{port}"))
    assert report.problem is None
    assert report.digest == sidecar.process.holder.current.digest


async def test_run_command_is_a_standalone_kopf_operator_with_liveness(kmock, tmp_path):
    """`wardgate-operator run` as the chart starts it: a real process, kubeconfig
    credentials, kopf's liveness endpoint, graceful SIGTERM."""
    import asyncio
    import signal
    import socket
    import sys

    import aiohttp

    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: k, cluster: {{server: '{str(kmock.url).rstrip('/')}'}}}}]\n"
        "users: [{name: u, user: {token: test-token}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\ncurrent-context: c\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "operator.log").open("wb")
    exe = Path(sys.executable).parent / "wardgate-operator"
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "run",
        "--all-namespaces",
        "--liveness",
        f"http://127.0.0.1:{port}/healthz",
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdout=log,
        stderr=log,
    )
    try:
        await kmock.post(microgateways_path("shop"), json=copy.deepcopy(MICROGATEWAY))
        await eventually(lambda: cm(kmock), timeout=60, message="ConfigMap from the process")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
        # the token from the kubeconfig is what the operator's own client sends
        writes = [r for r in kmock["post"] if "/configmaps" in str(r.url)]
        assert writes and writes[0].headers.get("Authorization") == "Bearer test-token"
        assert not [r for r in kmock["post"] if "kopfpeerings" in str(r.url)]  # standalone
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
        log.close()
    assert code == 0, (tmp_path / "operator.log").read_text()[-3000:]


async def test_delete_is_immediate_and_the_configmap_is_owned(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock, interval=0.2) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        await eventually(lambda: conditions(mgw(kmock)).get("Ready"), message="Ready")
        uid = mgw(kmock)["metadata"]["uid"]
        await api.delete(microgateways_path("shop", "shop"))
        # no finalizer: gone at once, whether or not the operator is running
        assert mgw(kmock) is None
        # kmock has no garbage collector; the API server deletes the ConfigMap through
        # this owner reference (only a real cluster shows that part)
        assert cm(kmock)["metadata"]["ownerReferences"][0]["uid"] == uid
        seen = len(list(kmock["get"]))
        await eventually(lambda: len(list(kmock["get"])) > seen + 3, message="resync rounds")
        assert mgw(kmock) is None


async def test_webhook_reads_baselines_and_namespace_labels_from_the_api(kmock):
    from wardgate_operator.admission import api_baselines
    from wardgate_operator.kube import KubeApi

    declare_resources(kmock)
    await create_namespace(kmock, "shop", {"tier": "prod"})
    await kmock.post(
        BASELINES_PATH,
        json=baseline_doc("prod", {"namespaceSelector": {"matchLabels": {"tier": "prod"}}}),
    )
    await kmock.post(BASELINES_PATH, json=baseline_doc("broken", {"limits": {"maxUrlByte": 1}}))
    api, unreachable = KubeApi(str(kmock.url)), KubeApi("http://127.0.0.1:9")
    try:
        view = await api_baselines(api)("shop")
        assert [name for name, _ in view.baselines] == ["prod"]
        assert view.available and "SecurityBaseline broken is invalid" in view.invalid[0]
        down = await api_baselines(unreachable)("shop")
        assert not down.available and not down.baselines
    finally:
        await api.close()
        await unreachable.close()


async def test_namespaced_mode_fans_out_only_in_its_namespaces(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    async with running_operator(kmock, interval=30, namespaces=["shop"]) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        await eventually(lambda: cm(kmock), message="ConfigMap")
        await api.create(BASELINES_PATH, baseline_doc("prod", {"limits": {"maxUrlBytes": 512}}))
        await eventually(
            lambda: load_policy_text(cm(kmock)["data"]["policy.yaml"]).limits.max_url_bytes == 512,
            message="baseline fan-out",
        )
    # never a cluster-wide Microgateway listing (per-namespace Roles would refuse it)
    cluster_wide = "/apis/wardgate.dev/v1alpha1/microgateways"
    assert not [
        r for r in kmock["get"] if r.url.path == cluster_wide and "watch" not in r.url.query
    ]


async def test_concurrent_reconciles_do_not_fail_on_an_existing_configmap(kmock):
    from wardgate_operator.kube import KubeApi
    from wardgate_operator.reconciling import reconcile

    declare_resources(kmock)
    await create_namespace(kmock, "shop")
    await kmock.post(microgateways_path("shop"), json=copy.deepcopy(MICROGATEWAY))
    body = mgw(kmock)
    api = KubeApi(str(kmock.url))
    try:
        # Both start before either has written: one creates, the other meets 409 and patches.
        results = await asyncio.gather(reconcile(api, body), reconcile(api, body))
    finally:
        await api.close()
    assert all(r.accepted for r in results)
    creates = [r for r in kmock["post"] if str(r.url).endswith("/configmaps")]
    assert len(creates) == 2  # the conflict really happened
    assert (
        cm(kmock)["metadata"]["annotations"]["wardgate.dev/policy-digest"]
        == results[0].effective.digest()
    )
