"""Baselines in the cluster: which ``SecurityBaseline`` objects apply to a namespace, and
which Microgateways a baseline change affects. The merge itself is the gateway's pure
:func:`wardgate.config.baseline.apply_baselines` (the same code ``wardgate validate
--baseline`` runs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wardgate.config.baseline import SecurityBaselineSpec


@dataclass(frozen=True, slots=True)
class ClusterBaseline:
    """A parsed ``SecurityBaseline`` object."""

    name: str
    spec: SecurityBaselineSpec


def namespace_labels(name: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """A namespace's labels, with the ``kubernetes.io/metadata.name`` label the API server
    sets on every namespace (so a baseline can select namespaces by name offline too)."""
    out = dict(labels or {})
    out.setdefault("kubernetes.io/metadata.name", name)
    return out


def matching(
    baselines: Iterable[ClusterBaseline], labels: Mapping[str, str]
) -> list[tuple[str, SecurityBaselineSpec]]:
    """``(name, spec)`` of every baseline whose ``namespaceSelector`` matches ``labels``,
    sorted by name."""
    return sorted((b.name, b.spec) for b in baselines if b.spec.namespace_selector.matches(labels))
