"""Reconciling a ``Microgateway``: validate -> compile with the gateway's own
``compile_policy`` -> merge with every matching baseline -> render the ConfigMap -> status.

:func:`evaluate` is pure (the CLI's ``render`` and the admission check run it too);
:func:`reconcile` adds the API reads and writes. Writes happen only when something changed
(the ConfigMap's digest, the status), so re-running after a restart or a baseline event
costs reads only. An invalid policy never touches the ConfigMap: the last good one stays,
and the handler returns normally (``Accepted: False`` is the answer, not a retry).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wardgate.config.baseline_merge import Finding, apply_baselines
from wardgate.config.policy import PolicySpec
from wardgate.errors import BaselineError
from wardgate.runtime.compiled import PolicyCompileError, compile_policy
from wardgate_operator.baseline import ClusterBaseline, matching, namespace_labels
from wardgate_operator.injection import SIDECAR_NAME, STATUS_PORT_NAME, configmap_name
from wardgate_operator.kube import (
    BASELINES_PATH,
    KubeApi,
    KubeError,
    configmaps_path,
    label_selector,
    microgateways_path,
    namespace_path,
    networkpolicies_path,
    pods_path,
)
from wardgate_operator.models import (
    MicrogatewaySpec,
    SpecError,
    parse_baseline_spec,
    parse_microgateway_spec,
)
from wardgate_operator.rendering import (
    ANNOTATION_DIGEST,
    SidecarPorts,
    condition,
    merge_conditions,
    network_policy_name,
    render_configmap,
    render_network_policy,
)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one Microgateway turns into, before any API call."""

    accepted: bool
    reason: str
    problems: tuple[str, ...] = ()
    spec: MicrogatewaySpec | None = None
    effective: PolicySpec | None = None
    findings: tuple[Finding, ...] = ()
    baselines: tuple[str, ...] = ()
    configmap: dict[str, Any] | None = field(default=None)


def evaluate(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: Any,
    baselines: Sequence[tuple[str, Any]],
    invalid_baselines: Sequence[str] = (),
) -> Evaluation:
    """Validate, compile and merge one Microgateway ``spec`` with ``baselines`` (already
    selected for its namespace). ``invalid_baselines`` are problems with baselines that
    could not be parsed: their floors are unknown, so nothing is rendered (fail closed)."""
    try:
        parsed = parse_microgateway_spec(spec)
    except SpecError as exc:
        return Evaluation(False, "InvalidSpec", tuple(exc.problems))
    app = parsed.policy()
    file_refs = file_references(app.model_dump(mode="json", by_alias=True, exclude_unset=True))
    if file_refs:
        return Evaluation(False, "InvalidSpec", tuple(file_refs), parsed)
    try:
        compile_policy(app)
    except PolicyCompileError as exc:
        return Evaluation(False, "CompileError", tuple(f"spec: {p}" for p in exc.problems), parsed)
    if invalid_baselines:
        return Evaluation(False, "BaselineInvalid", tuple(invalid_baselines), parsed)
    names = tuple(n for n, _ in baselines)
    try:
        outcome = apply_baselines(app, baselines)
    except BaselineError as exc:
        problems = tuple(f"spec (with baseline defaults): {p}" for p in exc.problems)
        return Evaluation(False, "BaselineConflict", problems, parsed, baselines=names)
    if outcome.effective is None:
        unenforceable = outcome.of_kind("unenforceable")
        return Evaluation(
            False,
            "BaselineViolation",
            tuple(f"spec.{f}" for f in unenforceable),
            parsed,
            findings=outcome.findings,
            baselines=names,
        )
    try:
        compile_policy(outcome.effective)
    except PolicyCompileError as exc:
        problems = tuple(f"effective policy: {p}" for p in exc.problems)
        return Evaluation(False, "CompileError", problems, parsed, baselines=names)
    configmap = render_configmap(
        name=name, namespace=namespace, uid=uid, effective=outcome.effective, baselines=names
    )
    size = len(configmap["data"]["policy.yaml"].encode())
    if size > MAX_CONFIGMAP_BYTES:
        problem = f"spec: the effective policy is {size} bytes; a ConfigMap holds at most 1 MiB"
        return Evaluation(False, "TooLarge", (problem,), parsed, baselines=names)
    return Evaluation(
        True,
        "Valid",
        (),
        parsed,
        outcome.effective,
        outcome.findings,
        names,
        configmap,
    )


