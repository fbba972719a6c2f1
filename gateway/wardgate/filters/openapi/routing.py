"""The route matcher: a trie over path segments, built once per policy.

Matching walks one node per request segment: a literal child is a dict lookup, template
children (``{id}``, ``{name}.{ext}``, ``v{version}``) are tried after it, so the cost
depends on the request's depth, not on the number of operations. Literal segments take
precedence over templated ones (OpenAPI: "concrete paths are matched before templated
paths"); when both could match, the literal branch is tried first and the template branch
only if the literal one leads nowhere.

Captured values stay percent-encoded: parameter styles (label, matrix) split on delimiters
before decoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class TemplateError(ValueError):
    """A path template that cannot be compiled (message names the problem)."""


@dataclass(frozen=True, slots=True)
class SegmentTemplate:
    """One templated segment: alternating literals and parameter names. ``parts[0]`` and
    ``parts[-1]`` are literals (possibly empty); odd indexes are parameter names."""

    parts: tuple[str, ...]

    def match(self, segment: str) -> dict[str, str] | None:
        """Captures for ``segment`` or ``None``. Each capture is non-empty and, between two
        literals, extends to the next occurrence of the following literal (leftmost)."""
        prefix, suffix = self.parts[0], self.parts[-1]
        if not segment.startswith(prefix) or not segment.endswith(suffix):
            return None
        end = len(segment) - len(suffix)
        if end < len(prefix):
            return None
        rest = segment[len(prefix) : end]
        captures: dict[str, str] = {}
        names = self.parts[1::2]
        literals = self.parts[2:-1:2]
        for i, name in enumerate(names):
            if i < len(literals):
                literal = literals[i]
                cut = rest.find(literal, 1)
                if cut < 1:
                    return None
                captures[name] = rest[:cut]
                rest = rest[cut + len(literal) :]
            else:
                if not rest:
                    return None
                captures[name] = rest
        return captures


def parse_segment(segment: str) -> str | SegmentTemplate:
    """A literal segment, or a template for one with ``{name}`` parts."""
    if "{" not in segment and "}" not in segment:
        return segment
    parts: list[str] = []
    literal = ""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "{":
            close = segment.find("}", i)
            if close < 0:
                raise TemplateError(f"unclosed '{{' in segment {segment!r}")
            name = segment[i + 1 : close]
            if not name or "{" in name:
                raise TemplateError(f"bad parameter name in segment {segment!r}")
            if len(parts) % 2 == 1 and literal == "":
                raise TemplateError(f"two parameters without a literal between them in {segment!r}")
            parts.extend([literal, name])
            literal = ""
            i = close + 1
        elif ch == "}":
            raise TemplateError(f"unbalanced '}}' in segment {segment!r}")
        else:
            literal += ch
            i += 1
    parts.append(literal)
    return SegmentTemplate(tuple(parts))


@dataclass(slots=True)
class _Node(Generic[T]):
    literals: dict[str, _Node[T]] = field(default_factory=dict)
    templates: list[tuple[SegmentTemplate, _Node[T]]] = field(default_factory=list)
    value: T | None = None
    template: str = ""


class Router(Generic[T]):
    """Maps request paths to the value registered for the matching template."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, template: str, value: T) -> None:
        """Register ``template`` (``/pets/{petId}``). Two templates that differ only in
        parameter names (``/a/{x}`` and ``/a/{y}``) are ambiguous and refused."""
        if not template.startswith("/"):
            raise TemplateError(f"path {template!r} must start with '/'")
        node = self._root
        for raw in template[1:].split("/"):
            segment = parse_segment(raw)
            if isinstance(segment, str):
                node = node.literals.setdefault(segment, _Node())
                continue
            for existing, child in node.templates:
                if existing == segment:
                    node = child
                    break
                if _same_shape(existing, segment):
                    raise TemplateError(
                        f"path {template!r} is ambiguous with another path (same template "
                        "with different parameter names)"
                    )
            else:
                child = _Node()
                node.templates.append((segment, child))
                # Longer literal parts first: `{id}.json` before `{id}`.
                node.templates.sort(key=lambda item: -sum(len(p) for p in item[0].parts[::2]))
                node = child
        if node.value is not None:
            raise TemplateError(f"path {template!r} is declared twice")
        node.value = value
        node.template = template
        self._count += 1

    def match(self, path: str) -> tuple[T, str, dict[str, str]] | None:
        """``(value, template, captures)`` for ``path`` (starting with ``/``)."""
        segments = path[1:].split("/")
        captures: dict[str, str] = {}
        node = _walk(self._root, segments, 0, captures)
        if node is None or node.value is None:
            return None
        return node.value, node.template, captures


def _same_shape(a: SegmentTemplate, b: SegmentTemplate) -> bool:
    return a.parts[::2] == b.parts[::2]


def _walk(
    node: _Node[T], segments: list[str], index: int, captures: dict[str, str]
) -> _Node[T] | None:
    if index == len(segments):
        return node if node.value is not None else None
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        found = _walk(child, segments, index + 1, captures)
        if found is not None:
            return found
    for template, sub in node.templates:
        got = template.match(segment)
        if got is None:
            continue
        found = _walk(sub, segments, index + 1, captures)
        if found is not None:
            captures.update(got)
            return found
    return None
