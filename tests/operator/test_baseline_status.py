"""SecurityBaseline tells the security team what it does (issue 13, item 5): the status
subresource (observedGeneration, Accepted with the parse error, selected / clamped /
non-compliant counts), printer columns, and the validating webhook refusing a baseline that
does not parse, on kmock (the real operator in kopf) and over real TLS."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.operator.kmock_support import (
    BASELINES,
    MICROGATEWAY,
    VersionedEmulator,
    conditions,
    declare_resources,
    eventually,
    obj,
    running_operator,
)
from tests.operator.test_injector_server import injector  # noqa: F401 - fixture
from tests.operator.test_operator_kmock import baseline_doc, create_namespace
from wardgate_operator.baseline_status import baseline_statuses
from wardgate_operator.crds import all_crds
from wardgate_operator.kube import BASELINES_PATH, microgateways_path

NOW = "2026-01-01T00:00:00Z"
LIMIT = {"limits": {"maxUrlBytes": 1024}}  # MICROGATEWAY writes 4096: a violation


def mgw(name: str, namespace: str, spec_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(MICROGATEWAY)
    doc["metadata"] = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())}
    doc["spec"].update(spec_extra or {})
    return doc


def test_counts_and_conditions_are_computed_with_the_operators_merge():
    baselines = [
        {
            **baseline_doc(
                "prod", {"namespaceSelector": {"matchLabels": {"env": "prod"}}, **LIMIT}
            ),
            "metadata": {"name": "prod", "generation": 3},
        },
        {
            **baseline_doc("headers", {"limits": {"maxHeadersCount": 50}}),
            "metadata": {"name": "headers", "generation": 1},
        },
        {
            **baseline_doc("broken", {"limits": {"maxUrlByte": 1}}),
            "metadata": {"name": "broken", "generation": 7},
        },
    ]
    microgateways = [
        mgw("shop", "shop"),  # writes maxUrlBytes 4096: weaker than prod's 1024
        mgw("cart", "shop", {"limits": {"maxUrlBytes": 512}}),  # stricter: compliant
        mgw("dev", "dev"),  # not selected by prod
    ]
    labels = {"shop": {"env": "prod"}, "dev": {}}
    statuses = baseline_statuses(baselines, microgateways, labels, NOW)
    prod, headers, broken = statuses["prod"], statuses["headers"], statuses["broken"]
    assert (prod["selected"], prod["clamped"], prod["nonCompliant"]) == (2, 0, 1)
    assert prod["observedGeneration"] == 3
    assert prod["conditions"][0]["status"] == "True"
    # headers selects every namespace and raises a default nobody wrote: clamps only.
    assert (headers["selected"], headers["clamped"], headers["nonCompliant"]) == (3, 3, 0)
    (accepted,) = broken["conditions"]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == (
        "Accepted",
        "False",
        "InvalidSpec",
    )
    assert "spec.limits.maxUrlByte" in accepted["message"]
    assert accepted["observedGeneration"] == 7
    assert (broken["selected"], broken["clamped"], broken["nonCompliant"]) == (0, 0, 0)


def test_crd_has_the_status_subresource_and_printer_columns():
    crd = all_crds()["securitybaselines.wardgate.dev.yaml"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "conditions", "selected", "clamped", "nonCompliant"} <= set(
        status
    )
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Accepted"] == ".status.conditions[?(@.type=='Accepted')].status"
    assert columns["NonCompliant"] == ".status.nonCompliant"


@pytest.mark.kmock(cls=VersionedEmulator)
@pytest.mark.timeout(120)
async def test_operator_writes_the_baseline_status(kmock):
    declare_resources(kmock)
    await create_namespace(kmock, "shop", {"env": "prod"})

    def baseline() -> dict[str, Any] | None:
        return obj(kmock, BASELINES, None, "prod")

    async with running_operator(kmock, interval=0.3) as api:
        await api.create(microgateways_path("shop"), mgw("shop", "shop"))
        spec = {"namespaceSelector": {"matchLabels": {"env": "prod"}}, **LIMIT}
        await api.create(BASELINES_PATH, baseline_doc("prod", spec))
        body = await eventually(
            lambda: baseline() if (baseline() or {}).get("status", {}).get("selected") else None,
            message="baseline status",
        )
        status = body["status"]
        assert (status["selected"], status["clamped"], status["nonCompliant"]) == (1, 0, 1)
        assert conditions(body)["Accepted"]["status"] == "True"
        assert status["observedGeneration"] == body["metadata"]["generation"] == 1

        # An invalid spec (as if the webhook were bypassed): Accepted False, with the problem.
        await api.merge_patch(f"{BASELINES_PATH}/prod", {"spec": {"limits": {"maxUrlByte": 1}}})
        body = await eventually(
            lambda: (
                baseline()
                if conditions(baseline()).get("Accepted", {}).get("status") == "False"
                else None
            ),
            message="Accepted False",
        )
        accepted = conditions(body)["Accepted"]
        assert accepted["reason"] == "InvalidSpec" and "maxUrlByte" in accepted["message"]
        assert body["status"]["observedGeneration"] == 2


def baseline_review(spec: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "wardgate.dev", "version": "v1alpha1", "kind": "SecurityBaseline"},
            "resource": {
                "group": "wardgate.dev",
                "version": "v1alpha1",
                "resource": "securitybaselines",
            },
            "operation": operation,
            "object": baseline_doc("prod", spec),
        },
    }


async def test_webhook_refuses_an_invalid_baseline_over_tls(injector):  # noqa: F811
    status, answer = await injector.post(
        "/validate", baseline_review({"limits": {"maxUrlByte": 1}})
    )
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False and response["status"]["code"] == 422
    assert "spec.limits.maxUrlByte: unknown field" in response["status"]["message"]
    ok = (await injector.post("/validate", baseline_review(LIMIT)))[1]["response"]
    assert ok["allowed"] is True
    deleted = (await injector.post("/validate", baseline_review({"x": 1}, "DELETE")))[1]
    assert deleted["response"]["allowed"] is True