MAX_CONFIGMAP_BYTES = 1_000_000
"""Kubernetes refuses ConfigMaps over 1 MiB (data plus metadata): stay clearly below."""

FILE_FIELDS = ("specFile", "filename")
"""Policy fields naming a file. The ConfigMap carries only ``policy.yaml``, and the operator
compiles where those files do not exist: in a Microgateway, documents go inline."""


def file_references(doc: Any, path: str = "spec") -> list[str]:
    """A problem line for each field in ``doc`` that names a file."""
    out: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            where = f"{path}.{key}"
            if key in FILE_FIELDS and value is not None:
                out.append(
                    f"{where}: files are not available to a Microgateway's sidecar; put the "
                    "document inline (openapi.inline, localJwks.inlineString)"
                )
            else:
                out.extend(file_references(value, where))
    elif isinstance(doc, list):
        for index, item in enumerate(doc):
            out.extend(file_references(item, f"{path}[{index}]"))
    return out


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_for(
    evaluation: Evaluation,
    *,
    generation: int,
    previous: Mapping[str, Any],
    kept_config: str | None,
    now: str,
) -> dict[str, Any]:
    """The Microgateway status after ``evaluation``. ``kept_config`` names the ConfigMap
    still serving the last good policy when this one was not accepted."""
    old_conditions = list(previous.get("conditions") or [])
    cond = _conditions_factory(generation, now, old_conditions)
    updates = []
    if evaluation.accepted:
        updates.append(cond("Accepted", True, "Valid", "the policy compiled"))
    else:
        updates.append(cond("Accepted", False, evaluation.reason, "; ".join(evaluation.problems)))
    violations = [f for f in evaluation.findings if f.kind != "clamp"]
    clamps = [f for f in evaluation.findings if f.kind == "clamp"]
    if not evaluation.baselines:
        updates.append(cond("BaselineCompliant", True, "NoBaseline", "no baseline applies"))
    elif violations:
        text = "; ".join(str(f) for f in violations)
        updates.append(cond("BaselineCompliant", False, "Weakened", text))
    elif evaluation.reason in ("BaselineConflict", "BaselineInvalid"):
        updates.append(
            cond("BaselineCompliant", None, evaluation.reason, "; ".join(evaluation.problems))
        )
    elif clamps:
        text = "defaults raised: " + "; ".join(str(f) for f in clamps)
        updates.append(cond("BaselineCompliant", True, "DefaultsRaised", text))
    elif evaluation.accepted:
        updates.append(cond("BaselineCompliant", True, "Compliant", "meets every baseline"))
    status: dict[str, Any] = {"observedGeneration": generation}
    if evaluation.configmap is not None:
        cm_name = evaluation.configmap["metadata"]["name"]
        digest = evaluation.configmap["metadata"]["annotations"][ANNOTATION_DIGEST]
        updates.append(cond("Ready", True, "ConfigRendered", f"ConfigMap {cm_name} has {digest}"))
        status["policyDigest"] = digest
        status["configMap"] = cm_name
    elif kept_config:
        message = f"ConfigMap {kept_config} keeps the last good policy"
        updates.append(cond("Ready", False, "KeptLastGood", message))
    else:
        updates.append(cond("Ready", False, "NoConfig", "no valid policy has been rendered yet"))
    if not any(c.get("type") == "Propagated" for c in old_conditions):
        updates.append(cond("Propagated", None, "Pending", "not checked yet"))
    status["conditions"] = merge_conditions(old_conditions, updates)
    status["baselines"] = list(evaluation.baselines)
    status["findings"] = [str(f) for f in evaluation.findings]
    return status


