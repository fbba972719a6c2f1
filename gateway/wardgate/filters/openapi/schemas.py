"""OpenAPI schemas to compiled JSON Schema 2020-12 validators (jsonschema-rs).

Every schema is translated once, at policy compile time, into a self-contained JSON Schema
whose ``$defs`` hold exactly the referenced component schemas it reaches (so ``$ref``
cycles - recursive trees - stay references, never infinite expansions):

* OpenAPI 3.0 dialect: ``nullable`` becomes a ``null`` type, boolean ``exclusiveMinimum`` /
  ``exclusiveMaximum`` become numeric ones, siblings of ``$ref`` are ignored (as 3.0 says),
  ``int32``/``int64`` become ranges, ``byte`` is checked as base64.
* Direction: in requests a ``readOnly`` property must not be sent (mass assignment) and is
  not required; in responses the same holds for ``writeOnly``.
* ``strict``: object schemas that list properties and say nothing about additional ones get
  ``unevaluatedProperties: false`` (not ``additionalProperties``, so ``allOf`` compositions
  keep working; members of ``allOf``/``anyOf``/``oneOf`` are left open and their parent is
  closed instead).

Patterns use the linear-time ``regex`` engine (:class:`jsonschema_rs.RegexOptions`), never a
backtracking one: a pattern needing look-around is refused at load with a clear message.

Violations name where (``body:$.items[0].name``) and which constraint failed, never the
value that failed it."""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema_rs

from wardgate.filters.api import Violation
from wardgate.filters.openapi.document import Document, SpecError

Direction = Literal["request", "response"]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
    "contentSchema",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_COMPOSITIONS = ("allOf", "anyOf", "oneOf")
_OPEN_KEYWORDS = ("additionalProperties", "unevaluatedProperties", "patternProperties")
_OAS30_ONLY = ("nullable", "example", "discriminator", "xml", "externalDocs", "deprecated")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


FORMATS: dict[str, Callable[[str], bool]] = {"byte": _is_base64}


