"""Docs that cannot drift (issue 13, item 7): every label, annotation, image name, port or
object name, metric name and log field that README.md and docs/ name is checked against
what the code and the chart really use. A name on a line that says it is deprecated (or
what it "changed from") may be an old one; nowhere else."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.chart.render import CHART, NAMESPACE, RELEASE, VALUE_SETS, render
from tests.chart.test_chart_extras import _exported_series
from tests.conftest import ROOT
from tests.observability.records import REFUSED
from wardgate.observability.logs import ecs_access
from wardgate_operator import evaluation, injection, podports, propagation, reconciling, rendering
from wardgate_operator.models import API_VERSION

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OLD_NAME_MARKERS = ("deprecated", "changed from")

LABEL = re.compile(r"(?<![\w.])wardgate\.dev/[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
IMAGE = re.compile(r"ghcr\.io/wardgate/[a-z0-9][a-z0-9-]*")
NAME = re.compile(r"(?<![\w./<>-])(?:wardgate|wg)-[a-z0-9]+(?:-[a-z0-9]+)*(?![\w<])")
METRIC = re.compile(r"\bwardgate_[a-z0-9_]+[a-z0-9]")
LOG_FIELD = re.compile(r"(?<![\w/.-])wardgate\.[a-z_][A-Za-z_]*(?:\.[A-Za-z_]+)*")


def doc_lines() -> Iterator[tuple[str, str]]:
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{number}", line


def found(pattern: re.Pattern[str]) -> list[tuple[str, str, bool]]:
    """``(where, name, old_name_allowed)`` for each occurrence in the docs."""
    out = []
    for where, line in doc_lines():
        allowed_old = any(marker in line.lower() for marker in OLD_NAME_MARKERS)
        out.extend((where, m.group(0), allowed_old) for m in pattern.finditer(line))
    return out


def _constants(prefix: str) -> set[str]:
    """Module-level string constants starting with ``prefix`` in the operator modules."""
    out = set()
    for module in (injection, podports, rendering, reconciling, evaluation, propagation):
        out |= {v for v in vars(module).values() if isinstance(v, str) and v.startswith(prefix)}
    return out


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_the_collectors_find_what_the_docs_name():
    """The checks below are not vacuous: the docs name things of every kind."""
    assert len(found(LABEL)) > 10 and len(found(IMAGE)) >= 3 and len(found(METRIC)) > 10
    assert len(found(NAME)) > 10 and len(found(LOG_FIELD)) >= 5


def test_labels_and_annotations():
    values = _values()
    webhooks = values["webhooks"]
    # The chart's defaults are the code's names.
    assert webhooks["namespaceLabel"] == {
        "key": injection.NAMESPACE_LABEL,
        "value": injection.NAMESPACE_LABEL_VALUE,
    }
    assert webhooks["podOptOutLabel"]["key"] == injection.LABEL_OPT_OUT
    known = _constants("wardgate.dev/") | {
        API_VERSION,
        values["monitoring"]["serviceMonitor"]["serviceLabel"]["key"],
    }
    known.discard(injection.DEPRECATED_NAMESPACE_LABEL)
    wrong = [
        (where, name)
        for where, name, old_ok in found(LABEL)
        if name not in known and not (old_ok and name == injection.DEPRECATED_NAMESPACE_LABEL)
    ]
    assert wrong == []


def test_image_names():
    images = {image["repository"] for image in _values()["images"].values()}
    wrong = [(where, name) for where, name, _ in found(IMAGE) if name not in images]
    assert wrong == []


def _chart_names() -> set[str]:
    """Names of every object the chart renders, without the release prefix."""
    names = set()
    for values in VALUE_SETS.values():
        for obj in render(values).objects:
            name = str(obj["metadata"]["name"])
            names.add(name.removeprefix(f"{RELEASE}-"))
            for container in _containers(obj):
                names |= {str(p["name"]) for p in container.get("ports") or () if "name" in p}
    return names


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or (spec if obj["kind"] == "Pod" else {})
    yield from pod.get("containers") or ()


def test_port_container_and_object_names():
    values = _values()
    assert values["monitoring"]["portName"] == injection.STATUS_PORT_NAME
    known = _chart_names() | {
        injection.STATUS_PORT_NAME,
        injection.POLICY_VOLUME,
        injection.TMP_VOLUME,
        "wardgate-operator",  # the console script
        values["securityBaseline"]["name"],
        NAMESPACE,
    }
    wrong = [(where, n) for where, n, old_ok in found(NAME) if n not in known and not old_ok]
    assert wrong == []


def test_metric_names():
    exported = _exported_series()
    families = {re.sub(r"_(total|bucket|sum|count)$", "", s) for s in exported}
    wrong = [
        (where, name)
        for where, name, _ in found(METRIC)
        if name not in exported and name not in families
    ]
    assert wrong == []


def _log_fields() -> set[str]:
    # Every optional field set, so that every field the log can carry is in the document.
    record = dataclasses.replace(REFUSED, upstream_service_time_ms=1, upstream_host="u")
    doc = json.loads(ecs_access(record))

    def flatten(prefix: str, node: Any) -> Iterator[str]:
        yield prefix
        if isinstance(node, dict):
            for key, value in node.items():
                yield from flatten(f"{prefix}.{key}", value)

    return set(flatten("wardgate", doc["wardgate"])) | {"wardgate.access", "wardgate.gateway"}


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def test_the_log_field_check_catches_the_old_name():
    assert "wardgate.ruleIds" not in _log_fields()
    assert not _is_module("wardgate.ruleIds")


def test_log_fields():
    fields = _log_fields()
    assert "wardgate.rule_ids" in fields and "wardgate.policy.digest" in fields
    wrong = [
        (where, name)
        for where, name, _ in found(LOG_FIELD)
        if not name.startswith("wardgate.dev")
        and name not in fields
        and not _is_module(name)
        and not (name.count(".") > 1 and _is_module(name.rsplit(".", 1)[0]))  # module.attr
    ]
    assert wrong == []
