"""``SecurityBaseline``: the security team's floor under every app policy, and the pure merge
that applies it.

The effective policy is the *meet* of the app policy and every matching baseline: on each
field the stricter value wins (numeric limits take the minimum, allow-lists are intersected,
WAF levels and modes take the maximum, exceptions survive only where every baseline
delegates them). Meet is commutative, associative and idempotent, so the order in which
baselines are applied never changes the result.

Each change the merge makes is a :class:`Finding`:

* a *clamp* when the app left the field at its default and the baseline raised it (the
  admission webhook answers with a warning);
* a *violation* when the app explicitly wrote something weaker than a floor (the webhook
  rejects; the operator still clamps, so the cluster never runs the weaker value);
* an *unenforceable* violation when no stricter value can be computed (mandatory JWT
  without a provider, an empty method intersection): the operator refuses to render.

This module is pure and knows neither Kubernetes nor kopf: ``wardgate validate --baseline``
runs the same function the operator and the admission webhook run. Sections still being
built in the gateway (``waf``, ``jwt``) are handled on the document level: a floor for a
section the schema does not know yet is unenforceable, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from wardgate.config.base import SpecModel
from wardgate.config.loading import PolicyError, format_validation_errors
from wardgate.config.policy import PolicySpec
from wardgate.config.waf import bare_rule_id

WafFamily = Literal[
    "sqli",
    "xss",
    "rce",
    "lfi",
    "rfi",
    "ssrf",
    "php",
    "java",
    "nodejs",
    "ssti",
    "nosqli",
    "ldap",
    "xxe",
    "crlf",
    "protocol",
    "scanner",
]

WAF_FAMILIES: tuple[WafFamily, ...] = get_args(WafFamily)
"""The WAF rule families, by key (the names the WAF section uses)."""

WafMode = Literal["off", "detect", "enforce"]
MODE_RANK: dict[str, int] = {"off": 0, "detect": 1, "enforce": 2}
"""WAF modes from weakest to strictest."""

ParanoiaLevel = Annotated[int, Field(ge=1, le=4)]
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

    minimum_mode: WafMode | None = None
    """The weakest mode the family may run in (``off`` < ``detect`` < ``enforce``)."""

    minimum_paranoia_level: ParanoiaLevel | None = None
    """The lowest paranoia level the family may run at."""


class WafFloorSpec(SpecModel):
    """Floors for the ``waf`` section."""

    minimum_mode: WafMode | None = None
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


class LimitsCeilingSpec(SpecModel):
    """Maximum values for the ``limits`` section. Unset: no ceiling."""

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


LIMIT_CEILINGS = (
    "maxRequestHeadersKb",
    "maxHeadersCount",
    "maxHeaderValueBytes",
    "maxUrlBytes",
    "maxRequestBodyBytes",
)


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


# --- findings --------------------------------------------------------------------------

FindingKind = Literal["clamp", "violation", "unenforceable"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One way the baseline changed or refused the app policy. ``path`` is the policy field
    (``waf.families.sqli.paranoiaLevel``), ``baseline`` the baseline's name."""

    kind: FindingKind
    path: str
    baseline: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (baseline {self.baseline})"


@dataclass(frozen=True, slots=True)
class BaselineOutcome:
    """The result of :func:`apply_baselines`. ``effective`` is ``None`` only when a finding
    is unenforceable: then no policy at least as strict as every baseline exists."""

    effective: PolicySpec | None
    findings: tuple[Finding, ...] = field(default=())

    @property
    def compliant(self) -> bool:
        """The app policy as written already meets every baseline (clamps of defaults are
        fine: the app did not ask for the weaker value)."""
        return not any(f.kind != "clamp" for f in self.findings)

    def of_kind(self, *kinds: FindingKind) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind in kinds)


