"""Response checking (status and JSON body against the declared ``responses``) and
stripping of JSON properties the response schema does not declare.

The stripper is compiled from the OpenAPI schema once: a tree of "which properties may
stay" per object schema (the union of ``properties`` over ``allOf``/``anyOf``/``oneOf``
members, so nothing any branch declares is removed), shared across ``$ref`` cycles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wardgate.filters.openapi.document import Document, SpecError


@dataclass(slots=True, eq=False)
class Stripper:
    """Which properties survive at one schema position. ``closed``: the schema lists its
    properties and does not allow others, so undeclared keys are removed here."""

    closed: bool = False
    properties: dict[str, Stripper] = field(default_factory=dict)
    additional: Stripper | None = None
    items: Stripper | None = None

    def strip(self, value: Any) -> int:
        """Remove undeclared properties in place; returns how many were removed."""
        removed = 0
        if isinstance(value, dict):
            for key in list(value):
                child = self.properties.get(key)
                if child is not None:
                    removed += child.strip(value[key])
                elif self.closed:
                    del value[key]
                    removed += 1
                elif self.additional is not None:
                    removed += self.additional.strip(value[key])
        elif isinstance(value, list) and self.items is not None:
            for item in value:
                removed += self.items.strip(item)
        return removed


OPEN = Stripper()


class StripperBuilder:
    """Builds strippers for one document, memoised per schema object (cycles allowed)."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self._memo: dict[int, Stripper] = {}

    def build(self, schema: Any, depth: int = 0) -> Stripper:
        if not isinstance(schema, dict) or depth > 64:
            return OPEN
        try:
            resolved = self.document.resolve(schema)
        except SpecError:
            return OPEN
        if not isinstance(resolved, dict):
            return OPEN
        found = self._memo.get(id(resolved))
        if found is not None:
            return found
        node = Stripper()
        self._memo[id(resolved)] = node
        self._fill(node, resolved, depth)
        return node

    def _fill(self, node: Stripper, schema: dict[str, Any], depth: int) -> None:
        members = [m for key in ("allOf", "anyOf", "oneOf") for m in schema.get(key) or []]
        open_ = False
        declared = False
        props = schema.get("properties")
        if isinstance(props, dict):
            declared = True
            for name, prop in props.items():
                node.properties[name] = self.build(prop, depth + 1)
        extra = schema.get("additionalProperties")
        if extra is True or isinstance(schema.get("patternProperties"), dict):
            open_ = True
        elif isinstance(extra, dict):
            open_ = True
            node.additional = self.build(extra, depth + 1)
        if isinstance(schema.get("items"), dict):
            node.items = self.build(schema["items"], depth + 1)
        for member in members:
            sub = self.build(member, depth + 1)
            for name, child in sub.properties.items():
                node.properties.setdefault(name, child)
            if sub.properties:
                declared = True
            if not sub.closed and not sub.properties:
                open_ = True
            node.items = node.items or sub.items
            node.additional = node.additional or sub.additional
        node.closed = declared and not open_
