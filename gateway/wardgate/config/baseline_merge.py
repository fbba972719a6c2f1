"""The pure merge that applies ``SecurityBaseline`` floors to an app policy.

The effective policy is the *meet* of the app policy and every matching baseline: on each
field the stricter value wins, in the direction the policy field declares
(:mod:`wardgate.config.lattice`: numeric limits take the minimum, allow-lists are
intersected, WAF levels and modes take the maximum, exceptions survive only where every
baseline delegates them). Meet is commutative, associative and idempotent, so the order in
which baselines are applied never changes the result.

Each change the merge makes is a :class:`Finding`:

* a *clamp* when the app left the field at its default and the baseline raised it (the
  admission webhook answers with a warning);
* a *violation* when the app explicitly wrote something weaker than a floor (the webhook
  rejects; the operator still clamps, so the cluster never runs the weaker value);
* an *unenforceable* violation when no stricter value can be computed (mandatory JWT
  without a provider, an empty method intersection): the operator refuses to render.

The merge works on the policy as a document (what the app wrote, then everything dumped),
but every key it touches comes from a model field's Python name, checked when this module is
imported: renaming a field cannot silently drop its floor. This module is pure and knows
neither Kubernetes nor kopf: ``wardgate validate --baseline`` runs the same function the
operator and the admission webhook run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from wardgate.config.baseline import (
    DelegableExceptionSpec,
    LimitsCeilingSpec,
    SecurityBaselineSpec,
    WafFamilyFloorSpec,
    WafFloorSpec,
)
from wardgate.config.lattice import Direction, Merge, document_key, merge_of
from wardgate.config.limits import LimitsSpec
from wardgate.config.loading import format_validation_errors
from wardgate.config.peer import PeerSpec
from wardgate.config.policy import PolicySpec
from wardgate.config.waf import (
    MODE_STRICTNESS,
    OversizeAction,
    WafExceptionSpec,
    WafFamily,
    WafFamilySpec,
    WafMode,
    WafSpec,
    bare_rule_id,
)
from wardgate.errors import BaselineError

WAF_FAMILIES: tuple[str, ...] = tuple(family.value for family in WafFamily)
"""The WAF rule families, by key (the names the WAF section uses)."""

MODE_RANK: dict[str, int] = {str(mode): MODE_STRICTNESS.rank(mode) for mode in WafMode}
"""WAF modes from weakest (0) to strictest."""


def _keys(model: type[BaseModel], *names: str) -> dict[str, str]:
    """Python name -> document key; ``KeyError`` (at import) for a name that is no field."""
    return {name: document_key(model, name) for name in names}


def _ceilings(
    ceiling: type[BaseModel], section: type[BaseModel]
) -> tuple[tuple[str, str, Merge], ...]:
    """``(name, document key, direction)`` of the ``section`` field each ``ceiling`` field
    bounds, paired by Python name: a ceiling naming no field fails at import."""
    return tuple(
        (name, document_key(section, name), merge_of(section, name))
        for name in ceiling.model_fields
    )


_POLICY = _keys(PolicySpec, "limits", "peer", "jwt", "waf")
_LIMIT_CEILINGS = _ceilings(LimitsCeilingSpec, LimitsSpec)
_PEER = _keys(PeerSpec, "require_client_certificate", "rules")
_WAF = _keys(
    WafSpec,
    "mode",
    "paranoia_level",
    "anomaly_threshold",
    "oversize_action",
    "families",
    "exceptions",
)
_FAMILY = _keys(WafFamilySpec, "mode", "paranoia_level")
_EXCEPTION = _keys(WafExceptionSpec, "rule_ids", "families", "paths")
_WAF_MODE = merge_of(WafSpec, "mode")
_WAF_LEVEL = merge_of(WafSpec, "paranoia_level")
_THRESHOLD = merge_of(WafSpec, "anomaly_threshold")
_OVERSIZE = merge_of(WafSpec, "oversize_action")
_MUTUAL_TLS = merge_of(PeerSpec, "require_client_certificate")


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
        findings.extend(clamp_document(doc, explicit, name, baseline))
    if any(f.kind == "unenforceable" for f in findings):
        return BaselineOutcome(None, tuple(findings))
    return BaselineOutcome(_validate(doc), tuple(findings))


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


Note = Callable[[Sequence[str], str], None]
"""Records one finding: the field path and the message."""


def clamp_document(
    doc: dict[str, Any],
    explicit: Mapping[str, Any],
    name: str,
    baseline: SecurityBaselineSpec,
) -> list[Finding]:
    """Tighten the full policy document ``doc`` (every field present, as dumped) in place
    to ``baseline``; ``explicit`` is what the app wrote (to tell clamps from violations).
    Returns the findings."""
    findings: list[Finding] = []

    def note(path: Sequence[str], message: str) -> None:
        kind: FindingKind = "violation" if _has_path(explicit, path) else "clamp"
        findings.append(Finding(kind, ".".join(path), name, message))

    def unenforceable(path: str, message: str) -> None:
        findings.append(Finding("unenforceable", path, name, message))

    limits = doc.setdefault(_POLICY["limits"], {})
    _clamp_limits(limits, baseline.limits, note, unenforceable)
    clamp_waf(doc[_POLICY["waf"]], baseline.waf, baseline.delegable_exceptions, note)
    if baseline.peer.require_client_certificate:
        _require_mutual_tls(doc, note)
    if baseline.jwt.required and not jwt_present(doc.get(_POLICY["jwt"])):
        unenforceable(
            _POLICY["jwt"],
            "JWT authentication is mandatory: add a jwt section with at least one provider",
        )
    return findings


def _require_mutual_tls(doc: dict[str, Any], note: Note) -> None:
    """Force ``peer.requireClientCertificate: true`` (adding the section if needed)."""
    section, required = _POLICY["peer"], _PEER["require_client_certificate"]
    path = (section, required)
    peer = doc.get(section)
    if not isinstance(peer, dict):
        doc[section] = {required: True, _PEER["rules"]: []}
        note(path, "mutual TLS is mandatory; set to true")
    elif _MUTUAL_TLS.stricter(peer.get(required), True) is not None:
        peer[required] = True
        note(path, "mutual TLS is mandatory; set to true")


def _clamp_limits(
    limits: dict[str, Any],
    ceiling: LimitsCeilingSpec,
    note: Note,
    unenforceable: Callable[[str, str], None],
) -> None:
    section = _POLICY["limits"]
    for name, key, merge in _LIMIT_CEILINGS:
        bound = getattr(ceiling, name)
        if bound is None or key not in limits:
            continue
        current = limits[key]
        if merge.direction is Direction.SUBSET:
            kept = merge.intersect(current, bound)
            removed = [item for item in current if item not in kept]
            if not kept:
                unenforceable(
                    f"{section}.{key}",
                    "no method is both allowed by the policy and by the baseline "
                    f"({', '.join(bound)})",
                )
            elif removed:
                limits[key] = kept
                note((section, key), f"{', '.join(removed)} not allowed by the baseline; removed")
        elif isinstance(current, int) and merge.stricter(current, bound) is not None:
            limits[key] = bound
            note((section, key), f"{current} is over the maximum {bound}; lowered to {bound}")


def jwt_present(jwt: object) -> bool:
    """ "JWT mandatory" is met: a jwt section with at least one provider."""
    if not isinstance(jwt, Mapping):
        return False
    providers = jwt.get("providers")
    return isinstance(providers, Mapping | list | tuple) and len(providers) > 0


def clamp_waf(
    waf: dict[str, Any],
    floor: WafFloorSpec,
    delegable: Sequence[DelegableExceptionSpec],
    note: Note,
) -> None:
    """Tighten a ``waf`` section (document form) to ``floor`` in place and drop exceptions
    ``delegable`` does not cover. Missing values count as the weakest (``off``, level 0)."""
    _clamp_waf_globals(waf, floor, note)
    _clamp_waf_families(waf, floor, delegable, note)
    key = _WAF["exceptions"]
    exceptions = waf.get(key)
    if isinstance(exceptions, list):
        kept = []
        for index, exception in enumerate(exceptions):
            if isinstance(exception, Mapping) and exception_delegated(exception, delegable):
                kept.append(exception)
            else:
                note(
                    (_POLICY["waf"], key),
                    f"exception [{index}] is not delegated by the baseline; removed",
                )
        waf[key] = kept


def _clamp_waf_globals(waf: dict[str, Any], floor: WafFloorSpec, note: Note) -> None:
    mode_key, level_key = _WAF["mode"], _WAF["paranoia_level"]
    new_mode = _WAF_MODE.stricter(waf.get(mode_key), floor.minimum_mode)
    if new_mode is not None:
        note((_POLICY["waf"], mode_key), f"{waf.get(mode_key)} is weaker than {new_mode}; raised")
        waf[mode_key] = str(new_mode)
    new_level = _WAF_LEVEL.stricter(waf.get(level_key), floor.minimum_paranoia_level)
    if new_level is not None:
        note(
            (_POLICY["waf"], level_key),
            f"{waf.get(level_key)} is under the minimum {new_level}; raised",
        )
        waf[level_key] = new_level
    key, threshold = _WAF["anomaly_threshold"], waf.get(_WAF["anomaly_threshold"])
    cap = _THRESHOLD.stricter(threshold, floor.maximum_anomaly_threshold)
    if cap is not None:
        if isinstance(threshold, int):
            note((_POLICY["waf"], key), f"{threshold} is over the maximum {cap}; lowered")
        waf[key] = cap
    key = _WAF["oversize_action"]
    reject = OversizeAction.REJECT if floor.require_oversize_reject else None
    if _OVERSIZE.stricter(waf.get(key, OversizeAction.REJECT), reject) is not None:
        note(
            (_POLICY["waf"], key), f"{waf.get(key)} lets bodies through uninspected; set to reject"
        )
        waf[key] = str(OversizeAction.REJECT)


def _clamp_waf_families(
    waf: dict[str, Any],
    floor: WafFloorSpec,
    delegable: Sequence[DelegableExceptionSpec],
    note: Note,
) -> None:
    families_key, mode_key, level_key = _WAF["families"], _FAMILY["mode"], _FAMILY["paranoia_level"]
    families = waf.get(families_key)
    if not isinstance(families, dict):
        families = {}
    global_mode, global_level = waf.get(_WAF["mode"]), waf.get(_WAF["paranoia_level"])
    # A family delegated everywhere (no rule ids, no paths) may be tuned down, even off, by
    # the app's own families.<key> entry: the WAF's way of excepting a whole family.
    delegated = {
        f for entry in delegable if not entry.paths and not entry.rule_ids for f in entry.families
    }
    for family in WafFamily:
        if family in delegated and isinstance(families.get(family.value), dict):
            continue
        family_floor = floor.families.get(family, WafFamilyFloorSpec())
        mode_floor = _WAF_MODE.strictest(
            floor.minimum_mode,
            family_floor.minimum_mode,
            WafMode.ENFORCE if family in floor.enforce_families else None,
        )
        level_floor = _WAF_LEVEL.strictest(
            floor.minimum_paranoia_level, family_floor.minimum_paranoia_level
        )
        entry = families.get(family.value)
        current = entry if isinstance(entry, dict) else {}
        effective_mode = current.get(mode_key) or global_mode
        effective_level = current.get(level_key) or global_level
        raised_mode = _WAF_MODE.stricter(effective_mode, mode_floor)
        raised_level = _WAF_LEVEL.stricter(effective_level, level_floor)
        if raised_mode is None and raised_level is None:
            continue
        updated = dict(current)
        path = (_POLICY["waf"], families_key, family.value)
        if raised_mode is not None:
            updated[mode_key] = str(raised_mode)
            note((*path, mode_key), f"{effective_mode} is weaker than {raised_mode}; raised")
        if raised_level is not None:
            updated[level_key] = raised_level
            note(
                (*path, level_key), f"{effective_level} is under the minimum {raised_level}; raised"
            )
        families[family.value] = updated
        waf[families_key] = families


def exception_delegated(
    exception: Mapping[str, Any], delegable: Sequence[DelegableExceptionSpec]
) -> bool:
    """Whether one baseline's ``delegable`` list covers a WAF exception (document form)."""
    rule_ids = {bare_rule_id(str(r)) for r in exception.get(_EXCEPTION["rule_ids"]) or ()}
    families = set(exception.get(_EXCEPTION["families"]) or ())
    paths = list(exception.get(_EXCEPTION["paths"]) or ())
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