class BaselineError(Exception):
    """The combined document does not validate (for example baseline defaults that clash
    with the app policy). ``problems`` holds ``path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# --- the merge -------------------------------------------------------------------------


def apply_baselines(
    app: PolicySpec, baselines: Iterable[tuple[str, SecurityBaselineSpec]]
) -> BaselineOutcome:
    """Merge ``app`` with every ``(name, baseline)``. Pure; the baselines' order does not
    matter (they are applied sorted by name; every floor is a meet).

    Raises :class:`BaselineError` when the baselines' defaults make the document invalid.
    """
    ordered = sorted(baselines, key=lambda item: item[0])
    explicit = app.model_dump(mode="json", by_alias=True, exclude_unset=True)
    with_defaults: dict[str, Any] = explicit
    for _, baseline in ordered:
        if baseline.defaults is not None:
            defaults = baseline.defaults.model_dump(mode="json", by_alias=True, exclude_unset=True)
            with_defaults = deep_merge(defaults, with_defaults)
    base = _validate(with_defaults)
    doc = base.model_dump(mode="json", by_alias=True)
    findings: list[Finding] = []
    for name, baseline in ordered:
        findings.extend(clamp_document(doc, explicit, name, baseline, _schema_sections()))
    if any(f.kind == "unenforceable" for f in findings):
        return BaselineOutcome(None, tuple(findings))
    return BaselineOutcome(_validate(doc), tuple(findings))


def _schema_sections() -> frozenset[str]:
    return frozenset(info.alias or name for name, info in PolicySpec.model_fields.items())


def _validate(doc: Mapping[str, Any]) -> PolicySpec:
    try:
        return PolicySpec.model_validate(doc)
    except ValidationError as exc:
        raise BaselineError(format_validation_errors(exc)) from None


def deep_merge(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``under``: mappings merge key by key, anything else in ``over``
    replaces what is in ``under``."""
    out = dict(under)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _has_path(doc: Mapping[str, Any], path: Sequence[str]) -> bool:
    node: Any = doc
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return node is not None


def clamp_document(
    doc: dict[str, Any],
    explicit: Mapping[str, Any],
    name: str,
    baseline: SecurityBaselineSpec,
    sections: frozenset[str],
) -> list[Finding]:
    """Tighten the full policy document ``doc`` (every field present, as dumped) in place
    to ``baseline``; ``explicit`` is what the app wrote (to tell clamps from violations);
    ``sections`` the top-level sections the schema knows. Returns the findings."""
    findings: list[Finding] = []

    def note(path: Sequence[str], message: str) -> None:
        kind: FindingKind = "violation" if _has_path(explicit, path) else "clamp"
        findings.append(Finding(kind, ".".join(path), name, message))

    _clamp_limits(doc.setdefault("limits", {}), baseline.limits, name, note, findings)
    if "waf" in sections:
        waf = doc.get("waf")
        if isinstance(waf, dict):
            clamp_waf(waf, baseline.waf, baseline.delegable_exceptions, note)
        elif baseline.waf != WafFloorSpec():
            # No WAF section at all (off): the floors switch it on at their levels.
            waf = {}
            clamp_waf(waf, baseline.waf, baseline.delegable_exceptions, note)
            doc["waf"] = waf
    elif baseline.waf != WafFloorSpec():
        findings.append(
            Finding(
                "unenforceable",
                "waf",
                name,
                "the baseline sets WAF floors but this gateway has no waf section",
            )
        )
    if baseline.jwt.required and not jwt_present(doc.get("jwt")):
        findings.append(
            Finding(
                "unenforceable",
                "jwt",
                name,
                "JWT authentication is mandatory: add a jwt section with at least one provider",
            )
        )
    return findings


Note = Callable[[Sequence[str], str], None]
"""Records one finding: the field path and the message."""


