"""The custom resources' schema models: ``Microgateway`` (the gateway's own ``PolicySpec``
plus what only the cluster needs) and ``SecurityBaseline`` (the gateway's
``SecurityBaselineSpec``). One schema: the CRDs are generated from these models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from wardgate.config.base import SpecModel
from wardgate.config.baseline import LabelSelectorSpec, SecurityBaselineSpec
from wardgate.config.loading import format_validation_errors
from wardgate.config.manifests import CLUSTER_FIELDS
from wardgate.config.policy import PolicySpec
from wardgate.errors import SpecError as SpecError  # noqa: PLC0414 - re-export

GROUP = "wardgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

Port = Annotated[int, Field(ge=1, le=65535)]
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
Quantity = Annotated[str, Field(pattern=_QUANTITY, max_length=32)]


class ResourceListSpec(SpecModel):
    """CPU and memory quantities (Kubernetes ``ResourceList`` for the two that matter)."""

    cpu: Quantity | None = None
    """CPU, e.g. ``100m``."""

    memory: Quantity | None = None
    """Memory, e.g. ``128Mi``."""


class ResourcesSpec(SpecModel):
    """Requests and limits of the sidecar container."""

    requests: ResourceListSpec = ResourceListSpec()
    """What the scheduler reserves."""

    limits: ResourceListSpec = ResourceListSpec()
    """The ceiling the kubelet enforces."""


class SidecarSpec(SpecModel):
    """Settings of the injected gateway container for the selected pods."""

    resources: ResourcesSpec = ResourcesSpec()
    """Sidecar requests and limits. The injector takes requests from the pod annotations
    ``wardgate.dev/sidecar-cpu`` and ``wardgate.dev/sidecar-memory``, clamped to the
    cluster's sidecar limits; put these values there (``wardgate-operator render`` prints
    the annotations)."""


class NetworkPolicySpec(SpecModel):
    """The NetworkPolicy the operator renders for the selected pods."""

    enabled: bool = True
    """Render a NetworkPolicy admitting ingress to the selected pods only on the sidecar's
    proxy and status ports (and ``allowPorts``), so ``podIP:<app port>`` cannot skip the
    gateway. Set ``false`` when you manage NetworkPolicies yourself."""

    allow_ports: tuple[Port, ...] = ()
    """Further TCP ports of the app to admit from anywhere (e.g. its own metrics port)."""


ResourceName = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", max_length=253)
]


class TlsClientCaSpec(SpecModel):
    """Where the client CA bundle is: exactly one of ``secretName`` and ``configMapName``,
    and its data ``key`` (default ``ca.crt``)."""

    secret_name: ResourceName | None = None
    """A Secret holding the bundle (``key``): usually the same Secret as
    ``tls.secretName`` (cert-manager's CA and Vault issuers fill ``ca.crt``)."""

    config_map_name: ResourceName | None = None
    """A ConfigMap holding the bundle (``key``), e.g. a trust-manager ``Bundle`` target:
    for roots other than the issuer of the serving certificate."""

    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = "ca.crt"
    """The data key holding the PEM bundle (a trust-manager ``Bundle``'s
    ``target.configMap.key``); only that key is mounted, as ``ca.crt``."""

    @model_validator(mode="after")
    def _exactly_one(self) -> TlsClientCaSpec:
        if (self.secret_name is None) == (self.config_map_name is None):
            raise ValueError("set exactly one of secretName and configMapName")
        return self


class TlsSpec(SpecModel):
    """The sidecar's downstream TLS (mutual TLS with ``clientCa``). Rendered into the pod
    annotations ``wardgate.dev/tls-secret`` / ``wardgate.dev/tls-client-ca`` that the
    injector reads (``wardgate-operator render`` prints them); the operator reports
    selected pods whose sidecar does not serve it as ``Degraded``."""

    secret_name: ResourceName
    """A ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``): a cert-manager
    ``Certificate``'s ``secretName``. Mounted read-only into the sidecar only; renewals
    are picked up without a restart. The status port stays plain HTTP (probes)."""

    client_ca: TlsClientCaSpec | None = None
    """Require client certificates chaining to this bundle (mutual TLS). The verified
    identity reaches the ``peer`` rules and the upstream (``x-forwarded-client-cert``).
    Mandatory where a SecurityBaseline sets ``peer.requireClientCertificate``."""


class MicrogatewaySpec(PolicySpec):
    """A ``Microgateway``: the policy for the pods it selects (every policy section, the same
    document as a standalone policy file), plus where the sidecar sits in those pods."""

    pod_selector: LabelSelectorSpec
    """Pods in this namespace this gateway protects. The operator reports pods it selects
    that carry no sidecar as ``Degraded``."""

    app_port: Port | None = None
    """The port your application listens on, when the pods should not infer it (they infer
    the only declared TCP port, or the one named ``portName``). The sidecar forwards allowed
    requests to ``127.0.0.1:<appPort>``; the app needs no change. Put it on the pods as
    ``wardgate.dev/app-port`` (``wardgate-operator render`` prints the annotations)."""

    service_port: Port | None = None
    """Deprecated (pods injected before 0.2): the port the sidecar took over, with the app
    moved to ``appPort``. Leave it unset: the sidecar then listens on its own port."""

    port_name: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")] = "http"
    """The Service ``targetPort`` name the sidecar's container port takes over from the app
    (max 15 chars). Services must target the port by this name."""

    sidecar: SidecarSpec = SidecarSpec()
    """The injected container's settings."""

    network_policy: NetworkPolicySpec = NetworkPolicySpec()
    """The NetworkPolicy closing the app's port (see ``docs/operator.md``)."""

    tls: TlsSpec | None = None
    """Serve HTTPS (and mutual TLS) on the sidecar's proxy port from a cert-manager
    Secret. Unset: plain HTTP (or the pod's own ``wardgate.dev/tls-*`` annotations)."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> MicrogatewaySpec:
        if self.service_port is not None and self.app_port is None:
            raise ValueError("servicePort (deprecated) needs appPort; or remove servicePort")
        if self.service_port == self.app_port and self.service_port is not None:
            raise ValueError("servicePort and appPort must differ (the sidecar takes servicePort)")
        return self

    def policy(self) -> PolicySpec:
        """The policy document part, as the sidecar loads it, keeping which fields the
        author set (so baseline findings can tell clamps from violations)."""
        explicit = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return PolicySpec.model_validate(
            {k: v for k, v in explicit.items() if k not in CLUSTER_FIELDS}
        )


class MicrogatewayStatusCondition(SpecModel):
    """A status condition (Kubernetes ``metav1.Condition``)."""

    type: str
    """``Accepted``, ``Ready``, ``Propagated``, ``Degraded`` or ``BaselineCompliant``."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    reason: str
    """A CamelCase machine-readable reason."""

    message: str = ""
    """What happened, for people (field paths, pods, findings)."""

    last_transition_time: str
    """When ``status`` last changed (RFC 3339)."""

    observed_generation: int = 0
    """The ``metadata.generation`` this condition describes."""


class MicrogatewayStatus(SpecModel):
    """What the operator observed and did."""

    observed_generation: int = 0
    """The ``metadata.generation`` the status describes."""

    conditions: tuple[MicrogatewayStatusCondition, ...] = ()
    """``Accepted``, ``Ready``, ``Propagated``, ``Degraded``, ``BaselineCompliant``."""

    policy_digest: str = ""
    """The digest of the effective policy in the ConfigMap (what each sidecar must report on
    its admin ``/server_info``)."""

    config_map: str = ""
    """The ConfigMap holding ``policy.yaml``."""

    baselines: tuple[str, ...] = ()
    """The SecurityBaselines merged into the effective policy."""

    findings: tuple[str, ...] = ()
    """What the baselines changed or refused, one ``path: message (baseline NAME)`` each."""

    propagated: str = ""
    """``n/m``: selected pods whose sidecar serves the current digest, of all selected."""


class SecurityBaselineStatus(SpecModel):
    """What the operator observed about a ``SecurityBaseline`` (in the namespaces it
    watches)."""

    observed_generation: int = 0
    """The ``metadata.generation`` the status describes."""

    conditions: tuple[MicrogatewayStatusCondition, ...] = ()
    """``Accepted``: the spec parsed (``Valid``), or not (``InvalidSpec``, with every
    problem: while it does not parse, no Microgateway is rendered)."""

    selected: int = 0
    """Microgateways in the namespaces this baseline selects."""

    clamped: int = 0
    """Of those, how many had a default raised by this baseline (fine: a clamp)."""

    non_compliant: int = 0
    """Of those, how many wrote a value weaker than this baseline (a violation: clamped
    and reported) or cannot meet it at all (unenforceable: not rendered)."""


class SidecarConfig(SpecModel):
    """The injector's sidecar template (the chart's ``sidecar.yaml``)."""

    image: Annotated[str, Field(min_length=1)]
    """The gateway image."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """The container's pull policy."""

    resources: ResourcesSpec = ResourcesSpec()
    """Default requests and the cluster-wide ceiling (``limits``) for the sidecar."""

    proxy_port: Port = 15080
    """The port the sidecar's proxy listens on (all addresses). It carries the name of the
    app port it protects, so the Service's named ``targetPort`` reaches it; the app keeps
    its own port. Must not be a port an app in the pod uses."""

    status_port: Port = 15021
    """The sidecar's read-only status listener (all addresses; port name
    ``wardgate-status``): ``/ready``, ``/stats/prometheus``, ``/policy``. Probes,
    Prometheus and the operator's propagation check use it."""

    admin_port: Port = 9901
    """The sidecar's admin port."""

    admin_address: Literal["127.0.0.1", "0.0.0.0"] = "127.0.0.1"  # noqa: S104
    """Where the admin port listens. ``127.0.0.1`` (default, recommended): only inside the
    pod; the status port serves what others need to read. ``0.0.0.0`` exposes the mutating
    admin endpoints (``/quitquitquit``) on the pod IP: only for debugging."""

    mode: Literal["native", "classic"] = "native"
    """``native``: an init container with ``restartPolicy: Always`` (Kubernetes 1.29+;
    starts before and stops after the app). ``classic``: a regular container."""


def parse_microgateway_spec(spec: Any) -> MicrogatewaySpec:
    """Validate a ``Microgateway`` ``spec``; errors carry ``spec.``-prefixed field paths."""
    try:
        return MicrogatewaySpec.model_validate(spec if spec is not None else {})
    except ValidationError as exc:
        raise SpecError(_prefixed(exc)) from None


def _prefixed(exc: ValidationError) -> list[str]:
    return [
        "spec" + line.removeprefix("(document)")
        if line.startswith("(document)")
        else f"spec.{line}"
        for line in format_validation_errors(exc)
    ]


def parse_sidecar_config(data: Any, source: str) -> SidecarConfig:
    """Validate the injector's sidecar template (the chart's ``sidecar.yaml``, or the one
    ``inject --image`` builds); :class:`SpecError` names ``source`` and every problem."""
    try:
        return SidecarConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise SpecError(format_validation_errors(exc), source) from None


def parse_baseline_spec(spec: Any) -> SecurityBaselineSpec:
    """Validate a ``SecurityBaseline`` ``spec`` the same way."""
    try:
        return SecurityBaselineSpec.model_validate(spec if spec is not None else {})
    except ValidationError as exc:
        raise SpecError(_prefixed(exc)) from None
