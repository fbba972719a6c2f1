"""The ``SecurityBaseline`` status: what a baseline does, for the security team.

:func:`baseline_statuses` is pure: from the baselines, the Microgateways and their
namespaces' labels, each baseline's ``status`` (``observedGeneration``, the ``Accepted``
condition with the parse problems, and how many Microgateways it selects, clamps and finds
non-compliant, by the same :func:`~wardgate_operator.evaluation.evaluate` the operator
renders with). :func:`update_baseline_statuses` adds the API reads and writes (only when a
status changed). With ``--namespace`` the counts cover the watched namespaces only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wardgate_operator.baseline import ClusterBaseline, matching, namespace_labels
from wardgate_operator.evaluation import evaluate, now_rfc3339
from wardgate_operator.kube import (
    BASELINES_PATH,
    KubeApi,
    KubeError,
    microgateways_path,
    namespace_path,
)
from wardgate_operator.models import SpecError, parse_baseline_spec
from wardgate_operator.rendering import condition

Counts = dict[str, dict[str, int]]


def _counts(
    baselines: Sequence[ClusterBaseline],
    microgateways: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Mapping[str, str]],
) -> Counts:
    out: Counts = {b.name: {"selected": 0, "clamped": 0, "nonCompliant": 0} for b in baselines}
    for mgw in microgateways:
        meta = mgw.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        selected = matching(baselines, namespace_labels(namespace, labels.get(namespace)))
        if not selected:
            continue
        evaluation = evaluate(
            name=str(meta.get("name") or ""),
            namespace=namespace,
            uid=str(meta.get("uid") or ""),
            spec=mgw.get("spec"),
            baselines=selected,
        )
        for name, _ in selected:
            mine = [f for f in evaluation.findings if f.baseline == name]
            out[name]["selected"] += 1
            out[name]["clamped"] += any(f.kind == "clamp" for f in mine)
            out[name]["nonCompliant"] += any(f.kind != "clamp" for f in mine)
    return out


def baseline_statuses(
    baselines: Sequence[Mapping[str, Any]],
    microgateways: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Mapping[str, str]],
    now: str,
) -> dict[str, dict[str, Any]]:
    """Baseline name -> its new ``status``. ``labels``: namespace name -> its labels."""
    parsed: list[ClusterBaseline] = []
    problems: dict[str, list[str]] = {}
    for item in baselines:
        name = str((item.get("metadata") or {}).get("name"))
        try:
            parsed.append(ClusterBaseline(name, parse_baseline_spec(item.get("spec"))))
        except SpecError as exc:
            problems[name] = exc.problems
    counts = _counts(parsed, microgateways, labels)
    out = {}
    for item in baselines:
        meta = item.get("metadata") or {}
        name = str(meta.get("name"))
        generation = int(meta.get("generation") or 0)
        previous = list((item.get("status") or {}).get("conditions") or [])
        if name in problems:
            accepted = condition(
                "Accepted",
                False,
                "InvalidSpec",
                "; ".join(problems[name])
                + " (no Microgateway is rendered while a baseline does not parse)",
                generation=generation,
                now=now,
                previous=previous,
            )
            numbers = {"selected": 0, "clamped": 0, "nonCompliant": 0}
        else:
            accepted = condition(
                "Accepted",
                True,
                "Valid",
                "the baseline parsed",
                generation=generation,
                now=now,
                previous=previous,
            )
            numbers = counts[name]
        out[name] = {"observedGeneration": generation, "conditions": [accepted], **numbers}
    return out


async def update_baseline_statuses(api: KubeApi, namespaces: Sequence[str] = ()) -> int:
    """Write each baseline's status where it changed. Returns how many were written."""
    baselines = await api.list(BASELINES_PATH)
    if not baselines:
        return 0
    microgateways: list[dict[str, Any]] = []
    scopes: list[str | None] = list(namespaces) or [None]
    for scope in scopes:
        microgateways.extend(await api.list(microgateways_path(scope)))
    labels: dict[str, Mapping[str, str]] = {}
    for mgw in microgateways:
        namespace = str((mgw.get("metadata") or {}).get("namespace") or "")
        if namespace not in labels:
            ns = await api.get(namespace_path(namespace)) or {}
            labels[namespace] = (ns.get("metadata") or {}).get("labels") or {}
    statuses = baseline_statuses(baselines, microgateways, labels, now_rfc3339())
    written = 0
    for item in baselines:
        name = str((item.get("metadata") or {}).get("name"))
        old = item.get("status") or {}
        new = statuses[name]
        if all(old.get(key) == value for key, value in new.items()):
            continue
        try:
            await api.merge_patch(f"{BASELINES_PATH}/{name}/status", {"status": new})
            written += 1
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile
                raise
    return written
