"""``SecurityBaseline``: the schema of the security team's floor under every app policy.

The floors name policy fields by their Python names; how each field is tightened is declared
on the policy field itself (:mod:`wardgate.config.lattice`), and the merge that applies a
baseline is :mod:`wardgate.config.baseline_merge`. The WAF's families, modes and paranoia
levels are the WAF section's own types (:mod:`wardgate.config.waf`), so a new family gets a
floor without a second list to update.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from wardgate.config.base import SpecModel
from wardgate.config.policy import PolicySpec
from wardgate.config.waf import Mode, ParanoiaLevel, WafFamily

_LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
LabelKey = Annotated[str, Field(pattern=_LABEL_KEY, max_length=316)]
LabelValue = Annotated[str, Field(pattern=_LABEL_VALUE, max_length=63)]


class SelectorOperator(StrEnum):
    """A label selector requirement's operator (Kubernetes ``LabelSelectorRequirement``)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirementSpec(SpecModel):
    """One requirement: ``key operator values``."""

    model_config = ConfigDict(
        json_schema_extra={
            # The same rule as the validator below, for the API server (CRD CEL rule).
            "x-kubernetes-validations": [
                {
                    "rule": "(self.operator in ['In', 'NotIn']) == "
                    "(has(self.values) && size(self.values) > 0)",
                    "message": "In and NotIn need values; Exists and DoesNotExist take none",
                }
            ]
        }
    )

    key: LabelKey
    """The label key."""

    operator: SelectorOperator
    """How the label's value relates to ``values``."""

    values: tuple[LabelValue, ...] = ()
    """Values for ``In``/``NotIn`` (non-empty); empty for ``Exists``/``DoesNotExist``."""

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirementSpec:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"operator {self.operator.value} needs at least one value")
        if not needs_values and self.values:
            raise ValueError(f"operator {self.operator.value} takes no values")
        return self


class LabelSelectorSpec(SpecModel):
    """A Kubernetes label selector. Empty matches everything."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    """Labels that must be present with exactly these values."""

    match_expressions: tuple[LabelSelectorRequirementSpec, ...] = ()
    """Requirements that must all hold."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every part of the selector."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator is SelectorOperator.IN and labels.get(req.key) not in req.values:
                return False
            if req.operator is SelectorOperator.NOT_IN and labels.get(req.key) in req.values:
                return False
            if req.operator is SelectorOperator.EXISTS and not present:
                return False
            if req.operator is SelectorOperator.DOES_NOT_EXIST and present:
                return False
        return True


class WafFamilyFloorSpec(SpecModel):
    """The floor for one WAF rule family."""

    minimum_mode: Mode | None = None
    """The weakest mode the family may run in (``off`` < ``detect`` < ``enforce``)."""

    minimum_paranoia_level: ParanoiaLevel | None = None
    """The lowest paranoia level the family may run at."""


class WafFloorSpec(SpecModel):
    """Floors for the ``waf`` section."""

    minimum_mode: Mode | None = None
    """The weakest global WAF mode allowed. ``enforce`` forbids ``detect`` and ``off``."""

    minimum_paranoia_level: ParanoiaLevel | None = None
    """The lowest global paranoia level, and the lowest level any family may be set to."""

    enforce_families: tuple[WafFamily, ...] = ()
    """Families that must run in ``enforce`` mode whatever the global mode is."""

    families: dict[WafFamily, WafFamilyFloorSpec] = Field(default_factory=dict)
    """Per-family floors, on top of the global ones."""

    maximum_anomaly_threshold: Annotated[int, Field(ge=1, le=1000)] | None = None
    """The highest ``waf.anomalyThreshold`` allowed (a higher threshold refuses less)."""

    require_oversize_reject: bool = False
    """Bodies over ``waf.requestBodyLimit`` must be refused (``oversizeAction: reject``),
    never passed on uninspected."""


class JwtFloorSpec(SpecModel):
    """Floors for the ``jwt`` section."""

    required: bool = False
    """JWT authentication is mandatory: the policy must have a ``jwt`` section with at least
    one provider (the baseline's ``defaults`` may supply it)."""


