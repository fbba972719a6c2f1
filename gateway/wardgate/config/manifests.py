"""Reading what GitOps repositories hold: a policy file, or Kubernetes manifests
(multi-document YAML) with ``Microgateway`` and ``SecurityBaseline`` resources among other
objects. ``wardgate validate`` checks each with the same models the operator uses.

Contract of :func:`read_documents`:

* A file whose single document has no ``kind`` is a policy file, exactly as ``wardgate run
  --policy`` reads it.
* Otherwise every document with ``apiVersion: wardgate.dev/...`` is read: a ``Microgateway``'s
  ``spec`` without the cluster fields (:data:`CLUSTER_FIELDS`, checked by the operator and
  its webhook) is the policy; a ``SecurityBaseline``'s ``spec`` is a baseline. Other objects
  (Deployments, Services...) are skipped; a file with no Wardgate document is an error.
* Problems never raise: each :class:`Document` carries its own, paths prefixed ``spec.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wardgate.config.baseline import SecurityBaselineSpec
from wardgate.config.loading import (
    MAX_POLICY_BYTES,
    PolicyError,
    _check_nesting,
    _check_size,
    _StrictLoader,
    format_validation_errors,
    validate_document,
)
from wardgate.config.policy import PolicySpec

GROUP = "wardgate.dev"

CLUSTER_FIELDS = (
    "podSelector",
    "servicePort",
    "appPort",
    "portName",
    "sidecar",
    "networkPolicy",
    "tls",
)
"""Top-level ``Microgateway`` ``spec`` fields that are not part of the policy document."""


@dataclass
class Document:
    """One validated (or not) document of a file."""

    source: str
    """``FILE`` for a policy file, ``FILE#N Kind/name`` for a manifest."""
    kind: str
    """``Policy``, ``Microgateway`` or ``SecurityBaseline``."""
    name: str
    policy: PolicySpec | None = None
    baseline: SecurityBaselineSpec | None = None
    problems: list[str] = field(default_factory=list)


def _parse(path: str | Path) -> list[Any] | Document:
    """The YAML documents in ``path``, or a ``Policy`` document carrying why it cannot be
    read (unreadable, too large or deep, not UTF-8, not YAML)."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError(source, [f"the file is larger than {MAX_POLICY_BYTES} bytes"])
        text = raw.decode("utf-8")
        _check_nesting(text, source)  # the same bounds as a policy file, before parsing
        docs = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
        for doc in docs:
            _check_size(doc, source)
    except OSError as exc:
        return Document(source, "Policy", source, problems=[f"cannot read the file: {exc}"])
    except UnicodeDecodeError as exc:
        return Document(source, "Policy", source, problems=[f"not UTF-8 text (byte {exc.start})"])
    except yaml.YAMLError as exc:
        problem = f"not valid YAML: {' '.join(str(exc).split())}"
        return Document(source, "Policy", source, problems=[problem])
    except PolicyError as exc:
        return Document(source, "Policy", source, problems=exc.problems)
    return docs


def read_documents(path: str | Path) -> list[Document]:
    """Every Wardgate document in ``path`` (see the module docstring)."""
    source = str(path)
    docs = _parse(path)
    if isinstance(docs, Document):
        return [docs]
    base_dir = Path(path).absolute().parent
    if len(docs) <= 1 and not (docs and isinstance(docs[0], Mapping) and "kind" in docs[0]):
        return [_policy(docs[0] if docs else {}, source, source, "Policy", base_dir, "")]
    out = []
    for index, doc in enumerate(docs, 1):
        if not isinstance(doc, Mapping) or not str(doc.get("apiVersion", "")).startswith(
            f"{GROUP}/"
        ):
            continue
        kind = str(doc.get("kind"))
        name = str((doc.get("metadata") or {}).get("name") or f"document-{index}")
        where = f"{source}#{index} {kind}/{name}"
        spec = doc.get("spec")
        if kind == "Microgateway":
            policy_part = (
                {k: v for k, v in spec.items() if k not in CLUSTER_FIELDS}
                if isinstance(spec, Mapping)
                else spec
            )
            out.append(_policy(policy_part, where, name, kind, base_dir, "spec."))
        elif kind == "SecurityBaseline":
            out.append(_baseline(spec, where, name))
        else:
            out.append(Document(where, kind, name, problems=[f"unknown kind {kind!r}"]))
    if not out:
        problem = "no policy, Microgateway or SecurityBaseline in the file"
        return [Document(source, "Policy", source, problems=[problem])]
    return out


def _policy(data: Any, where: str, name: str, kind: str, base_dir: Path, prefix: str) -> Document:
    if not isinstance(data, Mapping):
        return Document(where, kind, name, problems=[f"{prefix or '(document)'}: not a mapping"])
    try:
        return Document(where, kind, name, policy=validate_document(data, where, base_dir))
    except PolicyError as exc:
        return Document(where, kind, name, problems=[prefix + p for p in exc.problems])


def _baseline(spec: Any, where: str, name: str) -> Document:
    try:
        baseline = SecurityBaselineSpec.model_validate(spec if spec is not None else {})
    except ValidationError as exc:
        problems = [f"spec.{line}" for line in format_validation_errors(exc)]
        return Document(where, "SecurityBaseline", name, problems=problems)
    return Document(where, "SecurityBaseline", name, baseline=baseline)
