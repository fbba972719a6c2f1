"""Where the sidecar sits in a pod's ports: which app port it protects, which port it listens
on, which port name it takes over, and the JSONPatch operations that keep the app's own
probes on the app. Pure functions over the pod as the webhook receives it.

Two ways a pod asks (see ``docs/operator.md``, "Ports"):

* **Default (no app change).** The app keeps its port. The protected port is the one named
  by ``wardgate.dev/app-port`` (a number) or ``wardgate.dev/port-name`` (a name), else the
  pod's only TCP container port, else the one named ``http``. The sidecar listens on its own
  port (``proxyPort`` of the sidecar config, 15080 by default) and forwards to
  ``127.0.0.1:<app port>``. It takes over the protected port's *name*, so a Service whose
  ``targetPort`` is that name now reaches the sidecar: the app's port entry loses the name
  (kube-proxy resolves a name over all containers of the pod; exactly one may carry it).
* **Legacy (``wardgate.dev/service-port`` and ``wardgate.dev/app-port`` both set).** The
  app was reconfigured to listen on ``app-port``; the sidecar listens on ``service-port``.
  Kept so that existing workloads keep working after an upgrade.

In both, every probe and lifecycle handler *of the container that owned the port* that
names the moved name (or, legacy, the moved number) is rewritten to the app's port number:
the kubelet resolves a named probe port in the probing container only, and a number that
now belongs to the sidecar would send the app's probe through the WAF.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ANNOTATION_SERVICE_PORT = "wardgate.dev/service-port"
ANNOTATION_APP_PORT = "wardgate.dev/app-port"
ANNOTATION_PORT_NAME = "wardgate.dev/port-name"
DEFAULT_PORT_NAME = "http"
SIDECAR = "wardgate"

PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
HANDLERS = ("httpGet", "tcpSocket")
HOOKS = ("postStart", "preStop")

_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")

JsonPatch = list[dict[str, Any]]


class PortError(ValueError):
    """The pod's ports and annotations do not say which port to protect, or collide with the
    sidecar's ports. The webhook refuses such a pod (it must not run unprotected)."""


@dataclass(frozen=True, slots=True)
class AppPort:
    """One container port of an app container."""

    container: int
    index: int
    number: int
    name: str | None
    protocol: str


@dataclass(frozen=True, slots=True)
class PortPlan:
    """Where the sidecar listens, what it protects, and what moves."""

    app_port: int
    """Where the app listens; the sidecar forwards to ``127.0.0.1:<app_port>``."""
    proxy_port: int
    """Where the sidecar listens on all addresses."""
    port_name: str
    """The container port name the sidecar's proxy port carries (the Service target)."""
    owner: AppPort | None
    """The app port entry the sidecar takes over (``None``: the app declared none)."""
    legacy: bool
    """``service-port``/``app-port`` annotations: the app port entry is renumbered too."""


def valid_port_name(name: str) -> bool:
    """An IANA service name as Kubernetes accepts it for a container port."""
    return bool(_PORT_NAME.match(name)) and "--" not in name


def app_ports(spec: Mapping[str, Any]) -> list[AppPort]:
    """Every declared port of the regular containers, in order."""
    out = []
    for ci, container in enumerate(spec.get("containers") or []):
        if not isinstance(container, Mapping) or container.get("name") == SIDECAR:
            continue
        for pi, port in enumerate(container.get("ports") or []):
            if isinstance(port, Mapping) and isinstance(port.get("containerPort"), int):
                name = port.get("name")
                out.append(
                    AppPort(
                        ci,
                        pi,
                        int(port["containerPort"]),
                        str(name) if name else None,
                        str(port.get("protocol") or "TCP"),
                    )
                )
    return out


def _number(annotations: Mapping[str, str], key: str) -> int | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise PortError(f"annotation {key}: {raw!r} is not a port (1-65535)")
    return int(raw)


