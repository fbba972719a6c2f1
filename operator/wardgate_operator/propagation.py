"""Propagation: whether each selected pod's sidecar serves the Microgateway's current policy
digest (and its ``spec.tls``), written as the ``Propagated`` and ``Degraded`` conditions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wardgate_operator.evaluation import Cond, conditions_factory, now_rfc3339, same_status
from wardgate_operator.injection import (
    SIDECAR_NAME,
    STATUS_PORT_NAME,
    InjectionError,
    read_tls_request,
    tls_annotations,
)
from wardgate_operator.kube import KubeApi, label_selector, microgateways_path, pods_path
from wardgate_operator.models import MicrogatewaySpec, SpecError, parse_microgateway_spec
from wardgate_operator.rendering import merge_conditions


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
    # A sidecar that answers something other than JSON: as good as unreachable here.
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as exc:
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


def serves_spec_tls(pod: Mapping[str, Any], spec: MicrogatewaySpec) -> bool:
    """The pod's TLS annotations (what its sidecar was injected with) ask for at least
    what ``spec.tls`` says: its certificate Secret, and a client CA when ``spec.tls`` has
    one. Without ``spec.tls`` every pod qualifies."""
    if spec.tls is None:
        return True
    try:
        served = read_tls_request(pod)
    except InjectionError:
        return False
    wanted = read_tls_request({"metadata": {"annotations": tls_annotations(spec.tls)}})
    return served is not None and wanted is not None and served == wanted


@dataclass
class PodCensus:
    """What the selected pods of one Microgateway report."""

    total: int = 0
    current: int = 0
    without: list[str] = field(default_factory=list)
    tls_drift: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def take_census(
    selected: Sequence[Mapping[str, Any]],
    spec: MicrogatewaySpec,
    digest: str | None,
    reader: SidecarReader,
) -> PodCensus:
    """Ask each selected pod's sidecar which digest it serves (pods without a sidecar are
    not asked) and check its TLS against ``spec.tls``."""
    census = PodCensus(total=len(selected))
    for pod in selected:
        pod_name = str((pod.get("metadata") or {}).get("name"))
        if admin_address(pod) is None:
            census.without.append(pod_name)
            continue
        if not serves_spec_tls(pod, spec):
            census.tls_drift.append(pod_name)
        report = await reader(pod)
        if report.problem:
            census.unreadable.append(f"{pod_name}: {report.problem}")
        elif report.digest == digest:
            census.current += 1
        if report.last_error:
            census.errors.append(f"{pod_name}: {report.last_error}")
    return census


def propagation_conditions(
    census: PodCensus, digest: str | None, cond: Cond
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``Propagated`` and ``Degraded`` conditions for ``census``."""
    ratio = f"{census.current}/{census.total}"
    if not digest:
        propagated = cond("Propagated", None, "NoConfig", "no policy rendered yet")
    elif census.unreadable and census.current + len(census.without) < census.total:
        text = f"{ratio} on {digest}; unreadable: " + "; ".join(census.unreadable)
        propagated = cond("Propagated", None, "Unknown", text)
    elif census.current == census.total:
        propagated = cond("Propagated", True, "AllPodsCurrent", f"{ratio} pods on {digest}")
    else:
        propagated = cond("Propagated", False, "Rolling", f"{ratio} pods on {digest}")
    problems = []
    if census.without:
        problems.append("selected pods without a sidecar: " + ", ".join(sorted(census.without)))
    if census.tls_drift:
        problems.append(
            "selected pods whose sidecar does not serve spec.tls (re-create them with the "
            "annotations `wardgate-operator render` prints): " + ", ".join(sorted(census.tls_drift))
        )
    if census.errors:
        problems.append("reload errors: " + "; ".join(census.errors))
    if not problems:
        return propagated, cond("Degraded", False, "Healthy", "every selected pod has a sidecar")
    if census.without:
        reason = "PodsWithoutSidecar"
    else:
        reason = "TlsNotServed" if census.tls_drift else "ReloadError"
    return propagated, cond("Degraded", True, reason, "; ".join(problems))


async def check_propagation(
    api: KubeApi, body: Mapping[str, Any], reader: SidecarReader = http_sidecar_reader
) -> dict[str, Any] | None:
    """Set ``Propagated`` (n/m selected pods on the current digest) and ``Degraded``
    (selected pods without a sidecar or not serving ``spec.tls``, sidecars reporting reload
    errors). Returns the status written, ``None`` when nothing changed or the spec is
    invalid."""
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
    census = await take_census(selected, spec, digest, reader)
    generation = int(meta.get("generation") or 0)
    cond = conditions_factory(generation, now_rfc3339(), list(previous.get("conditions") or []))
    propagated, degraded = propagation_conditions(census, digest, cond)
    status = {
        "propagated": f"{census.current}/{census.total}",
        "conditions": merge_conditions(previous.get("conditions") or [], [propagated, degraded]),
    }
    if same_status(previous, status):
        return None
    await api.merge_patch(microgateways_path(namespace, name) + "/status", {"status": status})
    return status
