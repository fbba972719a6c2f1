"""The chart's RBAC is enough for the real operator, and no more is used: kopf running
``wardgate_operator.handlers`` against kmock as the API server, which authorizes every
request against the Roles and ClusterRoles the chart renders (as the API server's RBAC
authorizer would: verb, API group, resource/subresource, namespace) and answers 403 to the
rest. Every denial is recorded; the operator's whole flow (create, status, ConfigMap, events,
baseline fan-out, propagation reads) must need none.

A real cluster adds what this cannot: aggregated roles, admission, and the API server's own
discovery permissions (allowed here, as ``system:discovery`` allows them)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import kmock
import kopf
import pytest
from kmock._internal import enums  # private: kmock is pinned in the test group

from tests.chart.render import render
from tests.operator.kmock_support import (
    MICROGATEWAY,
    VersionedEmulator,
    declare_resources,
    eventually,
    obj,
    server_url,
)
from wardgate.config import load_policy_text
from wardgate_operator.kube import BASELINES_PATH, KubeApi, microgateways_path

pytestmark = pytest.mark.timeout(120)

ADMIN_TOKEN = "cluster-admin"
"""Requests carrying this token are the test acting as a cluster admin; everything else is
the operator and is authorized against the chart's roles."""

KOPF_OPTIONAL_SCANNING = {"list apiextensions.k8s.io/customresourcedefinitions cluster-wide",
                          "watch apiextensions.k8s.io/customresourcedefinitions cluster-wide"}  # fmt: skip
"""kopf watches CRDs to notice resources created after it started; without the permission it
logs a warning and serves the resources found at startup (kopf docs: ScanningSettings). The
chart does not grant it (least privilege; the CRDs are installed before the operator), so
these two denials are expected until the operator sets ``settings.scanning.disabled``."""

BASELINE: dict[str, Any] = {
    "apiVersion": "wardgate.dev/v1alpha1",
    "kind": "SecurityBaseline",
    "metadata": {"name": "prod"},
    "spec": {"limits": {"maxUrlBytes": 1024}},
}


def forbidden(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=403, reason="Forbidden", message=message)


@dataclass
class Authorizer:
    """RBAC over the chart's rendered rules: cluster-wide rules, and rules per namespace."""

    cluster: list[dict[str, Any]]
    namespaced: dict[str, list[dict[str, Any]]]
    denied: list[str] = field(default_factory=list)
    allowed: set[tuple[str, str, str]] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    @classmethod
    def from_chart(cls, values: dict[str, Any], subject: str) -> Authorizer:
        r = render(values)

        def bound(kind: str) -> set[tuple[str | None, str]]:
            return {
                (b["metadata"].get("namespace"), b["roleRef"]["name"])
                for b in r.of_kind(kind)
                if any(s["name"].endswith(subject) for s in b["subjects"])
            }  # fmt: skip

        cluster_roles = {n for _, n in bound("ClusterRoleBinding")}
        roles = bound("RoleBinding")
        cluster = [
            rule
            for role in r.of_kind("ClusterRole")
            if role["metadata"]["name"] in cluster_roles
            for rule in role["rules"]
        ]
        namespaced: dict[str, list[dict[str, Any]]] = {}
        for role in r.of_kind("Role"):
            key = (role["metadata"]["namespace"], role["metadata"]["name"])
            if key in roles:
                namespaced.setdefault(key[0], []).extend(role["rules"])
        return cls(cluster, namespaced)

    @staticmethod
    def _matches(rule: dict[str, Any], verb: str, group: str, resource: str) -> bool:
        return (
            group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        )

    def check(self, verb: str, group: str, resource: str, namespace: str | None, path: str) -> None:
        self.requests.append((verb, resource, namespace))
        rules = list(self.cluster) + (self.namespaced.get(namespace, []) if namespace else [])
        if any(self._matches(rule, verb, group, resource) for rule in rules):
            self.allowed.add((verb, group, resource))
            return
        where = f"namespace {namespace}" if namespace else "cluster-wide"
        self.denied.append(f"{verb} {group or 'core'}/{resource} {where}")
        raise forbidden(f"{verb} {resource} is not granted to the chart's operator role")


def _verb(request: Any) -> str:
    method = request.method.value if hasattr(request.method, "value") else str(request.method)
    if method == "GET":
        if request.action == enums.action.WATCH or request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(
        method, "delete" if request.name else "deletecollection"
    )


class AuthorizingEmulator(VersionedEmulator):  # type: ignore[misc]
    authorizer: ClassVar[Authorizer | None] = None

    async def _handle(self, request: Any) -> Any:
        auth = type(self).authorizer
        path = str(request.url.path)
        if auth is not None and request.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
            parts = path.strip("/").split("/")
            if request.resource is not None and request.resource.plural:
                resource = request.resource.plural + (
                    f"/{request.subresource}" if request.subresource else ""
                )
                auth.check(
                    _verb(request), request.resource.group or "", resource, request.namespace, path
                )
            elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4:
                # kmock parses /api/v1/namespaces/NAME as a namespace, not an object.
                verb = "get" if _verb(request) == "list" else _verb(request)  # named, see above
                auth.check(verb, "", "namespaces", None, path)
            # Anything else is discovery (/api, /apis, /version): allowed for every identity.
        return await super()._handle(request)


