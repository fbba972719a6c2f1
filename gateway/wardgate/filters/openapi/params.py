"""Parameters: deserialising path, query, header and cookie values by their ``style`` and
``explode`` (OpenAPI 3 "Style Values"), converting strings by the schema's shape, then
validating with the compiled schema.

A :class:`ParamPlan` is built per parameter at compile time; :func:`check_params` applies
an operation's plans to one request. Nothing here is a regular expression: splitting is
``str.split``/``partition`` only, linear in the input."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from wardgate.filters.api import Violation
from wardgate.filters.openapi.schemas import CompiledSchema
from wardgate.filters.openapi.shapes import Shape, coerce

DEFAULT_STYLE = {"path": "simple", "query": "form", "header": "simple", "cookie": "form"}
ALLOWED_STYLES = {
    "path": frozenset({"simple", "label", "matrix"}),
    "query": frozenset({"form", "spaceDelimited", "pipeDelimited", "deepObject"}),
    "header": frozenset({"simple"}),
    "cookie": frozenset({"form"}),
}


class _Invalid(Exception):
    """A value that cannot be deserialised by its style (message is safe to show)."""


@dataclass(frozen=True, slots=True)
class ParamPlan:
    """One declared parameter, compiled."""

    name: str
    location: str
    """``path``, ``query``, ``header`` or ``cookie``."""
    required: bool
    style: str
    explode: bool
    shape: Shape
    schema: CompiledSchema | None
    json_content: bool
    """Declared with ``content: application/json`` instead of ``schema``."""
    allow_empty: bool

    @property
    def label(self) -> str:
        return f"{self.location}:{self.name}"

    @property
    def claims_exploded_properties(self) -> bool:
        """A query object in ``form``/explode style spreads its properties as top-level
        query parameters (``?color=red&size=L``)."""
        return (
            self.location == "query"
            and self.style == "form"
            and self.explode
            and self.shape.is_object
            and not self.json_content
        )


@dataclass(slots=True)
class RequestParams:
    """One request's raw parameter sources, parsed once."""

    path: dict[str, str]
    """Path template captures, still percent-encoded (styles split before decoding)."""
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    cookies: dict[str, str]


def parse_query(query: str) -> dict[str, list[str]]:
    """``a=1&b=2&a=3`` to ``{"a": ["1", "3"], "b": ["2"]}`` (``+`` is a space, as in
    forms). Malformed escapes are kept literally, never an error."""
    out: dict[str, list[str]] = {}
    if not query:
        return out
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        key = unquote(name.replace("+", " "))
        out.setdefault(key, []).append(unquote(value.replace("+", " ")))
    return out


def parse_cookies(header: str | None) -> dict[str, str]:
    """The ``Cookie`` header's name/value pairs (RFC 6265 syntax; first one wins)."""
    out: dict[str, str] = {}
    if not header:
        return out
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in out:
            out[name] = value.strip()
    return out


def check_params(plans: tuple[ParamPlan, ...], params: RequestParams, out: list[Violation]) -> None:
    """Append a violation per missing or invalid parameter to ``out``."""
    for plan in plans:
        try:
            present, value = _extract(plan, params)
        except _Invalid as exc:
            out.append(Violation("openapi.parameter.style", plan.label, str(exc)))
            continue
        if not present:
            if plan.required:
                out.append(
                    Violation(
                        "openapi.parameter.required", plan.label, "required parameter is missing"
                    )
                )
            continue
        if plan.schema is not None and not plan.schema.check(value):
            out.extend(plan.schema.violations(value, plan.label, json_path=False))


def _extract(plan: ParamPlan, params: RequestParams) -> tuple[bool, Any]:
    location = plan.location
    if location == "path":
        raw = params.path.get(plan.name)
        if raw is None:
            return False, None
        return True, _path_value(plan, raw)
    if location == "query":
        return _query_value(plan, params.query)
    if location == "header":
        header = params.headers.get(plan.name)
        if header is None:
            return False, None
        return True, _simple(plan, header.strip(), decode=False)
    cookie = params.cookies.get(plan.name)
    if cookie is None:
        return False, None
    return True, _delimited(plan, unquote(cookie), ",")


