"""Evaluating a ``Microgateway``, with no I/O: validate -> compile with the gateway's own
``compile_policy`` -> merge with every matching baseline -> the ConfigMap to render, and the
status that says so.

:func:`evaluate` is what the operator (:mod:`wardgate_operator.reconciling`), the CLI's
``render`` and the validating webhook all run, so the three never disagree.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wardgate.config.baseline_merge import Finding, apply_baselines
from wardgate.config.policy import PolicySpec
from wardgate.errors import BaselineError
from wardgate.runtime.compiled import PolicyCompileError, compile_policy
from wardgate_operator.models import MicrogatewaySpec, SpecError, parse_microgateway_spec
from wardgate_operator.rendering import (
    ANNOTATION_DIGEST,
    condition,
    merge_conditions,
    render_configmap,
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
    findings = outcome.findings + mutual_tls_findings(parsed, baselines)
    if outcome.effective is None:
        unenforceable = outcome.of_kind("unenforceable")
        return Evaluation(
            False,
            "BaselineViolation",
            tuple(f"spec.{f}" for f in unenforceable),
            parsed,
            findings=findings,
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
        findings,
        names,
        configmap,
    )


def mutual_tls_findings(
    spec: MicrogatewaySpec, baselines: Sequence[tuple[str, Any]]
) -> tuple[Finding, ...]:
    """A violation for each baseline making mutual TLS mandatory when ``spec.tls`` has no
    client CA. The policy is still rendered (``peer.requireClientCertificate`` forced on):
    its sidecar refuses every request until the client CA is configured, which fails
    closed; the status and the validating webhook say why."""
    if spec.tls is not None and spec.tls.client_ca is not None:
        return ()
    return tuple(
        Finding(
            "violation",
            "tls.clientCa",
            name,
            "mutual TLS is mandatory in this namespace: set tls.secretName and tls.clientCa "
            "(until then the sidecar refuses every request)",
        )
        for name, baseline in baselines
        if baseline.peer.require_client_certificate
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
    """The current UTC time as a Kubernetes timestamp."""
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
    cond = conditions_factory(generation, now, old_conditions)
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
        mtls = any(f.path == "tls.clientCa" for f in violations)
        reason = "MutualTlsNotConfigured" if mtls else "Weakened"
        updates.append(cond("BaselineCompliant", False, reason, text))
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


def conditions_factory(generation: int, now: str, previous: list[dict[str, Any]]) -> Cond:
    """A condition maker for one status update (keeps transition times of ``previous``)."""

    def make(type_: str, status: bool | None, reason: str, message: str) -> dict[str, Any]:
        return condition(
            type_, status, reason, message, generation=generation, now=now, previous=previous
        )

    return make


def same_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Every field of ``new`` is already in ``old`` (no write needed)."""
    return all(old.get(key) == value for key, value in new.items())
