"""``wardgate validate`` without the printing: each document of each file validated and,
for policies, compiled with the code the sidecar runs. Pure; the CLI formats the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wardgate.config.manifests import Document, read_documents
from wardgate.runtime.compiled import CompiledPolicy, PolicyCompileError, compile_policy


@dataclass
class Result:
    """The verdict on one document."""

    document: Document
    compiled: CompiledPolicy | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        """The machine-readable form (``wardgate validate -o json``)."""
        doc: dict[str, object] = {
            "source": self.document.source,
            "kind": self.document.kind,
            "name": self.document.name,
            "valid": self.valid,
            "problems": self.problems,
            "notes": self.notes,
        }
        if self.compiled is not None:
            doc["digest"] = self.compiled.digest
            doc["filters"] = list(self.compiled.filter_names())
        return doc


def validate_file(path: str | Path) -> list[Result]:
    """One :class:`Result` per Wardgate document in ``path``."""
    out = []
    for document in read_documents(path):
        result = Result(document, problems=list(document.problems))
        if document.policy is not None:
            try:
                result.compiled = compile_policy(document.policy)
            except PolicyCompileError as exc:
                result.problems.extend(exc.problems)
            else:
                result.notes.extend(result.compiled.limitations())
        out.append(result)
    return out
