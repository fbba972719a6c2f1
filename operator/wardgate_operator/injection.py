"""Sidecar injection as a pure function: ``inject(pod, template) -> JSONPatch``.

The admission webhook (:mod:`wardgate_operator.admission`) and ``wardgate-operator inject``
both call :func:`inject`; neither has another code path. Contract:

* A pod (or pod template: anything with ``metadata`` and ``spec``) is injected when it
  carries the annotation ``wardgate.dev/microgateway: <name>`` and not the opt-out label
  ``wardgate.dev/inject: "false"``. Which namespaces are eligible is the webhook's
  ``namespaceSelector`` (opt-in label ``wardgate.dev/inject: enabled``; the deprecated
  ``wardgate.dev/injection: enabled`` too, see :data:`DEPRECATED_NAMESPACE_LABEL`).
* The ports are planned by :mod:`wardgate_operator.podports` from the pod's own container
  ports (and the optional annotations ``wardgate.dev/app-port`` / ``wardgate.dev/port-name``,
  or the legacy pair ``wardgate.dev/service-port`` + ``wardgate.dev/app-port``): the app
  keeps its port; the sidecar listens on its own port and takes over the port's name. The
  injector has no API access and never reads the ``Microgateway`` itself.
* The sidecar declares a second port, ``wardgate-status`` (``statusPort``, 15021): the
  read-only status listener its probes, Prometheus and the operator use.
* Idempotent: a pod that already has a container named ``wardgate`` (init or regular) gets
  an empty patch, so ``reinvocationPolicy: IfNeeded`` is safe.
* The patch only adds or replaces what injection needs, with paths computed against the
  pod as it is (``add /spec/initContainers`` when absent, ``.../-`` or an index otherwise).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from wardgate_operator.models import SidecarConfig, TlsSpec
from wardgate_operator.podports import (
    ANNOTATION_APP_PORT,
    ANNOTATION_PORT_NAME,
    ANNOTATION_SERVICE_PORT,
    PortError,
    PortPlan,
    plan_ports,
    port_patch,
)

SIDECAR_NAME = "wardgate"
POLICY_VOLUME = "wardgate-policy"
TMP_VOLUME = "wardgate-tmp"
POLICY_DIR = "/etc/wardgate/policy"
SIDECAR_UID = 65532
STATUS_PORT_NAME = "wardgate-status"

ANNOTATION_MICROGATEWAY = "wardgate.dev/microgateway"
ANNOTATION_CPU = "wardgate.dev/sidecar-cpu"
ANNOTATION_MEMORY = "wardgate.dev/sidecar-memory"
ANNOTATION_MODE = "wardgate.dev/sidecar-mode"
ANNOTATION_INJECTED = "wardgate.dev/injected"
LABEL_OPT_OUT = "wardgate.dev/inject"
NAMESPACE_LABEL = "wardgate.dev/inject"
"""The namespace opt-in label (value ``enabled``), the chart's webhook ``namespaceSelector``."""
NAMESPACE_LABEL_VALUE = "enabled"
DEPRECATED_NAMESPACE_LABEL = "wardgate.dev/injection"
"""Named by docs before 0.2; the chart accepts it too
(``webhooks.acceptDeprecatedNamespaceLabel``)."""
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

JsonPatch = list[dict[str, Any]]

__all__ = [
    "ANNOTATION_APP_PORT",
    "ANNOTATION_PORT_NAME",
    "ANNOTATION_SERVICE_PORT",
    "InjectionError",
    "inject",
]


class InjectionError(ValueError):
    """The pod asks for a sidecar but cannot get one (bad annotations): the webhook refuses
    the pod rather than letting it run unprotected."""


def configmap_name(microgateway: str) -> str:
    """The ConfigMap holding a Microgateway's effective policy (same namespace)."""
    name = f"wardgate-{microgateway}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(microgateway.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one pod's annotations and ports ask for."""

    microgateway: str
    ports: PortPlan
    mode: str
    cpu: str | None
    memory: str | None


