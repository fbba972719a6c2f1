"""A small Dockerfile reader for the image tests: stages, their instructions (continuations
joined, comments dropped) and the chain of stages a target is built from."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            if current and not stripped:
                continue  # blank lines inside a continuation are allowed
            if not current:
                continue
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: {line}"
            stage = Stage(name=parts[2], base=parts[0])
            stages[stage.name] = stage
        else:
            assert stage is not None, f"{keyword} before FROM"
            stage.instructions.append((keyword, args))
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages ``target`` is built from, the external base image's child first."""
    out: list[Stage] = []
    name: str | None = target
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return list(reversed(out))


def root_image(stages: dict[str, Stage], target: str) -> str:
    return chain(stages, target)[0].base


def env(stages: dict[str, Stage], target: str) -> dict[str, str]:
    """ENV of ``target`` (``KEY=VALUE`` form), inherited along its chain."""
    out: dict[str, str] = {}
    for stage in chain(stages, target):
        for args in stage.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                out[key] = value
    return out


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD must be JSON (exec form: no shell, signals reach the process)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value