class _Translator:
    """Translates the schemas of one document for one direction and strictness."""

    def __init__(self, document: Document, direction: Direction, strict: bool) -> None:
        self.document = document
        self.oas30 = document.version == "3.0"
        self.direction = direction
        self.strict = strict
        self.defs: dict[str, Any] = {}
        self.keys: dict[tuple[str, bool], str] = {}
        self.edges: dict[str, set[str]] = {}

    def ref_key(self, ref: str, member: bool) -> str:
        """The ``$defs`` key of a referenced schema, translating it on first use."""
        found = self.keys.get((ref, member))
        if found is not None:
            return found
        key = f"s{len(self.keys)}{'m' if member else ''}"
        self.keys[(ref, member)] = key
        self.defs[key] = True  # placeholder: a cycle back to this key is just a reference
        refs: set[str] = set()
        self.edges[key] = refs
        self.defs[key] = self.schema(self.document.pointer(ref), member, refs)
        return key

    def schema(self, node: Any, member: bool, refs: set[str]) -> Any:
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            raise SpecError(["a schema must be an object"])
        ref = node.get("$ref")
        if isinstance(ref, str):
            key = self.ref_key(ref, member)
            refs.add(key)
            if self.oas30 or len(node) == 1:
                return {"$ref": f"#/$defs/{key}"}
            rest = {k: v for k, v in node.items() if k != "$ref"}
            combined: dict[str, Any] = self.schema(rest, member, refs)
            combined["$ref"] = f"#/$defs/{key}"
            return combined
        out: dict[str, Any] = {}
        for keyword, value in node.items():
            if keyword in _SCHEMA_MAPS and isinstance(value, dict):
                out[keyword] = {k: self.schema(v, False, refs) for k, v in value.items()}
            elif keyword in _SCHEMA_ONE and isinstance(value, dict | bool):
                out[keyword] = self.schema(value, False, refs)
            elif keyword in _SCHEMA_LISTS and isinstance(value, list):
                is_member = keyword in _COMPOSITIONS
                out[keyword] = [self.schema(v, is_member, refs) for v in value]
            elif self.oas30 and keyword in _OAS30_ONLY:
                continue
            else:
                out[keyword] = value
        if self.oas30:
            self._oas30(node, out)
        self._formats(out)
        self._direction(node, out)
        if self.strict and not member and self._closable(out):
            out["unevaluatedProperties"] = False
        return out

    def _oas30(self, node: dict[str, Any], out: dict[str, Any]) -> None:
        if node.get("nullable") is True and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        for bound, exclusive in (
            ("minimum", "exclusiveMinimum"),
            ("maximum", "exclusiveMaximum"),
        ):
            flag = out.get(exclusive)
            if isinstance(flag, bool):
                del out[exclusive]
                if flag and bound in out:
                    out[exclusive] = out.pop(bound)

    @staticmethod
    def _formats(out: dict[str, Any]) -> None:
        limits = _INT_RANGES.get(str(out.get("format")))
        if limits is not None:
            low, high = limits
            out["allOf"] = [*out.get("allOf", []), {"minimum": low, "maximum": high}]

    def _direction(self, node: dict[str, Any], out: dict[str, Any]) -> None:
        props = node.get("properties")
        if not isinstance(props, dict):
            return
        hidden = "readOnly" if self.direction == "request" else "writeOnly"
        banned = {
            name for name, prop in props.items() if self._flag(prop, hidden) and name in props
        }
        if not banned:
            return
        for name in banned:
            out["properties"][name] = False
        required = out.get("required")
        if isinstance(required, list):
            out["required"] = [name for name in required if name not in banned]

    def _flag(self, prop: Any, flag: str) -> bool:
        if not isinstance(prop, dict):
            return False
        if prop.get(flag) is True:
            return True
        try:
            target = self.document.resolve(prop)
        except SpecError:
            return False
        return isinstance(target, dict) and target.get(flag) is True

    @staticmethod
    def _closable(out: dict[str, Any]) -> bool:
        if any(k in out for k in _OPEN_KEYWORDS):
            return False
        kind = out.get("type")
        if (
            kind is not None
            and kind != "object"
            and not (isinstance(kind, list) and "object" in kind)
        ):
            return False
        return "properties" in out or any(k in out for k in _COMPOSITIONS) or "$ref" in out

    def closure(self, roots: set[str]) -> dict[str, Any]:
        """The ``$defs`` reachable from ``roots``."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            stack.extend(self.edges.get(key, ()))
        return {key: self.defs[key] for key in sorted(seen)}


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """One compiled validator. ``check`` is the fast path; ``violations`` explains."""

    validator: Any

    def check(self, instance: Any) -> bool:
        try:
            return bool(self.validator.is_valid(instance))
        except UnicodeEncodeError:
            return False  # a lone surrogate (JSON "\ud800"): not valid text

    def violations(self, instance: Any, location: str, json_path: bool) -> list[Violation]:
        """One violation per failed constraint (at most 10), located ``location`` for
        parameters or ``location:$.a[0]`` for bodies; values are never included."""
        out: list[Violation] = []
        try:
            errors = list(itertools.islice(self.validator.iter_errors(instance), 10))
        except UnicodeEncodeError:
            return [Violation("openapi.unicode", location, "contains a lone surrogate")]
        seen: set[tuple[str, str]] = set()
        for error in errors:
            base = list(error.instance_path)
            kind = type(error.kind).__name__
            unexpected = getattr(error.kind, "unexpected", None)
            if kind in ("AdditionalProperties", "UnevaluatedProperties") and unexpected:
                # Name each undeclared property (body:$.extra), not the object holding it.
                paths = [[*base, str(name)] for name in unexpected]
                message = "property the schema does not declare"
            else:
                paths, message = [base], _message(error)
            for parts in paths:
                where = location + (":" + _json_path(parts) if json_path else "")
                key = (_rule(error), where)
                if key in seen:
                    continue  # one violation per rule and location
                seen.add(key)
                out.append(Violation(key[0], where, message))
            if len(out) >= 10:
                break
        return out[:10] or [Violation("openapi.schema", location, "does not match the schema")]


class SchemaCompiler:
    """Compiles schemas of one document; one instance per (direction, strictness)."""

    def __init__(self, document: Document, direction: Direction, strict: bool) -> None:
        self._translator = _Translator(document, direction, strict)
        self._cache: dict[int, CompiledSchema] = {}

    def translate(self, schema: Any) -> Any:
        """The self-contained JSON Schema for ``schema`` (for tests and ``explain``)."""
        refs: set[str] = set()
        try:
            out = self._translator.schema(schema, False, refs)
        except RecursionError:
            raise SpecError(["a schema is nested too deeply"]) from None
        if refs:
            if isinstance(out, bool):
                out = {"allOf": [out]}
            out = {**out, "$defs": {**out.get("$defs", {}), **self._translator.closure(refs)}}
        return out

    def compile(self, schema: Any, where: str) -> CompiledSchema:
        """Compile ``schema`` (found at ``where`` in the spec, for error messages)."""
        cached = self._cache.get(id(schema))
        if cached is not None:
            return cached
        translated = self.translate(schema)
        try:
            validator = jsonschema_rs.Draft202012Validator(
                translated,
                validate_formats=True,
                formats=FORMATS,
                pattern_options=jsonschema_rs.RegexOptions(),
            )
        except jsonschema_rs.ValidationError as exc:
            raise SpecError([f"{where}: invalid schema ({_schema_problem(exc)})"]) from None
        except (ValueError, jsonschema_rs.ReferencingError) as exc:
            text = " ".join(str(exc).split())[:200]
            raise SpecError([f"{where}: invalid schema ({text})"]) from None
        compiled = CompiledSchema(validator)
        self._cache[id(schema)] = compiled
        return compiled


def _schema_problem(exc: Any) -> str:
    text = " ".join(str(getattr(exc, "message", exc)).split())
    if "regex" in text:
        return f"{text}; patterns use a linear-time engine without look-around or back-references"
    return text[:200]


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            safe = name.isidentifier() and len(name) <= 64
            out += f".{name}" if safe else "[" + repr(name[:64]) + "]"
    return out


def _keyword(error: Any) -> str:
    for part in reversed(list(error.schema_path)):
        if isinstance(part, str):
            return part
    return "schema"


def _rule(error: Any) -> str:
    return f"openapi.schema.{_keyword(error)}"


def _message(error: Any) -> str:
    kind = type(error.kind).__name__
    details = error.kind.as_dict() if hasattr(error.kind, "as_dict") else {}
    if kind == "Required":
        prop = str(details.get("property", ""))[:64]
        return f"missing required property {prop}"
    if kind == "Type":
        types = details.get("types") or details.get("type")
        if isinstance(types, list):
            types = " or ".join(str(t) for t in sorted(types))
        return f"must be of type {types}" if types else "has the wrong type"
    if kind in ("UnevaluatedProperties", "AdditionalProperties"):
        return "has properties the schema does not declare"
    if kind == "FalseSchema":
        return "is not allowed here (undeclared, read-only or write-only)"
    if kind in ("Minimum", "Maximum", "ExclusiveMinimum", "ExclusiveMaximum", "MultipleOf"):
        return f"violates {_keyword(error)} {details.get('limit', details.get('multiple_of', ''))}"
    if kind in ("MinLength", "MaxLength", "MinItems", "MaxItems", "MinProperties"):
        return f"violates {_keyword(error)} {details.get('limit', '')}"
    if kind == "Format":
        return f"is not a valid {details.get('format', 'value')}"
    if kind == "Enum":
        return "is not one of the allowed values"
    return f"violates {_keyword(error)}"