def _clamp_limits(
    limits: dict[str, Any],
    ceiling: LimitsCeilingSpec,
    name: str,
    note: Note,
    findings: list[Finding],
) -> None:
    for key in LIMIT_CEILINGS:
        cap = getattr(ceiling, _snake(key))
        current = limits.get(key)
        if cap is not None and isinstance(current, int) and current > cap:
            limits[key] = cap
            note(("limits", key), f"{current} is over the maximum {cap}; lowered to {cap}")
    if ceiling.allowed_methods is not None and "allowedMethods" in limits:
        current_methods = list(limits["allowedMethods"])
        kept = [m for m in current_methods if m in ceiling.allowed_methods]
        removed = [m for m in current_methods if m not in ceiling.allowed_methods]
        if not kept:
            findings.append(
                Finding(
                    "unenforceable",
                    "limits.allowedMethods",
                    name,
                    "no method is both allowed by the policy and by the baseline "
                    f"({', '.join(ceiling.allowed_methods)})",
                )
            )
        elif removed:
            limits["allowedMethods"] = kept
            note(
                ("limits", "allowedMethods"),
                f"{', '.join(removed)} not allowed by the baseline; removed",
            )


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def jwt_present(jwt: object) -> bool:
    """ "JWT mandatory" is met: a jwt section with at least one provider."""
    if not isinstance(jwt, Mapping):
        return False
    providers = jwt.get("providers")
    return isinstance(providers, Mapping | list | tuple) and len(providers) > 0


def _stricter_mode(current: object, floor: str | None) -> str | None:
    """The floor when it is stricter than ``current``, else ``None``."""
    if floor is None:
        return None
    rank = MODE_RANK.get(current, -1) if isinstance(current, str) else -1
    return floor if MODE_RANK[floor] > rank else None


def _higher_level(current: object, floor: int | None) -> int | None:
    if floor is None:
        return None
    level = current if isinstance(current, int) and not isinstance(current, bool) else 0
    return floor if floor > level else None


def clamp_waf(
    waf: dict[str, Any],
    floor: WafFloorSpec,
    delegable: Sequence[DelegableExceptionSpec],
    note: Note,
) -> None:
    """Tighten a ``waf`` section (document form) to ``floor`` in place and drop exceptions
    ``delegable`` does not cover. Missing values count as the weakest (``off``, level 0)."""
    new_mode = _stricter_mode(waf.get("mode"), floor.minimum_mode)
    if new_mode is not None:
        note(("waf", "mode"), f"{waf.get('mode')} is weaker than {new_mode}; raised")
        waf["mode"] = new_mode
    new_level = _higher_level(waf.get("paranoiaLevel"), floor.minimum_paranoia_level)
    if new_level is not None:
        note(
            ("waf", "paranoiaLevel"),
            f"{waf.get('paranoiaLevel')} is under the minimum {new_level}; raised",
        )
        waf["paranoiaLevel"] = new_level
    threshold = waf.get("anomalyThreshold")
    cap = floor.maximum_anomaly_threshold
    if cap is not None and (not isinstance(threshold, int) or threshold > cap):
        if isinstance(threshold, int):
            note(("waf", "anomalyThreshold"), f"{threshold} is over the maximum {cap}; lowered")
        waf["anomalyThreshold"] = cap
    if floor.require_oversize_reject and waf.get("oversizeAction", "reject") != "reject":
        note(
            ("waf", "oversizeAction"),
            f"{waf.get('oversizeAction')} lets bodies through uninspected; set to reject",
        )
        waf["oversizeAction"] = "reject"
    families = waf.get("families")
    if not isinstance(families, dict):
        families = {}
    global_mode = waf.get("mode")
    global_level = waf.get("paranoiaLevel")
    # A family delegated everywhere (no rule ids, no paths) may be tuned down, even off, by
    # the app's own families.<key> entry: the WAF's way of excepting a whole family.
    delegated = {
        f for entry in delegable if not entry.paths and not entry.rule_ids for f in entry.families
    }
    for family in WAF_FAMILIES:
        if family in delegated and isinstance(families.get(family), dict):
            continue
        family_floor = floor.families.get(family, WafFamilyFloorSpec())
        mode_floor = _max_mode(
            floor.minimum_mode,
            family_floor.minimum_mode,
            "enforce" if family in floor.enforce_families else None,
        )
        level_floor = _max_level(floor.minimum_paranoia_level, family_floor.minimum_paranoia_level)
        entry = families.get(family)
        current = entry if isinstance(entry, dict) else {}
        effective_mode = current.get("mode") or global_mode
        effective_level = current.get("paranoiaLevel") or global_level
        raised_mode = _stricter_mode(effective_mode, mode_floor)
        raised_level = _higher_level(effective_level, level_floor)
        if raised_mode is None and raised_level is None:
            continue
        updated = dict(current)
        if raised_mode is not None:
            updated["mode"] = raised_mode
            note(
                ("waf", "families", family, "mode"),
                f"{effective_mode} is weaker than {raised_mode}; raised",
            )
        if raised_level is not None:
            updated["paranoiaLevel"] = raised_level
            note(
                ("waf", "families", family, "paranoiaLevel"),
                f"{effective_level} is under the minimum {raised_level}; raised",
            )
        families[family] = updated
        waf["families"] = families
    exceptions = waf.get("exceptions")
    if isinstance(exceptions, list):
        kept = []
        for index, exception in enumerate(exceptions):
            if isinstance(exception, Mapping) and exception_delegated(exception, delegable):
                kept.append(exception)
            else:
                note(
                    ("waf", "exceptions"),
                    f"exception [{index}] is not delegated by the baseline; removed",
                )
        waf["exceptions"] = kept