class PeerFloorSpec(SpecModel):
    """Floors for the ``peer`` section (mutual TLS)."""

    require_client_certificate: bool = False
    """Mutual TLS is mandatory: ``peer.requireClientCertificate`` is forced to ``true``
    (a ``peer`` section is added when the app has none); the app's rules still apply."""


class LimitsCeilingSpec(SpecModel):
    """Maximum values for the ``limits`` section. Unset: no ceiling. Each field is the
    ``limits`` field of the same name (a test keeps them paired)."""

    max_request_headers_kb: Annotated[int, Field(ge=1)] | None = None
    """Ceiling for ``limits.maxRequestHeadersKb``."""

    max_headers_count: Annotated[int, Field(ge=1)] | None = None
    """Ceiling for ``limits.maxHeadersCount``."""

    max_header_value_bytes: Annotated[int, Field(ge=1)] | None = None
    """Ceiling for ``limits.maxHeaderValueBytes``."""

    max_url_bytes: Annotated[int, Field(ge=1)] | None = None
    """Ceiling for ``limits.maxUrlBytes``."""

    max_request_body_bytes: Annotated[int, Field(ge=0)] | None = None
    """Ceiling for ``limits.maxRequestBodyBytes``."""

    allowed_methods: (
        Annotated[
            tuple[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_-]{0,31}$")], ...],
            Field(min_length=1),
        ]
        | None
    ) = None
    """Methods an app may allow at most; the effective list is the intersection."""


class DelegableExceptionSpec(SpecModel):
    """WAF exceptions app teams may add themselves. An app exception is honoured only when
    every matching baseline has an entry covering it: all its ``ruleIds`` are listed here,
    all its ``families`` are listed here, and (when ``paths`` is set) every path of the
    exception starts with one of these prefixes. An exception naming neither rules nor
    families is never delegable. An entry with only ``families`` also lets teams lower
    those families' own ``waf.families.<key>`` mode and level (down to ``off``)."""

    rule_ids: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = ()
    """Rule ids teams may exempt."""

    families: tuple[WafFamily, ...] = ()
    """Whole families teams may exempt."""

    paths: tuple[Annotated[str, Field(pattern=r"^/", max_length=1024)], ...] = ()
    """Path prefixes the exception must be limited to (empty: anywhere)."""

    reason: Annotated[str, Field(max_length=1024)] = ""
    """Why the security team delegates this (shown in findings)."""


_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


class SidecarCeilingSpec(SpecModel):
    """The most the injected gateway container may request and be limited to."""

    cpu: Annotated[str, Field(pattern=_QUANTITY, max_length=32)] | None = None
    """CPU ceiling, e.g. ``500m``."""

    memory: Annotated[str, Field(pattern=_QUANTITY, max_length=32)] | None = None
    """Memory ceiling, e.g. ``256Mi``."""


class SecurityBaselineSpec(SpecModel):
    """A security baseline: the floor for every policy in the namespaces it selects. App
    teams may tighten it, never weaken it."""

    namespace_selector: LabelSelectorSpec = LabelSelectorSpec()
    """Namespaces whose ``Microgateway`` resources this baseline applies to (empty: all).
    Ignored by ``wardgate validate --baseline``."""

    waf: WafFloorSpec = WafFloorSpec()
    """WAF floors: minimum mode and paranoia level, per family and globally."""

    jwt: JwtFloorSpec = JwtFloorSpec()
    """JWT floors: mandatory authentication."""

    peer: PeerFloorSpec = PeerFloorSpec()
    """Caller identity floors: mandatory mutual TLS."""

    limits: LimitsCeilingSpec = LimitsCeilingSpec()
    """Maximum request limits."""

    sidecar_resources: SidecarCeilingSpec = SidecarCeilingSpec()
    """Ceilings for the sidecar's requests and limits in the selected namespaces, applied
    by the injector when it reads baselines (``--baselines-from-cluster``). Ignored by
    ``wardgate validate --baseline``."""

    delegable_exceptions: tuple[DelegableExceptionSpec, ...] = ()
    """WAF exceptions app teams may add. Everything else is refused."""

    defaults: PolicySpec | None = None
    """A partial policy applied where the app policy leaves a field unset (the app's own
    value wins, then the floors apply to the result)."""
