"""Put a text into every place of a request, encoded as clients really send it.

One text, one :data:`PLACEMENTS` name -> one corpus :class:`~wardgate.filters.waf.corpus.Record`:

* ``query``: ``GET /api/search?q=<form-encoded>`` (``+`` for spaces, as browsers do);
* ``form``: a urlencoded ``POST`` body, one field;
* ``json_value`` / ``json_key``: ``{"note": text}`` / ``{text: 1}`` in an ``application/json`` body;
* ``cookie``: ``Cookie: pref=<percent-encoded>`` (what ``document.cookie`` code writes);
* ``header``: ``X-Comment: text`` (line breaks folded to spaces, non-Latin-1 dropped);
* ``path``: ``/api/notes/<percent-encoded>`` (one segment, ``/`` encoded);
* ``multipart``: a form-data text field; ``filename``: an upload whose file name is the text
  (``"`` and line breaks percent-encoded, as browsers do);
* ``xml``: ``<note><body>text</body></note>`` with the text escaped; a text that already is an
  XML document (class ``xml``) is the body itself.

The attack corpus is built from the attack payloads of the CRS regression corpus
(:func:`attack_payloads`): the same placements, the class is the CRS category.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape

from wardgate.filters.waf.corpus import Record, longest_parameter
from wardgate.filters.waf.lookalikes import Sample

PLACEMENTS = (
    "query",
    "form",
    "json_value",
    "json_key",
    "cookie",
    "header",
    "path",
    "multipart",
    "filename",
    "xml",
)
_BASE = (("Host", "api.example.com"), ("User-Agent", "corpus/1.0"), ("Accept", "*/*"))
_BOUNDARY = "----corpusBoundary7MA4YWxkTrZu0gW"


def place(text: str, where: str, *, cls: str, expect: str, ident: str) -> Record | None:
    """The request carrying ``text`` at ``where``; ``None`` where it cannot be sent (a path
    segment longer than servers accept)."""
    headers: list[tuple[str, str]] = list(_BASE)
    method, target, body = "GET", "/api/items", b""
    if where == "query":
        target = "/api/search?q=" + quote_plus(text)
    elif where == "form":
        method, body = "POST", ("comment=" + quote_plus(text)).encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif where in ("json_value", "json_key"):
        document = {"note": text, "id": 7} if where == "json_value" else {text: 1, "id": 7}
        method, body = "POST", json.dumps(document).encode()
        headers.append(("Content-Type", "application/json"))
    elif where == "cookie":
        headers.append(("Cookie", "session=abc123; pref=" + quote(text, safe="")))
    elif where == "header":
        value = " ".join(text.split()).encode("latin-1", "ignore").decode("latin-1")
        if not value:
            return None
        headers.append(("X-Comment", value))
    elif where == "path":
        if len(text) > 200:
            return None
        target = "/api/notes/" + quote(text, safe="")
    elif where in ("multipart", "filename"):
        method = "POST"
        if where == "multipart":
            part = f'Content-Disposition: form-data; name="comment"\r\n\r\n{text}'
        else:
            name = text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
            part = (
                f'Content-Disposition: form-data; name="upload"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\nhello"
            )
        body = f"--{_BOUNDARY}\r\n{part}\r\n--{_BOUNDARY}--\r\n".encode()
        headers.append(("Content-Type", f"multipart/form-data; boundary={_BOUNDARY}"))
    elif where == "xml":
        method = "POST"
        stripped = text.lstrip()
        if cls == "xml" and stripped.startswith("<"):
            body = stripped.encode()
        else:
            body = f'<?xml version="1.0"?><note><body>{escape(text)}</body></note>'.encode()
        headers.append(("Content-Type", "application/xml"))
    else:
        raise ValueError(f"unknown placement {where!r}")
    if method == "POST":
        headers.append(("Content-Length", str(len(body))))
    return Record(
        id=ident,
        category=f"{cls}@{where}",
        expect=expect,
        method=method,
        target=target,
        headers=tuple(headers),
        body=body,
        paranoia_level=1,
        benign_confidence="high" if expect == "allow" else None,
    )


def benign_records(
    samples: Iterable[Sample], placements: Iterable[str] = PLACEMENTS
) -> list[Record]:
    """Every sample in every placement (an XML document only as a body and a form field:
    nobody sends a document as a cookie)."""
    chosen = tuple(placements)
    out = []
    for index, sample in enumerate(samples):
        for where in chosen:
            if sample.cls == "xml" and len(sample.text) > 400 and where not in ("xml", "form"):
                continue
            record = place(
                sample.text, where, cls=sample.cls, expect="allow", ident=f"{sample.cls}-{index}"
            )
            if record is not None:
                out.append(record)
    return out


ATTACK_CATEGORIES = ("sqli", "xss", "rce", "lfi", "rfi", "php", "java", "generic")


def attack_payloads(
    records: Iterable[Record], per_category: int = 60, seed: int = 16
) -> list[Sample]:
    """Distinct PL1 attack payloads of the CRS corpus (the longest parameter name or value of
    each ``block`` record of :data:`ATTACK_CATEGORIES`, unless it is only the test's id), at
    most ``per_category`` each, sampled with a fixed seed."""
    by_category: dict[str, dict[str, str]] = {}
    for record in records:
        if record.expect != "block" or record.category not in ATTACK_CATEGORIES:
            continue
        if record.paranoia_level is None or record.paranoia_level > 1:
            continue
        payload = longest_parameter(record, min_length=4)
        # Some CRS tests carry their attack in the path or a header and only their own id
        # in a parameter ("932270-2"): that is not a payload.
        if payload is not None and payload != record.id.partition(":")[2]:
            by_category.setdefault(record.category, {}).setdefault(payload, record.id)
    rng = random.Random(seed)
    out = []
    for category in ATTACK_CATEGORIES:
        payloads = sorted(by_category.get(category, {}))
        for payload in rng.sample(payloads, min(per_category, len(payloads))):
            out.append(Sample(category, payload, by_category[category][payload]))
    return out


def attack_records(
    payloads: Iterable[Sample], placements: Iterable[str] = PLACEMENTS
) -> list[Record]:
    """Every payload in every placement except JSON keys (names are not payloads)."""
    chosen = [p for p in placements if p != "json_key"]
    out = []
    for index, sample in enumerate(payloads):
        for where in chosen:
            record = place(
                sample.text, where, cls=sample.cls, expect="block", ident=f"{sample.source}#{index}"
            )
            if record is not None:
                out.append(record)
    return out