def plan_ports(
    spec: Mapping[str, Any],
    annotations: Mapping[str, str],
    *,
    proxy_port: int,
    reserved: Mapping[int, str],
) -> PortPlan:
    """Decide the ports for one pod. ``reserved`` maps the sidecar's other ports (status,
    admin) to what they are. Raises :class:`PortError` with a reason a user can act on."""
    if spec.get("hostNetwork"):
        raise PortError(
            "hostNetwork pods share the node's ports: every replica's sidecar would listen on "
            "the same node port; protect such workloads without injection"
        )
    declared = app_ports(spec)
    service_port = _number(annotations, ANNOTATION_SERVICE_PORT)
    app_port = _number(annotations, ANNOTATION_APP_PORT)
    name_asked = annotations.get(ANNOTATION_PORT_NAME)
    if name_asked is not None and not valid_port_name(str(name_asked)):
        raise PortError(f"annotation {ANNOTATION_PORT_NAME}: {name_asked!r} is no port name")
    legacy = service_port is not None
    owner: AppPort | None
    if legacy:
        assert service_port is not None
        if app_port is None:
            raise PortError(
                f"annotation {ANNOTATION_SERVICE_PORT} needs {ANNOTATION_APP_PORT} (the port the "
                "app was moved to); or remove both: the sidecar then needs no app change"
            )
        if service_port == app_port:
            raise PortError("service-port and app-port must differ")
        listen = service_port
        owner = next((p for p in declared if p.number == service_port), None)
        name = name_asked or DEFAULT_PORT_NAME
    else:
        listen = proxy_port
        owner = _protected(declared, app_port, name_asked)
        if app_port is None:
            assert owner is not None
            app_port = owner.number
        name = name_asked or (owner.name if owner and owner.name else DEFAULT_PORT_NAME)
    for number, what in reserved.items():
        if number in (listen, app_port) or any(p.number == number for p in declared):
            raise PortError(f"port {number} is the sidecar's {what}")
    for port in declared if not legacy else ():
        if port.number == listen:
            raise PortError(
                f"the app declares port {listen}, which the sidecar listens on; set another "
                "proxyPort in the sidecar config"
            )
        if port.name == name and port != owner:
            raise PortError(
                f"port name {name!r} is on port {port.number}, not on the protected port "
                f"{app_port}; name the port to protect with {ANNOTATION_PORT_NAME}"
            )
    return PortPlan(app_port, listen, name, owner, legacy)


def _protected(declared: list[AppPort], app_port: int | None, name: str | None) -> AppPort | None:
    tcp = [p for p in declared if p.protocol == "TCP"]
    if app_port is not None:
        return next((p for p in tcp if p.number == app_port), None)
    if name is not None:
        found = [p for p in tcp if p.name == name]
        if not found:
            raise PortError(f"annotation {ANNOTATION_PORT_NAME}: no TCP container port {name!r}")
        return found[0]
    if len(tcp) == 1:
        return tcp[0]
    named = [p for p in tcp if p.name == DEFAULT_PORT_NAME]
    if named:
        return named[0]
    if not tcp:
        raise PortError(
            f"no TCP container port is declared: set {ANNOTATION_APP_PORT} to the port the "
            "app listens on"
        )
    listed = ", ".join(f"{p.name or '-'}={p.number}" for p in tcp)
    raise PortError(
        f"several ports ({listed}): choose the one to protect with {ANNOTATION_APP_PORT} "
        f"or {ANNOTATION_PORT_NAME}"
    )


def port_patch(spec: Mapping[str, Any], plan: PortPlan) -> JsonPatch:
    """Move the name (and, legacy, the number) off the app and keep the app's probes and
    lifecycle hooks on the app's own port."""
    patch: JsonPatch = []
    containers = spec.get("containers") or []
    moved_names: dict[int, set[str]] = {}
    moved_numbers: dict[int, set[int]] = {}
    for port in app_ports(spec):
        base = f"/spec/containers/{port.container}/ports/{port.index}"
        takes_name = port.name == plan.port_name and (plan.legacy or port == plan.owner)
        if takes_name:
            patch.append({"op": "remove", "path": f"{base}/name"})
            moved_names.setdefault(port.container, set()).add(plan.port_name)
        if plan.legacy and port.number == plan.proxy_port:
            patch.append({"op": "replace", "path": f"{base}/containerPort", "value": plan.app_port})
            moved_numbers.setdefault(port.container, set()).add(plan.proxy_port)
            if port.name and not takes_name:
                moved_names.setdefault(port.container, set()).add(port.name)
    for ci, container in enumerate(containers):
        if not isinstance(container, Mapping):
            continue
        names, numbers = moved_names.get(ci, set()), moved_numbers.get(ci, set())
        if not names and not numbers:
            continue
        for where, handler, value in _handlers(container):
            target = value.get("port")
            if (isinstance(target, str) and target in names) or (
                isinstance(target, int) and target in numbers
            ):
                patch.append(
                    {
                        "op": "replace",
                        "path": f"/spec/containers/{ci}/{where}/{handler}/port",
                        "value": plan.app_port,
                    }
                )
    return patch


def _handlers(container: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(path below the container, handler kind, handler)`` of every probe and hook."""
    out = []
    for probe in PROBES:
        body = container.get(probe)
        if isinstance(body, Mapping):
            for kind in HANDLERS:
                if isinstance(body.get(kind), Mapping):
                    out.append((probe, kind, body[kind]))
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, Mapping):
        for hook in HOOKS:
            body = lifecycle.get(hook)
            if isinstance(body, Mapping):
                for kind in HANDLERS:
                    if isinstance(body.get(kind), Mapping):
                        out.append((f"lifecycle/{hook}", kind, body[kind]))
    return out
