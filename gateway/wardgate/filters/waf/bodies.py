"""Request bodies to targets: decompression with caps, then form, JSON, multipart and XML
parsers, with a raw fallback for anything else. Structural limits are checked while
parsing; a breach is a :class:`BodyProblem`, never an exception."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from wardgate.filters.json_body import ParsedJson
from wardgate.filters.waf.protobuf import grpc_string_targets
from wardgate.filters.waf.targets import (
    ARGS,
    ARGS_NAMES,
    FILES,
    FILES_CONTENT,
    MULTIPART_PART_HEADERS,
    REQUEST_BODY,
    XML_DECL,
    Target,
    split_query,
)


@dataclass(frozen=True, slots=True)
class Shape:
    """Structural limits (``waf.maxParameters`` ...)."""

    max_parameters: int
    max_name_length: int
    max_value_length: int
    max_depth: int
    max_decompressed_bytes: int
    max_decompression_ratio: int


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """Why a body is refused: HTTP status, a stable reason code, a location and a detail."""

    status: int
    reason: str
    location: str
    detail: str


class _Refuse(Exception):
    def __init__(self, problem: BodyProblem) -> None:
        self.problem = problem


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``text/html; charset=utf-8`` -> (``text/html``, {``charset``: ``utf-8``})."""
    main, *raw_params = content_type.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, _, value = raw.strip().partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params.setdefault(key.strip().lower(), value)
    return main.strip().lower(), params


def disposition_params(value: str) -> dict[str, str]:
    """``form-data; name="a"; filename="x;y.txt"`` -> {name: a, filename: x;y.txt}: a ``;``
    inside quotes belongs to the value (browsers send file names as they are, with only
    ``"`` and line ends percent-encoded). The first occurrence of a parameter wins."""
    params: dict[str, str] = {}
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    for piece in pieces[1:]:
        key, _, raw = piece.strip().partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        params.setdefault(key.strip().lower(), raw)
    return params