def _content(plan: ParamPlan, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _Invalid("is not valid JSON") from None


def _path_value(plan: ParamPlan, raw: str) -> Any:
    if plan.json_content:
        return _content(plan, unquote(raw))
    if plan.style == "label":
        if not raw.startswith("."):
            raise _Invalid("label style values start with '.'")
        body = raw[1:]
        if plan.explode and (plan.shape.is_array or plan.shape.is_object):
            return _items_or_pairs(plan, body.split("."), exploded=True)
        return _simple(plan, body, decode=True)
    if plan.style == "matrix":
        if not raw.startswith(";"):
            raise _Invalid("matrix style values start with ';'")
        parts = raw[1:].split(";")
        if plan.explode and plan.shape.is_object:
            return _items_or_pairs(plan, parts, exploded=True)
        values = []
        for part in parts:
            name, eq, value = part.partition("=")
            if unquote(name) != plan.name:
                raise _Invalid("matrix style value names another parameter")
            values.append(value if eq else "")
        if plan.shape.is_array:
            if plan.explode:
                return [coerce(unquote(v), _item(plan)) for v in values]
            return _simple(plan, values[0] if len(values) == 1 else ",".join(values), True)
        if len(values) != 1:
            raise _Invalid("given more than once")
        return _simple(plan, values[0], decode=True)
    return _simple(plan, raw, decode=True)


def _item(plan: ParamPlan) -> Shape:
    return plan.shape.items or Shape()


def _simple(plan: ParamPlan, text: str, decode: bool) -> Any:
    """``simple`` style (also the body of label/matrix values): comma-separated arrays,
    ``k,v,k,v`` objects (``k=v,k=v`` exploded)."""
    if plan.json_content:
        return _content(plan, unquote(text) if decode else text)
    if plan.shape.is_array or plan.shape.is_object:
        return _items_or_pairs(plan, text.split(","), exploded=plan.explode, decode=decode)
    return coerce(unquote(text) if decode else text, plan.shape)


def _items_or_pairs(plan: ParamPlan, parts: list[str], exploded: bool, decode: bool = True) -> Any:
    def dec(text: str) -> str:
        return unquote(text) if decode else text

    if plan.shape.is_array:
        if parts == [""]:
            return []
        return [coerce(dec(p), _item(plan)) for p in parts]
    result: dict[str, Any] = {}
    if exploded:
        for part in parts:
            key, eq, value = part.partition("=")
            if not eq:
                raise _Invalid("exploded object values are key=value pairs")
            name = dec(key)
            result[name] = coerce(dec(value), plan.shape.properties.get(name, Shape()))
        return result
    if parts == [""]:
        return result
    if len(parts) % 2:
        raise _Invalid("object values are key,value pairs")
    for key, value in zip(parts[::2], parts[1::2], strict=True):
        name = dec(key)
        result[name] = coerce(dec(value), plan.shape.properties.get(name, Shape()))
    return result


def _delimited(plan: ParamPlan, text: str, delimiter: str) -> Any:
    """Form (non-exploded), spaceDelimited and pipeDelimited values, already decoded."""
    if plan.json_content:
        return _content(plan, text)
    if plan.shape.is_array:
        if text == "":
            return []
        return [coerce(item, _item(plan)) for item in text.split(delimiter)]
    if plan.shape.is_object:
        parts = text.split(delimiter)
        if parts == [""]:
            return {}
        if len(parts) % 2:
            raise _Invalid("object values are key,value pairs")
        return {
            k: coerce(v, plan.shape.properties.get(k, Shape()))
            for k, v in zip(parts[::2], parts[1::2], strict=True)
        }
    return coerce(text, plan.shape)


_DELIMITERS = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|"}


def _query_value(plan: ParamPlan, query: dict[str, list[str]]) -> tuple[bool, Any]:
    if plan.style == "deepObject":
        prefix = plan.name + "["
        result: dict[str, Any] = {}
        for key, values in query.items():
            if key.startswith(prefix) and key.endswith("]"):
                prop = key[len(prefix) : -1]
                if len(values) != 1:
                    raise _Invalid("a property is given more than once")
                result[prop] = coerce(values[0], plan.shape.properties.get(prop, Shape()))
        return (True, result) if result else (False, None)
    if plan.claims_exploded_properties:
        names = exploded_names(plan, query)
        if not names:
            return False, None
        obj: dict[str, Any] = {}
        for key in names:
            given = query[key]
            if len(given) != 1:
                raise _Invalid("a property is given more than once")
            obj[key] = coerce(given[0], plan.shape.properties.get(key, Shape()))
        return True, obj
    found = query.get(plan.name)
    if found is None:
        return False, None
    values = found
    if plan.shape.is_array and plan.explode and plan.style == "form":
        return True, [coerce(v, _item(plan)) for v in values]
    if len(values) != 1:
        raise _Invalid("given more than once")
    if values[0] == "" and not plan.allow_empty:
        raise _Invalid("is empty")
    return True, _delimited(plan, values[0], _DELIMITERS.get(plan.style, ","))


def exploded_names(plan: ParamPlan, query: dict[str, list[str]]) -> list[str]:
    """The query keys a form/explode object parameter takes: its declared properties, or
    every key when it accepts additional properties and has none declared."""
    declared = plan.shape.properties
    if declared:
        return [key for key in query if key in declared]
    return list(query) if plan.shape.additional else []