def read_request(pod: Mapping[str, Any], template: SidecarConfig) -> PodRequest | None:
    """The injection the pod asks for, ``None`` when it asks for none (no annotation, or
    opted out). Raises :class:`InjectionError` for an unusable request."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
        raise InjectionError("metadata.labels and metadata.annotations must be mappings")
    if str(labels.get(LABEL_OPT_OUT, "")).lower() == "false":
        return None
    name = annotations.get(ANNOTATION_MICROGATEWAY)
    if name is None:
        return None
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise InjectionError(f"annotation {ANNOTATION_MICROGATEWAY}: not a resource name")
    spec = pod.get("spec")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("containers"), list):
        raise InjectionError("spec.containers is missing")
    reserved = {template.status_port: "status port", template.admin_port: "admin port"}
    if len(reserved) < 2 or template.proxy_port in reserved:
        raise InjectionError("sidecar config: proxyPort, statusPort and adminPort must differ")
    try:
        ports = plan_ports(spec, annotations, proxy_port=template.proxy_port, reserved=reserved)
    except PortError as exc:
        raise InjectionError(str(exc)) from None
    mode = annotations.get(ANNOTATION_MODE, template.mode)
    if mode not in ("native", "classic"):
        raise InjectionError(f"annotation {ANNOTATION_MODE}: use native or classic")
    return PodRequest(
        microgateway=name,
        ports=ports,
        mode=mode,
        cpu=annotations.get(ANNOTATION_CPU),
        memory=annotations.get(ANNOTATION_MEMORY),
    )


# --- quantities ------------------------------------------------------------------------

_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``100m``, ``128Mi``, ``1.5``) as a number; ``ValueError`` else."""
    match = _QUANTITY.match(text.strip()) if len(text) <= 32 else None
    if match is None:
        raise ValueError(f"{text!r} is not a quantity such as 100m or 128Mi")
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity") from None


