"""Request and response bodies: choosing the declared media type for a ``Content-Type``,
and parsing the body into a JSON value the schema can check.

* JSON (``application/json``, ``*+json``): strict UTF-8 JSON; ``NaN``/``Infinity`` and
  duplicate object keys are refused (two parsers disagreeing on which duplicate wins is a
  classic way past a validator). A request body is parsed once per request and the value
  shared with the WAF (:mod:`wardgate.filters.json_body`).
* ``application/x-www-form-urlencoded``: fields converted by the schema's property shapes.
* ``multipart/form-data``: parts by ``Content-Disposition`` name; a part with a JSON
  ``Content-Type`` is parsed as JSON, file parts are strings (binary).
* ``text/*`` bodies are a string when the schema wants one; other media types are checked
  for presence and type only (opaque bytes).

Parsing never uses regular expressions; every step is linear in the body size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wardgate.filters.json_body import JsonBodyError, parse_strict
from wardgate.filters.openapi.params import parse_query
from wardgate.filters.openapi.shapes import Shape, coerce


class BodyError(Exception):
    """A body that cannot be parsed as its media type (the message is safe to show)."""


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``text/plain; charset=utf-8`` to ``("text/plain", {"charset": "utf-8"})``."""
    if not content_type:
        return "", {}
    main, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, eq, value = item.strip().partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def is_json(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


@dataclass(frozen=True, slots=True)
class MediaMatcher:
    """The declared media types of one ``content`` map, most specific first."""

    exact: dict[str, str]
    wildcards: dict[str, str]
    """``type/*`` ranges, by type."""
    any: str | None
    """A declared ``*/*``."""

    @classmethod
    def build(cls, declared: list[str]) -> MediaMatcher:
        exact: dict[str, str] = {}
        wildcards: dict[str, str] = {}
        anything: str | None = None
        for key in declared:
            mime, _ = media_type(key)
            if mime == "*/*":
                anything = key
            elif mime.endswith("/*"):
                wildcards[mime[:-2]] = key
            else:
                exact.setdefault(mime, key)
        return cls(exact, wildcards, anything)

    def match(self, mime: str) -> str | None:
        """The declared key for the request's media type (without parameters)."""
        found = self.exact.get(mime)
        if found is not None:
            return found
        found = self.wildcards.get(mime.partition("/")[0])
        if found is not None:
            return found
        return self.any


def parse_json(body: bytes) -> Any:
    """Strict JSON (see the module docstring and :mod:`wardgate.filters.json_body`)."""
    try:
        return parse_strict(body)
    except JsonBodyError as exc:
        raise BodyError(str(exc)) from None


def parse_form(body: bytes, shape: Shape) -> dict[str, Any]:
    """``application/x-www-form-urlencoded`` into an object (arrays for repeated fields
    whose property is an array)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise BodyError("form bodies are ASCII (non-ASCII must be percent-encoded)") from None
    return _fields(parse_query(text), shape)


def _fields(fields: dict[str, list[str]], shape: Shape) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in fields.items():
        prop = shape.properties.get(name)
        if prop is not None and prop.is_array:
            item = prop.items or Shape()
            out[name] = [coerce(v, item) for v in values]
        elif prop is not None and len(values) != 1:
            # Parameter pollution: frameworks disagree on which copy wins.
            raise BodyError("a field is given more than once")
        else:
            # Undeclared fields (allowed by the schema) are judged by their first value.
            out[name] = coerce(values[0], prop or Shape())
    return out


MAX_PARTS = 1000


def parse_multipart(body: bytes, boundary: str, shape: Shape) -> dict[str, Any]:
    """``multipart/form-data`` (RFC 7578) into an object."""
    if not boundary or len(boundary) > 70:
        raise BodyError("the multipart boundary is missing or too long")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise BodyError("the multipart body is not terminated")
    parts = chunks[1:-1]
    if len(parts) > MAX_PARTS:
        raise BodyError(f"more than {MAX_PARTS} parts")
    fields: dict[str, list[Any]] = {}
    for part in parts:
        if not part.startswith(b"\r\n"):
            raise BodyError("a multipart delimiter is not followed by a line break")
        head, sep, content = part[2:].partition(b"\r\n\r\n")
        if not sep:
            raise BodyError("a part has no header block")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name, part_type = _part_headers(head)
        fields.setdefault(name, []).append((part_type, content))
    out: dict[str, Any] = {}
    for name, items in fields.items():
        declared = shape.properties.get(name)
        prop = declared or Shape()
        values = [
            _part_value(t, c, prop.items or Shape() if prop.is_array else prop) for t, c in items
        ]
        if prop.is_array:
            out[name] = values
        elif declared is not None and len(values) != 1:
            raise BodyError("a part name is given more than once")
        else:
            out[name] = values[0]
    return out


def _part_headers(head: bytes) -> tuple[str, str]:
    name: str | None = None
    part_type = "text/plain"
    for line in head.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if not colon:
            raise BodyError("a part header line is malformed")
        header = key.strip().lower()
        text = value.decode("utf-8", "replace").strip()
        if header == b"content-disposition":
            kind, params = media_type(text)
            if kind != "form-data" or "name" not in params:
                raise BodyError("a part's Content-Disposition is not form-data with a name")
            name = params["name"]
        elif header == b"content-type":
            part_type = media_type(text)[0] or part_type
    if name is None:
        raise BodyError("a part has no Content-Disposition")
    return name, part_type


def _part_value(part_type: str, content: bytes, shape: Shape) -> Any:
    if is_json(part_type):
        return parse_json(content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        # Binary content (a file): only its presence and type (string) can be checked.
        return content.decode("latin-1")
    return coerce(text, shape)


def parse_text(body: bytes, charset: str | None) -> str:
    """A ``text/*`` body as a string."""
    try:
        return body.decode(charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise BodyError("is not text in its declared charset") from None
