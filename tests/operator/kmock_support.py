"""kmock as the Kubernetes API for kopf: a resourceVersion/generation-stamping emulator and
a context manager running the real operator (``wardgate_operator.handlers``) against it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
from kmock._internal import enums  # private: pinned by kmock>=0.8 in the test group

from wardgate_operator.kube import KubeApi

_VERSIONS = itertools.count(1)

MGW = "wardgate.dev/v1alpha1/microgateways"
BASELINES = "wardgate.dev/v1alpha1/securitybaselines"
CONFIGMAPS = "v1/configmaps"
NAMESPACES = "v1/namespaces"


class VersionedEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock 0.8 keeps no ``resourceVersion``, ``uid`` or ``generation``; kopf and the
    operator's ``observedGeneration`` need them. Stamp them as the API server would:
    every write gets a new resourceVersion, spec writes bump the generation."""

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == enums.action.CREATE:
                meta = request.data.setdefault("metadata", {})
                meta["resourceVersion"] = str(next(_VERSIONS))
                meta.setdefault("uid", str(uuid.uuid4()))
                meta["generation"] = 1
                meta.setdefault(
                    "creationTimestamp",
                    datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
            elif request.action == enums.action.UPDATE and request.name is not None:
                meta = request.data.get("metadata")
                if not isinstance(meta, dict):
                    meta = request.data["metadata"] = {}
                meta["resourceVersion"] = str(next(_VERSIONS))
                if "spec" in request.data and request.subresource is None:
                    key = (request.resource, request.namespace, request.name)
                    with contextlib.suppress(KeyError):
                        current = self.objects[key].get("metadata", {}).get("generation", 1)
                        meta["generation"] = int(current) + 1
        return await super()._handle(request)


def declare_resources(k: Any) -> None:
    k.resources.load_bundled()
    k.resources[MGW] = kmock.ResourceInfo(
        kind="Microgateway",
        namespaced=True,
        subresources={"status"},
        verbs={"list", "watch", "get", "patch", "create", "delete", "update"},
    )
    k.resources[BASELINES] = kmock.ResourceInfo(
        kind="SecurityBaseline",
        namespaced=False,
        subresources={"status"},
        verbs={"list", "watch", "get", "patch", "create", "delete", "update"},
    )


def server_url(k: Any) -> str:
    return str(k.url).rstrip("/")


@contextlib.asynccontextmanager
async def running_operator(
    k: Any, interval: float = 0.5, namespaces: list[str] | None = None
) -> AsyncIterator[KubeApi]:
    """Run ``wardgate_operator.handlers`` in kopf against the emulator; yield a client."""
    os.environ["WARDGATE_PROPAGATION_INTERVAL"] = str(interval)
    registry = kopf.OperatorRegistry()
    kopf.set_default_registry(registry)
    import wardgate_operator.handlers as handlers

    importlib.reload(handlers)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server_url(k), insecure=True)

    @kopf.on.startup(registry=registry)
    def quick(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.reconnect_backoff = 0.2
        settings.queueing.idle_timeout = 0.2

    api = KubeApi(server_url(k))
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces or (),
            standalone=True,
            stop_flag=stop,
            memo=kopf.Memo(api=api, namespaces=namespaces or []),
        )
    )
    try:
        yield api
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await api.close()
        os.environ.pop("WARDGATE_PROPAGATION_INTERVAL", None)


async def eventually(
    check: Callable[[], Any], timeout: float = 20.0, message: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy (or raise with the last value)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = check()
        except (KeyError, IndexError, TypeError):
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}; last: {last!r}")


def obj(k: Any, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """The current stored object, ``None`` if absent or deleted."""
    try:
        found = k.objects[resource, namespace, name]
    except KeyError:
        return None
    if found.deleted:
        return None
    return dict(found.raw)


def conditions(body: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not body:
        return {}
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


# A Microgateway the operator tests (and the chart's RBAC test) reconcile: shop/shop.
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