def decompress(body: bytes, encoding: str, shape: Shape) -> bytes | BodyProblem:
    """Undo ``Content-Encoding`` (gzip, deflate, identity; a list applies right to left),
    refusing output over ``max_decompressed_bytes`` or ``max_decompression_ratio``."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif coding == "deflate":
            wbits = zlib.MAX_WBITS
        else:
            return BodyProblem(
                415,
                "unsupported_content_encoding",
                "header:content-encoding",
                "the request body's content encoding cannot be inspected",
            )
        cap = min(shape.max_decompressed_bytes, max(len(body), 1) * shape.max_decompression_ratio)
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(body, cap + 1)
            if len(out) <= cap and not inflater.unconsumed_tail:
                out += inflater.flush()
        except zlib.error:
            if coding == "deflate":  # raw deflate without the zlib header, as some clients send
                try:
                    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    out = inflater.decompress(body, cap + 1)
                except zlib.error:
                    return _corrupt()
            else:
                return _corrupt()
        if len(out) > cap or inflater.unconsumed_tail:
            return BodyProblem(
                413,
                "decompressed_body_too_large",
                "body",
                "the decompressed request body is over the size or ratio limit",
            )
        body = out
    return body


def _corrupt() -> BodyProblem:
    return BodyProblem(
        400, "invalid_content_encoding", "body", "the request body could not be decompressed"
    )


class _XmlDeclarations:
    """Expat handlers that report DOCTYPE and ENTITY declarations as written (the WAF's
    XXE rules read them), never resolving them."""

    def __init__(self, found: list[Target]) -> None:
        self.found = found

    def entity(
        self,
        name: str,
        _is_param: int,
        value: str | None,
        _base: str | None,
        system_id: str | None,
        public_id: str | None,
        _notation: str | None,
    ) -> None:
        parts = ["<!ENTITY", name]
        if system_id is not None:
            parts += ["SYSTEM", system_id]
        if public_id is not None:
            parts += ["PUBLIC", public_id]
        if value is not None:
            parts.append(value)
        self.found.append(Target(XML_DECL, name, "body", " ".join(parts) + ">"))

    def doctype(self, name: str, system_id: str | None, public_id: str | None, _: int) -> None:
        text = f"<!DOCTYPE {name} SYSTEM {system_id}" if system_id else f"<!DOCTYPE {name}"
        if public_id:
            text += f" PUBLIC {public_id}"
        self.found.append(Target(XML_DECL, name, "body", text + ">"))


def _parse_xml(parser: Any, body: bytes, found: list[Target]) -> None:
    """Run ``parser`` over ``body``. Not well-formed XML is inspected raw; a body Expat
    cannot decode is refused (400), since the upstream would read other characters."""
    try:
        parser.Parse(body, True)
    except _Refuse:
        raise
    except expat.ExpatError:
        # Not well-formed: inspect it raw (rules still see every byte).
        found.append(Target(ARGS, "", "body", body.decode("utf-8", "replace")))
    except Exception as exc:  # any other parser failure is a refusal, never a 500
        # A declared encoding Expat cannot read (UTF-7, multi-byte, unknown names): the
        # upstream would read other characters than the WAF did.
        raise _Refuse(
            BodyProblem(
                400,
                "xml_unparseable",
                "body",
                f"the XML body cannot be inspected ({type(exc).__name__}: a declared "
                "encoding other than UTF-8, UTF-16, ISO-8859-1 or US-ASCII?)",
            )
        ) from None


class BodyParser:
    """Turns one body into targets for one policy's :class:`Shape`."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape

    def parse(
        self,
        body: bytes,
        content_type: str,
        out: list[Target],
        parsed: ParsedJson | None = None,
    ) -> BodyProblem | None:
        """Append the body's targets to ``out``; a :class:`BodyProblem` when it is refused.
        ``parsed``: the strict JSON parse of these exact bytes an earlier filter made
        (:mod:`wardgate.filters.json_body`), used instead of parsing a JSON body again."""
        if not body:
            return None
        mtype, params = media_type(content_type)
        text = _text(body)
        grpc = mtype == "application/grpc" or mtype.startswith("application/grpc+")
        if text is None or grpc:
            # gRPC messages are length-prefixed binary (protobuf) even when they happen to
            # decode as UTF-8: the 5-byte prefix alone holds NUL bytes. Like other binary
            # bodies (an image, an archive, random bytes), parameter rules would
            # only misfire on it. The raw-body rules still see it, and the parameter
            # rules see the string fields of its protobuf messages.
            out.append(Target(REQUEST_BODY, "", "body", body.decode("latin-1")))
            if grpc and mtype in ("application/grpc", "application/grpc+proto"):
                grpc_string_targets(body, out)
            return None
        out.append(Target(REQUEST_BODY, "", "body", text))
        try:
            if mtype == "application/x-www-form-urlencoded":
                self._count(split_query(text, "body", out))
                self._check_lengths(out)
            elif mtype == "application/json" or mtype.endswith("+json"):
                self._json(text, out, parsed)
            elif mtype.startswith("multipart/"):
                self._multipart(body, params.get("boundary", ""), out)
            elif mtype in ("text/xml", "application/xml") or mtype.endswith("+xml"):
                self._xml(body, out)
            else:
                out.append(Target(ARGS, "", "body", text))
        except _Refuse as refused:
            return refused.problem
        return None

    # --- limits -------------------------------------------------------------------------

    def _count(self, count: int) -> None:
        if count > self.shape.max_parameters:
            raise _Refuse(
                BodyProblem(
                    400,
                    "too_many_parameters",
                    "body",
                    f"the body has more than {self.shape.max_parameters} parameters",
                )
            )

    def _check_lengths(self, targets: list[Target]) -> None:
        for target in targets:
            if target.kind == ARGS_NAMES and len(target.value) > self.shape.max_name_length:
                raise _long("name_too_long", target.location, self.shape.max_name_length)
            if target.kind == ARGS and len(target.value) > self.shape.max_value_length:
                raise _long("value_too_long", target.location, self.shape.max_value_length)

    def _too_deep(self) -> _Refuse:
        return _Refuse(
            BodyProblem(
                400,
                "body_too_deep",
                "body",
                f"the body nests deeper than {self.shape.max_depth} levels",
            )
        )

    # --- JSON ---------------------------------------------------------------------------

    def _json(self, text: str, out: list[Target], parsed: ParsedJson | None) -> None:
        # A strict parse is exactly what json.loads gives for the same text (json_body):
        # reusing it changes no target. Otherwise parse leniently (duplicates: last wins,
        # NaN accepted), as the WAF always has: its job is to inspect, not to validate.
        try:
            document = parsed.value if parsed is not None else json.loads(text)
        except RecursionError:
            raise self._too_deep() from None
        except ValueError:
            # Not JSON after all: every rule still sees it, as one raw value.
            out.append(Target(ARGS, "", "body", text))
            return
        walker = _JsonWalker(self)
        try:
            walker.walk(document, "$", 0)
        except RecursionError:
            raise self._too_deep() from None
        out.extend(walker.found)

    # --- multipart ----------------------------------------------------------------------

    def _multipart(self, body: bytes, boundary: str, out: list[Target]) -> None:
        if not boundary or len(boundary) > 200:
            raise _Refuse(
                BodyProblem(
                    400,
                    "multipart_invalid",
                    "header:content-type",
                    "a multipart body needs a boundary parameter of at most 200 characters",
                )
            )
        delimiter = b"--" + boundary.encode("latin-1", "replace")
        pieces = body.split(delimiter)
        if len(pieces) < 2:
            raise _invalid_multipart("the body does not contain its boundary")
        found: list[Target] = []
        for piece in pieces[1:]:
            if piece.startswith(b"--"):
                break
            part_head, sep, content = _split_head(piece)
            if not sep:
                # No header block: common parsers read it as a nameless part's content.
                part_head, content = b"", piece.lstrip(b"\r\n")
            if content.endswith(b"\r\n"):
                content = content[:-2]
            elif content.endswith(b"\n"):
                content = content[:-1]
            self._part(part_head.decode("utf-8", "replace"), content, found)
        # A missing closing boundary is accepted (as by common parsers): every part up to
        # the end was inspected all the same.
        self._count(len(found))
        self._check_lengths(found)
        out.extend(found)

    def _part(self, head: str, content: bytes, found: list[Target]) -> None:
        name = ""
        filename: str | None = None
        for line in head.replace("\r\n", "\n").split("\n"):
            header, _, value = line.partition(":")
            header = header.strip().lower()
            if not header:
                continue
            location = f"body:{name}" if name else "body"
            found.append(Target(MULTIPART_PART_HEADERS, header, location, line.strip()))
            # Attack rules see part header values too (a payload in a filename* or a
            # custom part header), but not the line with its structural characters.
            if header not in ("content-type", "content-disposition"):
                found.append(Target(ARGS, header, location, value.strip()))
            if header == "content-disposition":
                params = disposition_params(value)
                name = params.get("name", "")[:128]
                filename = params.get("filename")
        location = f"body:{name}"
        found.append(Target(ARGS_NAMES, name, location, name))
        text = _text(content)
        if filename is not None:
            found.append(Target(FILES, name, f"file:{name}", filename))
            if text is not None:
                found.append(Target(FILES_CONTENT, name, f"file:{name}", text))
        elif text is not None:
            found.append(Target(ARGS, name, location, text))

    # --- XML ----------------------------------------------------------------------------

    def _xml(self, body: bytes, out: list[Target]) -> None:
        parser = expat.ParserCreate()
        # One callback per run of text: without it Expat splits text at every entity
        # reference, and `&lt;script&gt;` would reach the rules as "<", "script", ">".
        parser.buffer_text = True
        parser.buffer_size = 1 << 16
        # Entities are reported, never resolved: no external entity is fetched, and an
        # internal entity's text is inspected as its declaration, not expanded.
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        found: list[Target] = []
        stack: list[str] = []
        shape = self.shape

        def start(name: str, attrs: dict[str, str]) -> None:
            stack.append(name[:64])
            if len(stack) > shape.max_depth:
                raise self._too_deep()
            path = "/" + "/".join(stack)
            location = "body:" + path[:256]
            found.append(Target(ARGS_NAMES, name, location, name))
            for key, value in attrs.items():
                attr_location = f"{location}/@{key}"[:261]
                found.append(Target(ARGS_NAMES, key, attr_location, key))
                found.append(Target(ARGS, key, attr_location, value))
            if len(found) > shape.max_parameters * 2:
                self._count(len(found) // 2)

        def end(_name: str) -> None:
            if stack:
                stack.pop()

        def data(text: str) -> None:
            if text.strip():
                path = "/" + "/".join(stack)
                found.append(Target(ARGS, path, "body:" + path[:256], text))

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = data
        declarations = _XmlDeclarations(found)
        parser.EntityDeclHandler = declarations.entity
        parser.StartDoctypeDeclHandler = declarations.doctype
        parser.DefaultHandler = lambda _text: None  # references stay unexpanded
        _parse_xml(parser, body, found)
        self._check_lengths(found)
        out.extend(found)


def _text(body: bytes) -> str | None:
    """The body as UTF-8 text, or ``None`` when it is not text (a sequence cut by the
    inspection limit at the very end still counts as text)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(body) - 3 and exc.reason == "unexpected end of data":
            return body[: exc.start].decode("utf-8", "replace")
        return None


def _split_head(piece: bytes) -> tuple[bytes, bytes, bytes]:
    if piece.startswith(b"\r\n"):
        piece = piece[2:]
    elif piece.startswith(b"\n"):
        piece = piece[1:]
    head, sep, content = piece.partition(b"\r\n\r\n")
    if not sep:
        head, sep, content = piece.partition(b"\n\n")
    return head, sep, content


def _invalid_multipart(detail: str) -> _Refuse:
    return _Refuse(BodyProblem(400, "multipart_invalid", "body", detail))


__all__ = ["FILES", "BodyParser", "BodyProblem", "Shape", "decompress", "media_type"]


class _JsonWalker:
    """One JSON document to targets, in document order: every key (``ARGS_NAMES``) and
    every string, number-like or other scalar value (``ARGS``), named by its JSONPath.
    Limits are checked on the way (parameters, depth, name and value lengths)."""

    __slots__ = ("count", "found", "parser")

    def __init__(self, parser: BodyParser) -> None:
        self.parser = parser
        self.found: list[Target] = []
        self.count = 0

    def walk(self, node: Any, path: str, depth: int) -> None:
        """Targets of ``node`` (at JSONPath ``path``, ``depth`` levels down) and below.
        Scalars are handled in their container's loop, strings inline: a call per value
        costs more than the rest of the work for it."""
        shape = self.parser.shape
        if depth > shape.max_depth:
            raise self.parser._too_deep()
        append = self.found.append
        if node and depth + 1 > shape.max_depth and type(node) in _CONTAINERS:
            raise self.parser._too_deep()  # its members would be one level too deep
        max_value = shape.max_value_length
        if type(node) is dict:
            self.count += len(node)
            if self.count > shape.max_parameters:
                self.parser._count(self.count)
            max_name = shape.max_name_length
            for key, value in node.items():
                suffix = _SUFFIXES.get(key)
                if suffix is None:
                    suffix = _suffix(key)
                child = path + suffix
                location = "body:" + child[:256]
                if len(key) > max_name:
                    raise _long("name_too_long", location, max_name)
                append(Target(ARGS_NAMES, key, location, key))
                kind = type(value)
                if kind is str:
                    if len(value) > max_value:
                        raise _long("value_too_long", location, max_value)
                    append(Target(ARGS, child, location, value))
                elif kind is dict or kind is list:
                    self.walk(value, child, depth + 1)
        elif type(node) is list:
            self.count += len(node)
            if self.count > shape.max_parameters:
                self.parser._count(self.count)
            for index, value in enumerate(node):
                kind = type(value)
                if kind is str:
                    child = f"{path}[{index}]"
                    location = "body:" + child[:256]
                    if len(value) > max_value:
                        raise _long("value_too_long", location, max_value)
                    append(Target(ARGS, child, location, value))
                elif kind is dict or kind is list:
                    self.walk(value, f"{path}[{index}]", depth + 1)
        elif type(node) is str:
            location = "body:" + path[:256]
            if len(node) > max_value:
                raise _long("value_too_long", location, max_value)
            append(Target(ARGS, path, location, node))
        # Numbers, booleans and null carry no text a rule could match.


_SUFFIXES: dict[str, str] = {}
"""Key -> its JSONPath step (``.name`` or ``["a b"]``): the same keys arrive request after
request. Bounded like the WAF memo: past :data:`_SUFFIXES_MAX` entries it starts over."""
_SUFFIXES_MAX = 4096


def _suffix(key: str) -> str:
    suffix = f".{key}" if _plain_key(key) else f"[{json.dumps(key)}]"
    if len(key) <= 128:  # long keys rarely repeat: not worth keeping
        if len(_SUFFIXES) >= _SUFFIXES_MAX:
            _SUFFIXES.clear()
        _SUFFIXES[key] = suffix
    return suffix


_CONTAINERS = (dict, list)


def _long(reason: str, location: str, limit: int) -> _Refuse:
    what = "name" if reason == "name_too_long" else "value"
    return _Refuse(BodyProblem(400, reason, location, f"a parameter {what} is longer than {limit}"))


def _plain_key(key: str) -> bool:
    """Keys written ``$.a.b``; others ``$["a b"]`` (JSONPath bracket notation)."""
    return bool(key) and len(key) <= 128 and key.replace("_", "a").replace("-", "a").isalnum()