def _resources(
    request: PodRequest,
    template: SidecarConfig,
    warnings: list[str],
    ceiling: Mapping[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    requests = {
        k: v
        for k, v in template.resources.requests.model_dump(exclude_none=True).items()
        if isinstance(v, str)
    }
    limits = {
        k: v
        for k, v in template.resources.limits.model_dump(exclude_none=True).items()
        if isinstance(v, str)
    }
    for resource, cap in (ceiling or {}).items():
        # A baseline ceiling becomes the limit when it is lower (or none was set), and
        # lowers a default request over it.
        current_limit = limits.get(resource)
        if current_limit is None or parse_quantity(current_limit) > parse_quantity(cap):
            if current_limit is not None:
                warnings.append(f"sidecar {resource} limit {current_limit} lowered to {cap}")
            limits[resource] = cap
        current_request = requests.get(resource)
        if current_request is not None and parse_quantity(current_request) > parse_quantity(cap):
            requests[resource] = cap
    for resource, asked, key in (
        ("cpu", request.cpu, ANNOTATION_CPU),
        ("memory", request.memory, ANNOTATION_MEMORY),
    ):
        if asked is None:
            continue
        try:
            amount = parse_quantity(asked)
        except ValueError as exc:
            raise InjectionError(f"annotation {key}: {exc}") from None
        top = limits.get(resource)
        if top is not None and amount > parse_quantity(top):
            warnings.append(f"{key}={asked} is over the sidecar limit; using {top}")
            requests[resource] = top
        else:
            requests[resource] = asked
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


# --- the container ---------------------------------------------------------------------


def sidecar_container(
    request: PodRequest,
    template: SidecarConfig,
    warnings: list[str],
    ceiling: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The hardened gateway container for ``request``. Its probes are ``httpGet`` on the
    status port (reachable by the kubelet on the pod IP; read-only)."""
    ready = {"httpGet": {"path": "/ready", "port": STATUS_PORT_NAME, "scheme": "HTTP"}}
    ports = request.ports
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": template.image,
        "imagePullPolicy": template.image_pull_policy,
        "command": ["wardgate"],
        "args": [
            "run",
            "--upstream",
            f"http://127.0.0.1:{ports.app_port}",
            "--policy",
            f"{POLICY_DIR}/policy.yaml",
            "--listen",
            f"0.0.0.0:{ports.proxy_port}",
            "--admin",
            f"{template.admin_address}:{template.admin_port}",
            "--status",
            f"0.0.0.0:{template.status_port}",
        ],
        "ports": [
            {"name": ports.port_name, "containerPort": ports.proxy_port, "protocol": "TCP"},
            {
                "name": STATUS_PORT_NAME,
                "containerPort": template.status_port,
                "protocol": "TCP",
            },
        ],
        "readinessProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 3},
        "startupProbe": {
            **ready,
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": 60,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, per pod
        ],
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
    }
    resources = _resources(request, template, warnings, ceiling)
    if resources:
        container["resources"] = resources
    if request.mode == "native":
        container["restartPolicy"] = "Always"
    return container


# --- TLS (issue 14): a cert-manager Secret and a client CA bundle ------------------------

ANNOTATION_TLS_SECRET = "wardgate.dev/tls-secret"  # noqa: S105 - an annotation key
ANNOTATION_TLS_CLIENT_CA = "wardgate.dev/tls-client-ca"
TLS_VOLUME = "wardgate-tls"
TLS_DIR = "/etc/wardgate/tls"
CLIENT_CA_VOLUME = "wardgate-client-ca"
CLIENT_CA_DIR = "/etc/wardgate/client-ca"
_RESOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
DEFAULT_CA_KEY = "ca.crt"


@dataclass(frozen=True, slots=True)
class ClientCa:
    """Where a client CA bundle is: ``kind`` ``secret`` or ``configmap``, its name and the
    data key holding the PEM bundle."""

    kind: str
    name: str
    key: str = DEFAULT_CA_KEY


@dataclass(frozen=True, slots=True)
class TlsRequest:
    """What a pod's TLS annotations ask for (``spec.tls`` of a Microgateway renders them:
    :func:`tls_annotations`).

    * ``wardgate.dev/tls-secret: <name>``: serve HTTPS with a ``kubernetes.io/tls`` Secret
      (``tls.crt``, ``tls.key``; what a cert-manager ``Certificate`` writes), mounted
      read-only; a renewal reaches the sidecar through the kubelet's ``..data`` swap and is
      picked up without a restart.
    * ``wardgate.dev/tls-client-ca``: require client certificates (mutual TLS) chaining to
      ``ca.crt`` of that same Secret (``secret``, cert-manager CA issuers fill it), of
      another Secret (``secret/<name>``) or of a ConfigMap (``configmap/<name>``, e.g. a
      trust-manager ``Bundle``); ``:<key>`` after any of them names another data key
      (``configmap/mesh-roots:trust-bundle.pem``).
    """

    secret: str
    client_ca: ClientCa | None = None

    @property
    def mutual(self) -> bool:
        """Client certificates are required."""
        return self.client_ca is not None


_CLIENT_CA_FORMS = "use 'secret', 'secret/<name>' or 'configmap/<name>', optionally ':<key>'"


def _client_ca(value: object, secret: str) -> ClientCa | None:
    """The bundle a ``tls-client-ca`` annotation names (``secret``: the serving Secret)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InjectionError(f"annotation {ANNOTATION_TLS_CLIENT_CA}: {_CLIENT_CA_FORMS}")
    where, colon, key = value.partition(":")
    if colon and not _DATA_KEY.match(key):
        raise InjectionError(f"annotation {ANNOTATION_TLS_CLIENT_CA}: not a data key: {key!r}")
    key = key or DEFAULT_CA_KEY
    if where == "secret":
        return ClientCa("secret", secret, key)
    kind, slash, name = where.partition("/")
    if not slash or kind not in ("secret", "configmap"):
        raise InjectionError(f"annotation {ANNOTATION_TLS_CLIENT_CA}: {_CLIENT_CA_FORMS}")
    if not _RESOURCE_NAME.match(name):
        raise InjectionError(f"annotation {ANNOTATION_TLS_CLIENT_CA}: not a resource name")
    return ClientCa(kind, name, key)


def read_tls_request(pod: Mapping[str, Any]) -> TlsRequest | None:
    """The TLS the pod asks for (``None``: plain HTTP). :class:`InjectionError` when the
    annotations cannot work (a client CA without a certificate, a bad name)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    secret = annotations.get(ANNOTATION_TLS_SECRET)
    client_ca = annotations.get(ANNOTATION_TLS_CLIENT_CA)
    if secret is None:
        if client_ca is not None:
            raise InjectionError(f"{ANNOTATION_TLS_CLIENT_CA} needs {ANNOTATION_TLS_SECRET}")
        return None
    if not isinstance(secret, str) or not _RESOURCE_NAME.match(secret):
        raise InjectionError(f"annotation {ANNOTATION_TLS_SECRET}: not a Secret name")
    return TlsRequest(secret, _client_ca(client_ca, secret))


def tls_annotations(tls: TlsSpec | None) -> dict[str, str]:
    """The pod annotations that make the injector serve ``spec.tls``."""
    if tls is None:
        return {}
    out = {ANNOTATION_TLS_SECRET: tls.secret_name}
    ca = tls.client_ca
    if ca is None:
        return out
    if ca.config_map_name is not None:
        value = f"configmap/{ca.config_map_name}"
    elif ca.secret_name == tls.secret_name:
        value = "secret"
    else:
        value = f"secret/{ca.secret_name}"
    out[ANNOTATION_TLS_CLIENT_CA] = value if ca.key == DEFAULT_CA_KEY else f"{value}:{ca.key}"
    return out


def add_tls(container: dict[str, Any], volumes: list[dict[str, Any]], tls: TlsRequest) -> None:
    """Mount the certificate (and client CA) into the sidecar, read-only, and pass the
    ``--tls-*`` options. Only the sidecar mounts the Secret (the app container never sees
    the key); the volume keeps the default file mode so the non-root sidecar can read it
    without a pod-wide ``fsGroup``. The status port stays plain HTTP (the kubelet's probes
    and Prometheus need no certificate)."""
    container["args"] += [
        "--tls-cert",
        f"{TLS_DIR}/tls.crt",
        "--tls-key",
        f"{TLS_DIR}/tls.key",
    ]
    mounts = [{"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True}]
    volumes.append({"name": TLS_VOLUME, "secret": {"secretName": tls.secret}})
    ca = tls.client_ca
    if ca is not None and ca == ClientCa("secret", tls.secret):
        container["args"] += ["--tls-client-ca", f"{TLS_DIR}/{DEFAULT_CA_KEY}"]
    elif ca is not None:
        # Only the bundle's key, as ca.crt: a Secret's other keys (a CA's own tls.key)
        # never reach the sidecar's filesystem.
        items = [{"key": ca.key, "path": DEFAULT_CA_KEY}]
        source = (
            {"secret": {"secretName": ca.name, "items": items}}
            if ca.kind == "secret"
            else {"configMap": {"name": ca.name, "items": items}}
        )
        container["args"] += ["--tls-client-ca", f"{CLIENT_CA_DIR}/{DEFAULT_CA_KEY}"]
        mounts.append({"name": CLIENT_CA_VOLUME, "mountPath": CLIENT_CA_DIR, "readOnly": True})
        volumes.append({"name": CLIENT_CA_VOLUME, **source})
    container["volumeMounts"] += mounts


def template_hash(template: SidecarConfig, request: PodRequest) -> str:
    """A short hash of what was injected, recorded in ``wardgate.dev/injected``."""
    doc = json.dumps([template.model_dump(mode="json"), request.__repr__()], sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _pointer(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def already_injected(pod: Mapping[str, Any]) -> bool:
    """A container named ``wardgate`` exists (init or regular)."""
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            if isinstance(container, Mapping) and container.get("name") == SIDECAR_NAME:
                return True
    return False


def inject(
    pod: Mapping[str, Any],
    template: SidecarConfig,
    warnings: list[str] | None = None,
    ceiling: Mapping[str, str] | None = None,
    mutual_tls_required_by: str | None = None,
) -> JsonPatch:
    """The JSONPatch that adds the gateway sidecar to ``pod`` (empty when the pod asks for
    none or already has it). ``ceiling`` (``{"cpu": ..., "memory": ...}``, from the
    baselines) caps the sidecar's requests and limits below the template's.
    ``mutual_tls_required_by`` names the baseline that makes mutual TLS mandatory: a pod
    without a client CA is then refused (its sidecar would answer every request 403). Appends to
    ``warnings`` what the caller should tell the user. Raises :class:`InjectionError` when
    the pod asks for injection in a way that cannot work."""
    notes = warnings if warnings is not None else []
    if already_injected(pod):
        return []
    request = read_request(pod, template)
    if request is None:
        return []
    spec: Mapping[str, Any] = pod["spec"]
    containers: list[Any] = spec["containers"]
    patch: JsonPatch = []
    container = sidecar_container(request, template, notes, ceiling)
    tls = read_tls_request(pod)
    if mutual_tls_required_by is not None and (tls is None or not tls.mutual):
        raise InjectionError(
            f"mutual TLS is mandatory here (SecurityBaseline {mutual_tls_required_by}): set the "
            f"Microgateway's spec.tls.clientCa and put {ANNOTATION_TLS_SECRET} and "
            f"{ANNOTATION_TLS_CLIENT_CA} on the pod (wardgate-operator render prints them)"
        )

    if request.mode == "native":
        if spec.get("initContainers"):
            # First, so that it is started (startupProbe passed) before the other init
            # containers and the app.
            patch.append({"op": "add", "path": "/spec/initContainers/0", "value": container})
        else:
            patch.append({"op": "add", "path": "/spec/initContainers", "value": [container]})
    else:
        patch.append({"op": "add", "path": "/spec/containers/-", "value": container})

    volumes = [
        {"name": POLICY_VOLUME, "configMap": {"name": configmap_name(request.microgateway)}},
        {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    if tls is not None:
        add_tls(container, volumes, tls)
    if spec.get("volumes"):
        patch.extend({"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes)
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})

    # Port takeover: the Service's named targetPort resolves to the sidecar; the app's
    # probes stay on the app's own port (see podports).
    patch.extend(port_patch(spec, request.ports))

    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    added = {ANNOTATION_INJECTED: template_hash(template, request)}
    first = containers[0].get("name") if containers and isinstance(containers[0], Mapping) else None
    if first and DEFAULT_CONTAINER not in annotations:
        added[DEFAULT_CONTAINER] = str(first)
    if "metadata" not in pod:
        patch.append({"op": "add", "path": "/metadata", "value": {"annotations": added}})
    elif not annotations:
        patch.append({"op": "add", "path": "/metadata/annotations", "value": added})
    else:
        for key, value in added.items():
            patch.append(
                {"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value}
            )
    return patch


def resource_ceiling(ceilings: Iterable[Mapping[str, str | None]]) -> dict[str, str]:
    """The lowest of several ``{cpu, memory}`` ceilings (several baselines: all apply)."""
    out: dict[str, str] = {}
    for item in ceilings:
        for resource in ("cpu", "memory"):
            value = item.get(resource)
            if value and (
                resource not in out or parse_quantity(value) < parse_quantity(out[resource])
            ):
                out[resource] = value
    return out


# --- applying a patch (for `wardgate-operator inject`) ---------------------------------


def apply_patch(doc: Any, patch: JsonPatch) -> Any:
    """Apply the ``add``/``replace``/``remove`` operations of :func:`inject` to a copy of
    ``doc``."""
    out = json.loads(json.dumps(doc))
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = out
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
            continue
        value = json.loads(json.dumps(op["value"]))
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif op["op"] == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            parent[last] = value
    return out
