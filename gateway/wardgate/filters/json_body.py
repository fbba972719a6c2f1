"""Strict JSON, parsed once per request and shared by the filters that read the body.

The OpenAPI filter validates the request body against its schema and the WAF walks the same
document for its targets: without sharing, a JSON POST was decoded twice. The first filter
that needs the document calls :func:`strict_document`, which parses with the strict rules
below and keeps the result on the request (:attr:`HttpRequest.parsed_json
<wardgate.filters.api.HttpRequest.parsed_json>`); a later filter asks :func:`parsed_document`
for it and gets it only for the very same bytes.

Strict rules (:func:`parse_strict`): UTF-8 only; ``NaN``/``Infinity``/``-Infinity`` refused
(not JSON, and parsers disagree on them); an object with the same key twice refused (two
parsers disagreeing on which duplicate wins is a classic way past a validator); an escaped
lone surrogate (``"\\ud800"``) refused. A document that passes these rules is exactly what
the standard lenient ``json.loads`` gives for the same text, key for key and value for value
(the lenient parser only differs on the inputs refused here), so a filter that parses
leniently on its own can use a shared strict result instead without seeing anything else.

The shared value is read-only by contract: a filter must never change it (another filter
may read it after). Parsing never uses regular expressions and is linear in the body size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


class JsonBodyError(ValueError):
    """A body that is not strict JSON (the message is safe to show a client)."""


@dataclass(frozen=True, slots=True)
class ParsedJson:
    """One strict parse: the exact bytes parsed and the resulting value (read-only)."""

    source: bytes
    value: Any


class HoldsParse(Protocol):
    """Where a request keeps its parse: :class:`~wardgate.filters.api.HttpRequest` (a
    protocol, so this module does not import the filter contract that imports it)."""

    parsed_json: ParsedJson | None


def _no_constants(_name: str) -> Any:
    raise JsonBodyError("NaN and Infinity are not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() in C, then one length comparison: a repeated key makes the dict shorter.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise JsonBodyError("an object has the same key twice")
    return out


_STRICT = json.JSONDecoder(parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
"""Built once: ``json.loads`` with hooks builds a new decoder (and scanner) per call. A
decoder keeps no state between documents, so one serves every request and thread."""


def parse_strict(body: bytes) -> Any:
    """The JSON value of ``body`` under the strict rules (module docstring); raises
    :class:`JsonBodyError` with a client-safe reason otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonBodyError("is not UTF-8") from None
    try:
        value = _STRICT.decode(text)
        # Surrogates are U+D800-DFFF: only a "\ud.."/"\uD.." escape can write one (UTF-8
        # text cannot hold one raw), so other escapes ("\u00e9") skip the check.
        if "\\ud" in text or "\\uD" in text:
            _no_lone_surrogates(value)
        return value
    except RecursionError:
        raise JsonBodyError("is nested too deeply") from None
    except JsonBodyError:
        raise
    except ValueError:
        raise JsonBodyError("is not valid JSON") from None


def _no_lone_surrogates(value: Any) -> None:
    """``"\\ud800"`` is valid JSON syntax but not text: parsers disagree on it (replace,
    refuse, pass through), so it is refused. Only run when the body has a ``\\ud`` escape."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonBodyError("contains an unpaired surrogate escape") from None


def strict_document(request: HoldsParse, body: bytes) -> Any:
    """The strict JSON value of ``body`` (raises :class:`JsonBodyError`), parsed at most
    once per request: a success is kept on ``request`` for the filters after this one."""
    known = parsed_document(request, body)
    if known is not None:
        return known.value
    value = parse_strict(body)
    request.parsed_json = ParsedJson(body, value)
    return value


def parsed_document(request: HoldsParse, body: bytes) -> ParsedJson | None:
    """The strict parse of ``body`` an earlier filter kept on ``request``, or ``None`` when
    there is none for these exact bytes (another body, a decompressed one, a parse that
    failed): the caller then parses ``body`` itself."""
    known = request.parsed_json
    if known is None or (known.source is not body and known.source != body):
        return None
    return known