Cond = Callable[[str, bool | None, str, str], dict[str, Any]]


def _conditions_factory(generation: int, now: str, previous: list[dict[str, Any]]) -> Cond:
    def make(type_: str, status: bool | None, reason: str, message: str) -> dict[str, Any]:
        return condition(
            type_, status, reason, message, generation=generation, now=now, previous=previous
        )

    return make


def _same_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return all(old.get(key) == value for key, value in new.items())


# --- with the API ----------------------------------------------------------------------


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
    if not _same_status(previous, status):
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


# --- propagation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SidecarReport:
    """What one pod's sidecar said on its status ``/policy`` (or admin ``/server_info``)."""

    digest: str | None
    last_error: str | None = None
    problem: str | None = None


SidecarReader = Callable[[Mapping[str, Any]], Awaitable[SidecarReport]]


def _sidecar(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            if container.get("name") == SIDECAR_NAME:
                return container  # type: ignore[no-any-return]
    return None


def admin_address(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """The ``--admin HOST:PORT`` of the pod's sidecar, ``None`` without a sidecar."""
    container = _sidecar(pod)
    if container is None:
        return None
    args = list(container.get("args") or [])
    for i, arg in enumerate(args):
        if arg == "--admin" and i + 1 < len(args):
            host, _, port = str(args[i + 1]).rpartition(":")
            if port.isdigit():
                return host, int(port)
    return "127.0.0.1", 9901


def status_port(pod: Mapping[str, Any]) -> int | None:
    """The sidecar's container port named ``wardgate-status`` (sidecars injected since the
    status listener exist), ``None`` otherwise."""
    container = _sidecar(pod) or {}
    for port in container.get("ports") or ():
        if port.get("name") == STATUS_PORT_NAME and isinstance(port.get("containerPort"), int):
            return int(port["containerPort"])
    return None


async def http_sidecar_reader(pod: Mapping[str, Any]) -> SidecarReport:
    """Read the loaded digest from the pod IP: ``GET /policy`` on the status port, or, for
    sidecars injected before it existed, ``/server_info`` on an admin port bound to all
    addresses. An admin port bound to localhost cannot be read from outside the pod:
    reported as unreadable, never guessed."""
    address = admin_address(pod)
    pod_ip = (pod.get("status") or {}).get("podIP")
    if address is None:
        return SidecarReport(None, problem="no sidecar")
    status = status_port(pod)
    host, port = address
    if status is None and host in ("127.0.0.1", "localhost", "::1"):
        return SidecarReport(None, problem="admin port bound to localhost")
    if not pod_ip:
        return SidecarReport(None, problem="no pod IP yet")
    if status is not None:
        url = f"http://{pod_ip}:{status}/policy"
    else:
        url = f"http://{pod_ip}:{port}/server_info"
    try:
        timeout = aiohttp.ClientTimeout(total=3)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            info = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        where = "status port" if status is not None else "admin"
        return SidecarReport(None, problem=f"{where} unreachable ({type(exc).__name__})")
    policy = (
        info if status is not None else (info.get("policy") if isinstance(info, dict) else None)
    )
    if not isinstance(policy, dict) or "digest" not in policy:
        return SidecarReport(None, problem="unexpected answer from the sidecar")
    error = policy.get("last_reload_error")
    return SidecarReport(str(policy.get("digest")), str(error) if error else None)


def _selected(pod: Mapping[str, Any], spec: MicrogatewaySpec) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    phase = (pod.get("status") or {}).get("phase")
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
    return (
        spec.pod_selector.matches(labels) and phase not in ("Succeeded", "Failed") and not deleting
    )


async def check_propagation(
    api: KubeApi, body: Mapping[str, Any], reader: SidecarReader = http_sidecar_reader
) -> dict[str, Any] | None:
    """Set ``Propagated`` (n/m selected pods on the current digest) and ``Degraded``
    (selected pods without a sidecar, sidecars reporting reload errors). Returns the status
    written, ``None`` when nothing changed or the spec is invalid."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta["name"]), str(meta["namespace"])
    previous = body.get("status") or {}
    digest = previous.get("policyDigest")
    try:
        spec = parse_microgateway_spec(body.get("spec"))
    except SpecError:
        return None
    pods = await api.list(pods_path(namespace), label_selector(spec.pod_selector.match_labels))
    selected = [p for p in pods if _selected(p, spec)]
    without, errors, unreadable, current = [], [], [], 0
    for pod in selected:
        pod_name = str((pod.get("metadata") or {}).get("name"))
        if admin_address(pod) is None:
            without.append(pod_name)
            continue
        report = await reader(pod)
        if report.problem:
            unreadable.append(f"{pod_name}: {report.problem}")
        elif report.digest == digest:
            current += 1
        if report.last_error:
            errors.append(f"{pod_name}: {report.last_error}")
    generation = int(meta.get("generation") or 0)
    cond = _conditions_factory(generation, now_rfc3339(), list(previous.get("conditions") or []))
    total = len(selected)
    ratio = f"{current}/{total}"
    if not digest:
        propagated = cond("Propagated", None, "NoConfig", "no policy rendered yet")
    elif unreadable and current + len(without) < total:
        text = f"{ratio} on {digest}; unreadable: " + "; ".join(unreadable)
        propagated = cond("Propagated", None, "Unknown", text)
    elif current == total:
        propagated = cond("Propagated", True, "AllPodsCurrent", f"{ratio} pods on {digest}")
    else:
        propagated = cond("Propagated", False, "Rolling", f"{ratio} pods on {digest}")
    problems = []
    if without:
        problems.append("selected pods without a sidecar: " + ", ".join(sorted(without)))
    if errors:
        problems.append("reload errors: " + "; ".join(errors))
    if problems:
        reason = "PodsWithoutSidecar" if without else "ReloadError"
        degraded = cond("Degraded", True, reason, "; ".join(problems))
    else:
        degraded = cond("Degraded", False, "Healthy", "every selected pod has a sidecar")
    status = {
        "propagated": ratio,
        "conditions": merge_conditions(previous.get("conditions") or [], [propagated, degraded]),
    }
    if _same_status(previous, status):
        return None
    await api.merge_patch(microgateways_path(namespace, name) + "/status", {"status": status})
    return status


# --- periodic resync -------------------------------------------------------------------

log = logging.getLogger("wardgate_operator.resync")


async def resync_once(
    api: KubeApi, namespaces: Sequence[str] = (), reader: SidecarReader = http_sidecar_reader
) -> int:
    """Re-evaluate every Microgateway and check its propagation, then refresh every
    SecurityBaseline's status. One failing object never stops the others. Returns how many
    Microgateways were handled."""
    handled = 0
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        try:
            items = await api.list(microgateways_path(namespace))
        except KubeError as exc:
            log.warning("resync: cannot list Microgateways: %s", exc)
            continue
        for item in items:
            meta = item.get("metadata") or {}
            try:
                await reconcile(api, item)
                fresh = await api.get(microgateways_path(meta["namespace"], meta["name"]))
                if fresh is not None:
                    await check_propagation(api, fresh, reader)
                handled += 1
            except (KubeError, KeyError) as exc:
                log.warning(
                    "resync of %s/%s failed: %s", meta.get("namespace"), meta.get("name"), exc
                )
    from wardgate_operator.baseline_status import update_baseline_statuses  # uses evaluate()

    try:
        await update_baseline_statuses(api, namespaces)
    except KubeError as exc:
        log.warning("resync: SecurityBaseline status not updated: %s", exc)
    return handled


async def resync_forever(
    api: KubeApi,
    interval: float,
    namespaces: Sequence[str] = (),
    reader: SidecarReader = http_sidecar_reader,
) -> None:
    """Every ``interval`` seconds, :func:`resync_once`: propagation status, and the safety
    net for changes no watch delivered (namespace labels, a deleted ConfigMap, a missed
    event)."""
    while True:
        await asyncio.sleep(interval)
        await resync_once(api, namespaces, reader)
