"""Reconciling a ``Microgateway`` against the API: the result of
:func:`~wardgate_operator.evaluation.evaluate` written as its ConfigMap, NetworkPolicy and
status.

Writes happen only when something changed (the ConfigMap's digest, the status), so
re-running after a restart or a baseline event costs reads only. An invalid policy never
touches the ConfigMap: the last good one stays, and the handler returns normally
(``Accepted: False`` is the answer, not a retry). Propagation to the pods is
:mod:`wardgate_operator.propagation`; the periodic resync :mod:`wardgate_operator.resync`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wardgate_operator.baseline import ClusterBaseline, matching, namespace_labels
from wardgate_operator.evaluation import Evaluation, evaluate, now_rfc3339, same_status, status_for
from wardgate_operator.injection import configmap_name
from wardgate_operator.kube import (
    BASELINES_PATH,
    KubeApi,
    KubeError,
    configmaps_path,
    microgateways_path,
    namespace_path,
    networkpolicies_path,
)
from wardgate_operator.models import MicrogatewaySpec, SpecError, parse_baseline_spec
from wardgate_operator.rendering import (
    ANNOTATION_DIGEST,
    SidecarPorts,
    network_policy_name,
    render_network_policy,
)


async def cluster_baselines(api: KubeApi) -> tuple[list[ClusterBaseline], list[str]]:
    """Every SecurityBaseline, parsed; and a problem line for each that does not parse."""
    good, bad = [], []
    for item in await api.list(BASELINES_PATH):
        name = str((item.get("metadata") or {}).get("name", "?"))
        try:
            good.append(ClusterBaseline(name, parse_baseline_spec(item.get("spec"))))
        except SpecError as exc:
            bad.append(f"SecurityBaseline {name} is invalid: {'; '.join(exc.problems)}")
    return good, bad


async def reconcile(api: KubeApi, body: Mapping[str, Any]) -> Evaluation:
    """Bring the ConfigMap and status of the Microgateway ``body`` up to date."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta["name"]), str(meta["namespace"])
    baselines, invalid = await cluster_baselines(api)
    ns = await api.get(namespace_path(namespace)) or {}
    labels = namespace_labels(namespace, (ns.get("metadata") or {}).get("labels"))
    selected = matching(baselines, labels)
    evaluation = evaluate(
        name=name,
        namespace=namespace,
        uid=str(meta.get("uid", "")),
        spec=body.get("spec"),
        baselines=selected,
        invalid_baselines=invalid,
    )
    cm_name = configmap_name(name)
    existing = await api.get(configmaps_path(namespace, cm_name))
    if evaluation.configmap is not None:
        await apply_configmap(api, evaluation.configmap, existing)
    if evaluation.spec is not None:
        await apply_network_policy(
            api, name, namespace, str(meta.get("uid", "")), evaluation.spec, SidecarPorts.from_env()
        )
    previous = body.get("status") or {}
    status = status_for(
        evaluation,
        generation=int(meta.get("generation") or 0),
        previous=previous,
        kept_config=cm_name if existing is not None else None,
        now=now_rfc3339(),
    )
    if not same_status(previous, status):
        await api.merge_patch(microgateways_path(namespace, name) + "/status", {"status": status})
    return evaluation


async def apply_configmap(
    api: KubeApi, desired: Mapping[str, Any], existing: Mapping[str, Any] | None
) -> bool:
    """Create or update the ConfigMap when its content differs. Returns whether it wrote."""
    meta = desired["metadata"]
    if existing is None:
        try:
            await api.create(configmaps_path(meta["namespace"]), desired)
            return True
        except KubeError as exc:
            # Created meanwhile by a concurrent reconcile (handler, fan-out, resync).
            if exc.status != 409:
                raise
        existing = await api.get(configmaps_path(meta["namespace"], meta["name"])) or {}
    old_meta = existing.get("metadata") or {}
    unchanged = (
        existing.get("data") == desired["data"]
        and (old_meta.get("annotations") or {}).get(ANNOTATION_DIGEST)
        == meta["annotations"][ANNOTATION_DIGEST]
        and old_meta.get("ownerReferences") == meta["ownerReferences"]
    )
    if unchanged:
        return False
    patch = {
        "metadata": {
            "labels": meta["labels"],
            "annotations": meta["annotations"],
            "ownerReferences": meta["ownerReferences"],
        },
        "data": desired["data"],
    }
    await api.merge_patch(configmaps_path(meta["namespace"], meta["name"]), patch)
    return True


async def apply_network_policy(
    api: KubeApi,
    name: str,
    namespace: str,
    uid: str,
    spec: MicrogatewaySpec,
    ports: SidecarPorts,
) -> str:
    """Create, update or (``networkPolicy.enabled: false``) delete the Microgateway's
    NetworkPolicy. Deletes only one it owns. Returns ``created``, ``updated``, ``deleted``
    or ``unchanged``."""
    path = networkpolicies_path(namespace, network_policy_name(name))
    existing = await api.get(path)
    if not spec.network_policy.enabled:
        owners = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
        if existing is not None and any(o.get("uid") == uid for o in owners):
            await api.delete(path)
            return "deleted"
        return "unchanged"
    desired = render_network_policy(name=name, namespace=namespace, uid=uid, spec=spec, ports=ports)
    if existing is None:
        try:
            await api.create(networkpolicies_path(namespace), desired)
            return "created"
        except KubeError as exc:
            if exc.status != 409:
                raise
            existing = await api.get(path) or {}
    old_meta = existing.get("metadata") or {}
    if (
        existing.get("spec") == desired["spec"]
        and old_meta.get("ownerReferences") == desired["metadata"]["ownerReferences"]
    ):
        return "unchanged"
    patch = {
        "metadata": {
            "labels": desired["metadata"]["labels"],
            "ownerReferences": desired["metadata"]["ownerReferences"],
        },
        "spec": desired["spec"],
    }
    await api.merge_patch(path, patch)
    return "updated"


async def reconcile_all(api: KubeApi, namespace: str | None = None) -> int:
    """Re-reconcile every Microgateway (in ``namespace``, or everywhere): the fan-out after
    a baseline or namespace-label change. Returns how many were reconciled."""
    items = await api.list(microgateways_path(namespace))
    for item in items:
        await reconcile(api, item)
    return len(items)
