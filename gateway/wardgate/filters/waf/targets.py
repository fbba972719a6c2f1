"""What the rules look at: every part of a request as a flat list of :class:`Target`.

Each target has a *kind* (the SecLang collection a rule names: ``ARGS``, ``REQUEST_HEADERS``
...), a *location* in violation syntax (``query:id``, ``header:user-agent``,
``body:$.items[0].name``, ``path``, ``cookie:sid``) and the value, still encoded as the
client sent it: decoding is each rule's transformation pipeline, so a rule can also see the
raw form. Parsing never uses regular expressions; failures are reported, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from wardgate.filters.waf.transforms import url_decode_uni

# Kinds (SecLang collection names, plus PATH_SEGMENTS, XML_DECL,
# MULTIPART_PART_HEADERS and REFERER_SITE of our own).
REQUEST_METHOD = "REQUEST_METHOD"
REQUEST_PROTOCOL = "REQUEST_PROTOCOL"
REQUEST_URI_RAW = "REQUEST_URI_RAW"
REQUEST_FILENAME = "REQUEST_FILENAME"
PATH_SEGMENTS = "PATH_SEGMENTS"
ARGS = "ARGS"
ARGS_NAMES = "ARGS_NAMES"
REQUEST_HEADERS = "REQUEST_HEADERS"
REQUEST_HEADERS_NAMES = "REQUEST_HEADERS_NAMES"
REQUEST_COOKIES = "REQUEST_COOKIES"
REQUEST_COOKIES_NAMES = "REQUEST_COOKIES_NAMES"
FILES = "FILES"
FILES_CONTENT = "FILES_CONTENT"
REQUEST_BODY = "REQUEST_BODY"
XML_DECL = "XML_DECL"
MULTIPART_PART_HEADERS = "MULTIPART_PART_HEADERS"
REFERER_SITE = "REFERER_SITE"
"""``none``, ``same`` or ``cross``: see :mod:`wardgate.filters.waf.site`."""

KINDS = frozenset(
    {
        REQUEST_METHOD,
        REQUEST_PROTOCOL,
        REQUEST_URI_RAW,
        REQUEST_FILENAME,
        PATH_SEGMENTS,
        ARGS,
        ARGS_NAMES,
        REQUEST_HEADERS,
        REQUEST_HEADERS_NAMES,
        REQUEST_COOKIES,
        REQUEST_COOKIES_NAMES,
        FILES,
        FILES_CONTENT,
        REQUEST_BODY,
        XML_DECL,
        MULTIPART_PART_HEADERS,
        REFERER_SITE,
    }
)
"""Every kind a rule may target."""


@dataclass(slots=True, eq=False)
class Target:
    """One value to inspect. ``name`` is the selector a rule's ``REQUEST_HEADERS:referer``
    style target compares against (lower-case header names; parameter names as decoded).

    Never changed after it is made. Not a frozen dataclass: a request makes hundreds of
    targets, and a frozen one costs several times more to construct."""

    kind: str
    name: str
    location: str
    value: str


def split_query(query: str, prefix: str, out: list[Target]) -> int:
    """Append ``ARGS``/``ARGS_NAMES`` targets for an ``a=1&a=2&b[]=x`` string (repeated keys
    each count); returns the number of parameters."""
    count = 0
    for pair in query.split("&"):
        if not pair:
            continue
        name, sep, value = pair.partition("=")
        # `;` is not a separator here (WHATWG); the upstream framework decides the same.
        decoded_name = _printable_name(url_decode_uni(name))
        location = f"{prefix}:{decoded_name}"
        out.append(Target(ARGS_NAMES, decoded_name, location, name))
        if sep:
            out.append(Target(ARGS, decoded_name, location, value))
        count += 1
    return count


def _printable_name(name: str) -> str:
    """Names go into locations and logs: keep them short and on one line."""
    name = name[:128]
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else "?" for c in name)


def split_cookies(header: str, out: list[Target]) -> None:
    """Append cookie targets from one ``Cookie`` header value."""
    for raw in header.split(";"):
        pair = raw.strip()
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _printable_name(name.strip())
        location = f"cookie:{name}"
        out.append(Target(REQUEST_COOKIES_NAMES, name, location, name))
        out.append(Target(REQUEST_COOKIES, name, location, value))


def split_path(raw_path: str, out: list[Target]) -> None:
    """Append the whole path and each of its segments."""
    out.append(Target(REQUEST_FILENAME, "", "path", raw_path))
    for segment in raw_path.split("/"):
        if segment:
            out.append(Target(PATH_SEGMENTS, "", "path", segment))