def _namespace(k: Any, name: str, labels: dict[str, str]) -> None:
    k[f"get /api/v1/namespaces/{name}"] << {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }


@contextlib.asynccontextmanager
async def operator(k: Any, namespaces: list[str]) -> AsyncIterator[None]:
    """kopf with the operator's handlers, scoped as `wardgate-operator run` scopes it."""
    os.environ["WARDGATE_PROPAGATION_INTERVAL"] = "0.5"
    registry = kopf.OperatorRegistry()
    kopf.set_default_registry(registry)
    import wardgate_operator.handlers as handlers

    importlib.reload(handlers)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server_url(k), insecure=True)

    api = KubeApi(server_url(k))
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry, standalone=True, stop_flag=stop,
            clusterwide=not namespaces, namespaces=namespaces,
            memo=kopf.Memo(api=api, namespaces=list(namespaces)),
        )
    )  # fmt: skip
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await api.close()
        os.environ.pop("WARDGATE_PROPAGATION_INTERVAL", None)


async def _flow(k: Any, auth: Authorizer) -> None:
    """Create a Microgateway and a pod it selects, then a baseline that clamps it, as an
    admin would."""
    admin = KubeApi(server_url(k), token=ADMIN_TOKEN)
    try:
        await admin.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))
        k.objects["v1/pods", "shop", "shop-1"] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "shop-1", "namespace": "shop", "labels": {"app": "shop"}},
            "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
        }  # fmt: skip
        cm = await eventually(
            lambda: obj(k, "v1/configmaps", "shop", "wardgate-shop"),
            timeout=30,
            message="ConfigMap",
        )
        assert load_policy_text(cm["data"]["policy.yaml"]).limits.max_url_bytes == 4096
        await eventually(
            lambda: any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (obj(k, "wardgate.dev/v1alpha1/microgateways", "shop", "shop") or {}).get("status", {}).get("conditions", [])),
            timeout=30, message="status Ready",
        )  # fmt: skip

        await admin.create(BASELINES_PATH, copy.deepcopy(BASELINE))

        def clamped() -> bool:
            cm = obj(k, "v1/configmaps", "shop", "wardgate-shop")
            return (
                bool(cm)
                and load_policy_text(cm["data"]["policy.yaml"]).limits.max_url_bytes == 1024
            )

        await eventually(clamped, timeout=30, message="baseline applied")
        # The propagation check has read the selected pods since.
        seen = len(auth.requests)
        await eventually(
            lambda: ("list", "pods", "shop") in auth.requests[seen:],
            timeout=30,
            message="propagation read",
        )
    finally:
        await admin.close()


@pytest.mark.kmock(cls=AuthorizingEmulator)
async def test_cluster_wide_operator_needs_nothing_beyond_the_chart_rbac(kmock: Any) -> None:
    declare_resources(kmock)
    _namespace(kmock, "shop", {})
    auth = Authorizer.from_chart({}, "-operator")
    AuthorizingEmulator.authorizer = auth
    try:
        async with operator(kmock, []):
            await _flow(kmock, auth)
    finally:
        AuthorizingEmulator.authorizer = None
    assert set(auth.denied) <= KOPF_OPTIONAL_SCANNING, sorted(set(auth.denied))
    # ...and the flow exercised the permissions (the check is not vacuous).
    assert {("watch", "wardgate.dev", "microgateways"), ("watch", "wardgate.dev", "securitybaselines"),
            ("create", "", "configmaps"), ("patch", "wardgate.dev", "microgateways/status"),
            ("list", "", "pods"), ("get", "", "namespaces")} <= auth.allowed  # fmt: skip


@pytest.mark.kmock(cls=AuthorizingEmulator)
async def test_authorizer_refuses_what_the_chart_does_not_grant(kmock: Any) -> None:
    declare_resources(kmock)
    # The injector's identity has no permissions at all: the operator cannot even start
    # watching, and every attempt is recorded.
    auth = Authorizer.from_chart({}, "-injector")
    assert auth.cluster == [] and auth.namespaced == {}
    AuthorizingEmulator.authorizer = auth
    try:
        async with operator(kmock, []):
            await eventually(lambda: auth.denied, timeout=20, message="a denial")
    finally:
        AuthorizingEmulator.authorizer = None
    assert any("microgateways cluster-wide" in d for d in auth.denied)


@pytest.mark.kmock(cls=AuthorizingEmulator)
async def test_namespaced_operator_needs_nothing_beyond_its_roles(kmock: Any) -> None:
    # With --namespace, kopf does not watch the cluster-scoped SecurityBaselines at all: the
    # baseline reaches the Microgateway through the operator's periodic resync (which lists
    # per watched namespace, as the Roles allow), not through the baseline event handler.
    declare_resources(kmock)
    _namespace(kmock, "shop", {})
    auth = Authorizer.from_chart({"operator": {"watchNamespaces": ["shop"]}}, "-operator")
    # The namespaced permissions come from a Role in the watched namespace only.
    assert set(auth.namespaced) == {"shop"}
    AuthorizingEmulator.authorizer = auth
    try:
        async with operator(kmock, ["shop"]):
            await _flow(kmock, auth)
    finally:
        AuthorizingEmulator.authorizer = None
    assert set(auth.denied) <= KOPF_OPTIONAL_SCANNING, sorted(set(auth.denied))
