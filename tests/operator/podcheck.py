"""The pod as the kubelet, kube-proxy and the API server see it: a reusable checker for what
the injector returns (``wardgate-operator inject -f`` or the webhook's JSONPatch applied).

:func:`pod_problems` returns every problem found in one pod spec, one line each, empty when
the pod would start, become Ready and route its Service to the sidecar:

* every named probe / lifecycle port resolves among the ports of *its own* container (the
  kubelet's rule), and a numeric one is not a port another container of the pod declares
  (that probe would reach the wrong process, e.g. the app's probe through the WAF);
* container port numbers (per protocol) and port names are unique in the pod;
* the Service's named ``targetPort`` has exactly one owner, and it is the expected container
  (the endpoints controller's rule; named ports on native sidecars, i.e. init containers with
  ``restartPolicy: Always``, resolve only from Kubernetes 1.32, kubernetes#127958);
* every ``volumeMounts``/``volumeDevices`` name exists in ``spec.volumes``;
* every container meets the restricted Pod Security Standard
  (:func:`tests.chart.k8s.restricted_violations`);
* and :func:`validate_workload` checks the whole object against the strict OpenAPI schema
  of each Kubernetes version (kubernetes-validate).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import kubernetes_validate

from tests.chart.k8s import restricted_violations
from wardgate_operator import cli

KUBE_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")
NATIVE_NAMED_PORTS_SINCE = (1, 32)
"""Endpoints/EndpointSlices resolve named ports of restartable init containers from 1.32
(kubernetes/kubernetes#127976 and #128850)."""

PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")
HANDLERS = ("httpGet", "tcpSocket", "grpc")

POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {"Pod": (), **cli.POD_TEMPLATE_PATHS}
"""Every workload kind the injector handles (``wardgate-operator inject``, the webhook)."""


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def pod_of(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod (or pod template: ``metadata`` + ``spec``) inside a workload object."""
    node: Any = workload
    for part in POD_TEMPLATE_PATHS[str(workload["kind"])]:
        node = node[part]
    return node  # type: ignore[no-any-return]


def containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(kind, container)`` for init containers, then containers."""
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or ():
            yield kind, container


def _restartable(kind: str, container: Mapping[str, Any]) -> bool:
    return kind == "initContainers" and container.get("restartPolicy") == "Always"


def _handlers(container: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for probe in PROBES:
        body = container.get(probe) or {}
        for kind in HANDLERS:
            if kind in body:
                yield f"{probe}.{kind}", body[kind].get("port")
    for hook in HOOKS:
        body = (container.get("lifecycle") or {}).get(hook) or {}
        for kind in HANDLERS:
            if kind in body:
                yield f"lifecycle.{hook}.{kind}", body[kind].get("port")


def named_port_owners(
    spec: Mapping[str, Any], name: str, kube_version: str = KUBE_VERSIONS[-1]
) -> list[str]:
    """The containers the endpoints controller finds a port called ``name`` in."""
    native_ok = _version(kube_version) >= NATIVE_NAMED_PORTS_SINCE
    owners = []
    for kind, container in containers(spec):
        if kind == "initContainers" and not (native_ok and _restartable(kind, container)):
            continue
        if any(p.get("name") == name for p in container.get("ports") or ()):
            owners.append(str(container["name"]))
    return owners


def pod_problems(
    spec: Mapping[str, Any],
    *,
    service_port_name: str | None = None,
    service_owner: str = "wardgate",
    kube_version: str = KUBE_VERSIONS[-1],
) -> list[str]:
    """Every problem in ``spec`` (see the module docstring); ``service_port_name`` is the
    Service's named ``targetPort`` and ``service_owner`` the container it must reach."""
    problems: list[str] = []
    all_ports: dict[tuple[int, str], str] = {}
    names: dict[str, str] = {}
    for _, container in containers(spec):
        cname = str(container["name"])
        for port in container.get("ports") or ():
            key = (int(port["containerPort"]), str(port.get("protocol") or "TCP"))
            if key in all_ports:
                problems.append(f"port {key[0]}/{key[1]} declared by {all_ports[key]} and {cname}")
            all_ports[key] = cname
            if port.get("name"):
                if port["name"] in names:
                    problems.append(
                        f"port name {port['name']} on {names[port['name']]} and {cname}"
                    )
                names[str(port["name"])] = cname
    for _, container in containers(spec):
        cname = str(container["name"])
        own = container.get("ports") or ()
        own_names = {p.get("name") for p in own}
        own_numbers = {p["containerPort"] for p in own}
        for where, port in _handlers(container):
            if isinstance(port, str):
                if port not in own_names:
                    problems.append(f"{cname} {where}: named port {port!r} not in {cname}")
            elif isinstance(port, int) and port not in own_numbers:
                other = next((c for (n, _p), c in all_ports.items() if n == port), None)
                if other is not None and other != cname:
                    problems.append(f"{cname} {where}: port {port} belongs to {other}")
    volumes = {v["name"] for v in spec.get("volumes") or ()}
    for _, container in containers(spec):
        for mount in [
            *(container.get("volumeMounts") or ()),
            *(container.get("volumeDevices") or ()),
        ]:
            if mount["name"] not in volumes:
                problems.append(f"{container['name']}: volume {mount['name']!r} does not exist")
    problems.extend(restricted_violations(spec))
    if service_port_name is not None:
        owners = named_port_owners(spec, service_port_name, kube_version)
        if owners != [service_owner]:
            problems.append(
                f"Service targetPort {service_port_name!r} resolves to {owners or 'nothing'} "
                f"on Kubernetes {kube_version}, not [{service_owner!r}]"
            )
    return problems


def schema_problems(obj: Mapping[str, Any], versions: Sequence[str] = KUBE_VERSIONS) -> list[str]:
    """Strict OpenAPI validation of ``obj`` for each Kubernetes version."""
    out = []
    for version in versions:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            out.append(f"Kubernetes {version}: {exc}")
    return out


def workload_problems(
    workload: Mapping[str, Any],
    *,
    service_port_name: str | None = None,
    kube_versions: Sequence[str] = KUBE_VERSIONS,
) -> list[str]:
    """Every check, for every version: the schema and :func:`pod_problems`."""
    problems = schema_problems(workload, kube_versions)
    spec = pod_of(workload)["spec"]
    for version in kube_versions:
        problems.extend(
            f"[{version}] {p}"
            for p in pod_problems(spec, service_port_name=service_port_name, kube_version=version)
        )
    return sorted(set(problems))
