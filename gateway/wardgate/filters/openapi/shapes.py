"""The *shape* of a schema: what JSON type(s) a string from a URL, header, cookie or form
field should become before schema validation. Computed once per parameter at compile time.

Strings arrive untyped (``?limit=10``); OpenAPI says the schema's type decides. A value
that cannot be converted is left a string, so the schema check then reports a type
violation instead of the gateway guessing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from wardgate.filters.openapi.document import Document, SpecError

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "off", "0"})
"""Booleans in URLs, headers and forms have no standard spelling; these are the ones
openapi-core (the reference) and most web frameworks accept, case-insensitively."""


@dataclass(frozen=True, slots=True)
class Shape:
    """``types``: the JSON types the schema allows (empty: any). ``items``: the shape of
    array items; ``properties``: shapes of named object properties; ``additional``:
    whether an object takes undeclared properties."""

    types: frozenset[str] = frozenset()
    items: Shape | None = None
    properties: dict[str, Shape] = field(default_factory=dict)
    additional: bool = True

    @property
    def is_array(self) -> bool:
        return "array" in self.types and "object" not in self.types

    @property
    def is_object(self) -> bool:
        return "object" in self.types and "array" not in self.types


ANY = Shape()


def shape_of(document: Document, schema: Any, depth: int = 0) -> Shape:
    """The shape of ``schema`` (following ``$ref`` and compositions, bounded depth)."""
    if depth > 16 or not isinstance(schema, dict):
        return ANY
    try:
        schema = document.resolve(schema)
    except SpecError:
        return ANY
    if not isinstance(schema, dict):
        return ANY
    types: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(t for t in declared if isinstance(t, str))
    if schema.get("nullable") is True and types:
        types.add("null")
    items: Shape | None = None
    properties: dict[str, Shape] = {}
    additional = schema.get("additionalProperties", True) is not False
    if isinstance(schema.get("items"), dict):
        items = shape_of(document, schema["items"], depth + 1)
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(name, str):
            properties[name] = shape_of(document, prop, depth + 1)
    members = [m for key in ("allOf", "anyOf", "oneOf") for m in schema.get(key) or []]
    for member in members:
        sub = shape_of(document, member, depth + 1)
        if not types or "allOf" not in schema:
            types.update(sub.types)
        items = items or sub.items
        for name, prop_shape in sub.properties.items():
            properties.setdefault(name, prop_shape)
        additional = additional and sub.additional
    if not types and properties:
        types.add("object")
    if not types and items is not None:
        types.add("array")
    return Shape(frozenset(types), items, properties, additional)


def coerce(text: str, shape: Shape) -> Any:
    """``text`` as the first of the shape's scalar types it converts to; else itself."""
    types = shape.types
    if not types or "string" in types:
        return text
    if "integer" in types and _is_integer(text):
        return int(text)
    if "number" in types and _is_number(text):
        number = float(text)
        if math.isfinite(number):
            return int(text) if _is_integer(text) else number
    if "boolean" in types:
        lowered = text.lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
    if "null" in types and text in ("", "null"):
        return None
    return text


def _is_integer(text: str) -> bool:
    digits = text[1:] if text[:1] in ("-", "+") else text
    return 0 < len(digits) <= 40 and digits.isascii() and digits.isdigit()


def _is_number(text: str) -> bool:
    if not text or len(text) > 64 or not text.isascii():
        return False
    allowed = set("0123456789+-.eE")
    if any(ch not in allowed for ch in text):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True
