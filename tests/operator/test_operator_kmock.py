"""The operator end to end: kopf running ``wardgate_operator.handlers`` against kmock as the
API server on 127.0.0.1. What a real cluster adds (garbage collection, the apiserver calling
webhooks, kubelet ConfigMap propagation) is listed in docs/operator.md."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.operator.kmock_support import (
    CONFIGMAPS,
    MGW,
    VersionedEmulator,
    conditions,
    declare_resources,
    eventually,
    obj,
    running_operator,
)
from wardgate.config import load_policy_text
from wardgate_operator.kube import BASELINES_PATH, configmaps_path, microgateways_path

pytestmark = [pytest.mark.kmock(cls=VersionedEmulator), pytest.mark.timeout(120)]

MICROGATEWAY: dict[str, Any] = {
    "apiVersion": "wardgate.dev/v1alpha1",
    "kind": "Microgateway",
    "metadata": {"name": "shop", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "shop"}},
        "servicePort": 8080,
        "appPort": 8081,
        "limits": {"maxUrlBytes": 4096},
    },
}


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