def _max_mode(*modes: str | None) -> str | None:
    present = [m for m in modes if m is not None]
    return max(present, key=MODE_RANK.__getitem__) if present else None


def _max_level(*levels: int | None) -> int | None:
    present = [lv for lv in levels if lv is not None]
    return max(present) if present else None


def exception_delegated(
    exception: Mapping[str, Any], delegable: Sequence[DelegableExceptionSpec]
) -> bool:
    """Whether one baseline's ``delegable`` list covers a WAF exception (document form)."""
    rule_ids = {bare_rule_id(str(r)) for r in exception.get("ruleIds") or ()}
    families = set(exception.get("families") or ())
    paths = list(exception.get("paths") or ())
    if not rule_ids and not families:
        return False
    for entry in delegable:
        delegated_ids = {bare_rule_id(r) for r in entry.rule_ids}
        if not rule_ids <= delegated_ids or not families <= set(entry.families):
            continue
        if entry.paths and (
            not paths or not all(any(p.startswith(pre) for pre in entry.paths) for p in paths)
        ):
            continue
        return True
    return False


# --- reading baseline files (``wardgate validate --baseline``) ---------------------------


def load_baseline_file(path: str) -> list[tuple[str, SecurityBaselineSpec]]:
    """Read ``SecurityBaseline`` manifests (one or more YAML documents; a bare baseline
    ``spec`` works too). Raises ``PolicyError`` naming every problem with its path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(path, [f"cannot read the file: {exc}"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise PolicyError(path, [f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    out: list[tuple[str, SecurityBaselineSpec]] = []
    problems: list[str] = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, Mapping):
            problems.append(f"document {index + 1}: not a mapping")
            continue
        if "kind" in doc:
            if doc.get("kind") != "SecurityBaseline":
                continue
            name = str((doc.get("metadata") or {}).get("name") or f"document-{index + 1}")
            spec, prefix = doc.get("spec") or {}, "spec."
        else:
            name, spec, prefix = f"document-{index + 1}", doc, ""
        try:
            out.append((name, SecurityBaselineSpec.model_validate(spec)))
        except ValidationError as exc:
            problems.extend(f"{name}: {prefix}{line}" for line in format_validation_errors(exc))
    if problems:
        raise PolicyError(path, problems)
    if not out:
        raise PolicyError(path, ["no SecurityBaseline in the file"])
    return out
