"""Transformations: what a rule's value goes through before its operator sees it.

Names follow SecLang (ModSecurity) where SecLang has the transformation; ``unicodeNormalize``
and ``normalizePathWin`` semantics are documented below. Every function is ``str -> str``,
total (never raises on any input), linear in the input and free of regular expressions:
decoders split on their escape character (a C-level scan) and look at a bounded prefix of
each piece, so an attacker cannot make them backtrack.
"""

from __future__ import annotations

import html.entities
import unicodedata
from collections.abc import Callable

Transform = Callable[[str], str]

_HEX = frozenset(b"0123456789abcdefABCDEF")
_HEX_STR = frozenset("0123456789abcdefABCDEF")
_MAX_DECODE_ROUNDS = 4
"""URL decoding repeats until the value stops changing, at most this often (``%25252e``)."""


def _percent_decode_once(text: str, plus: bool) -> str:
    data = text.encode("utf-8", "surrogatepass")
    if plus and b"+" in data:
        data = data.replace(b"+", b" ")
    parts = data.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 2 and part[0] in _HEX and part[1] in _HEX:
            out.append(int(part[:2], 16))
            out += part[2:]
        elif (
            len(part) >= 5
            and part[0] in b"uU"
            and part[1] in _HEX
            and part[2] in _HEX
            and part[3] in _HEX
            and part[4] in _HEX
        ):
            out += chr(int(part[1:5], 16)).encode("utf-8", "surrogatepass")
            out += part[5:]
        else:
            out += b"%"
            out += part
    # Invalid UTF-8 (overlong forms among it) becomes U+FFFD: it can never decode to a
    # character the upstream would read as `.` or `/`; a protocol rule flags the raw form.
    return out.decode("utf-8", "replace")


def url_decode_uni(text: str) -> str:
    """``urlDecodeUni``: ``%HH`` and IIS ``%uHHHH`` escapes and ``+`` as space, repeated
    until stable (multi-level encodings such as ``%252e`` decode fully). Only the first
    level turns ``+`` into a space: a ``+`` that decoding produced (``%2B``) stays one."""
    for level in range(_MAX_DECODE_ROUNDS):
        if "%" not in text and ("+" not in text or level):
            return text
        decoded = _percent_decode_once(text, plus=level == 0)
        if decoded == text:
            return text
        text = decoded
    return text


def url_decode_path(text: str) -> str:
    """Like :func:`url_decode_uni` but ``+`` stays ``+`` (paths, not form data)."""
    for _ in range(_MAX_DECODE_ROUNDS):
        if "%" not in text:
            return text
        decoded = _percent_decode_once(text, plus=False)
        if decoded == text:
            return text
        text = decoded
    return text


_ENTITIES: dict[str, str] = html.entities.html5
_ENTITIES_FOLDED: dict[str, str] = {}
for _name, _text in html.entities.html5.items():
    _ENTITIES_FOLDED.setdefault(_name.lower(), _text)
_MAX_ENTITY = 32


def html_entity_decode(text: str) -> str:
    """``htmlEntityDecode``: named (``&lt;``, ``&colon;``), decimal (``&#60;``) and hex
    (``&#x3c;``) references, with or without the closing ``;``, leading zeros allowed."""
    if "&" not in text:
        return text
    parts = text.split("&")
    out = [parts[0]]
    for part in parts[1:]:
        out.append(_entity(part))
    return "".join(out)


def _entity(part: str) -> str:
    if part.startswith("#"):
        i = 1
        base = 10
        if part[1:2] in ("x", "X"):
            base = 16
            i = 2
        start = i
        digits = "0123456789" if base == 10 else "0123456789abcdefABCDEF"
        while i < len(part) and i - start < _MAX_ENTITY and part[i] in digits:
            i += 1
        if i == start:
            return "&" + part
        code = int(part[start:i], base)
        char = chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
        if part[i : i + 1] == ";":
            i += 1
        return char + part[i:]
    semi = part.find(";", 0, _MAX_ENTITY)
    if semi > 0:
        # Exact name first, then case-folded (`&LBRACE;` evades a case-sensitive list).
        named = _ENTITIES.get(part[: semi + 1]) or _ENTITIES_FOLDED.get(part[: semi + 1].lower())
        if named is not None:
            return named + part[semi + 1 :]
    # Legacy names without `;` (`&lt`, `&amp`): the longest one that html5 knows.
    for length in range(min(len(part), 6), 1, -1):
        named = _ENTITIES.get(part[:length])
        if named is not None:
            return named + part[length:]
    return "&" + part


_JS_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def js_decode(text: str) -> str:
    """``jsDecode``: ``\\xHH``, ``\\uHHHH``, ``\\u{H..}``, octal ``\\OOO`` and the one-letter
    escapes; any other ``\\c`` becomes ``c`` (so backslashes used to break up keywords
    disappear, as in SecLang)."""
    if "\\" not in text:
        return text
    parts = text.split("\\")
    out = [parts[0]]
    pending_backslash = False
    for part in parts[1:]:
        if pending_backslash:
            # `\\` is an escaped backslash: keep one, continue after it.
            out.append("\\" + part)
            pending_backslash = False
            continue
        if not part:
            pending_backslash = True
            continue
        out.append(_js_escape(part))
    if pending_backslash:
        out.append("\\")
    return "".join(out)


def _hex_prefix(part: str, start: int, count: int) -> int | None:
    chunk = part[start : start + count]
    if len(chunk) == count and all(c in _HEX_STR for c in chunk):
        return int(chunk, 16)
    return None


def _js_escape(part: str) -> str:
    head = part[0]
    if head in ("x", "X"):
        code = _hex_prefix(part, 1, 2)
        if code is not None:
            return chr(code) + part[3:]
    elif head in ("u", "U"):
        if part[1:2] == "{":
            end = part.find("}", 2, 10)
            if end > 2 and all(c in _HEX_STR for c in part[2:end]):
                code = int(part[2:end], 16)
                return (chr(code) if code <= 0x10FFFF else "\ufffd") + part[end + 1 :]
        code = _hex_prefix(part, 1, 4)
        if code is not None:
            return chr(code) + part[5:]
    elif head in "01234567":
        i = 0
        while i < 3 and i < len(part) and part[i] in "01234567":
            i += 1
        return chr(int(part[:i], 8)) + part[i:]
    elif head in _JS_SIMPLE:
        return _JS_SIMPLE[head] + part[1:]
    return part


def css_decode(text: str) -> str:
    """``cssDecode``: ``\\H`` to ``\\HHHHHH`` (one following space swallowed); any other
    ``\\c`` becomes ``c``."""
    if "\\" not in text:
        return text
    parts = text.split("\\")
    out = [parts[0]]
    for part in parts[1:]:
        i = 0
        while i < 6 and i < len(part) and part[i] in _HEX_STR:
            i += 1
        if i:
            code = int(part[:i], 16)
            rest = part[i:]
            if rest[:1] == " ":
                rest = rest[1:]
            out.append((chr(code) if 0 < code <= 0x10FFFF else "\ufffd") + rest)
        else:
            out.append(part)
    return "".join(out)


def unicode_normalize(text: str) -> str:
    """``unicodeNormalize`` (ours): Unicode NFKC, so full-width letters and brackets and other
    compatibility forms read as the ASCII the upstream may fold them to."""
    if text.isascii():
        return text
    result = unicodedata.normalize("NFKC", text)
    return text if result == text else result


def remove_nulls(text: str) -> str:
    """``removeNulls``: drop NUL characters."""
    return text.replace("\0", "") if "\0" in text else text


def lowercase(text: str) -> str:
    """``lowercase``."""
    return text.lower()


def compress_whitespace(text: str) -> str:
    """``compressWhitespace``: every run of whitespace (NBSP included) becomes one space."""
    result = " ".join(text.split())
    return text if result == text else result


def remove_whitespace(text: str) -> str:
    """``removeWhitespace``."""
    result = "".join(text.split())
    return text if result == text else result


def remove_comments_char(text: str) -> str:
    """``removeCommentsChar``: delete ``/*``, ``*/``, ``--`` and ``#``."""
    for token in ("/*", "*/", "--", "#"):
        if token in text:
            text = text.replace(token, "")
    return text


def replace_comments(text: str) -> str:
    """``replaceComments``: each C-style ``/* ... */`` comment (an unterminated one runs to
    the end) becomes one space."""
    if "/*" not in text:
        return text
    out = []
    pos = 0
    while True:
        start = text.find("/*", pos)
        if start < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        out.append(" ")
        end = text.find("*/", start + 2)
        if end < 0:
            break
        pos = end + 2
    return "".join(out)


def normalize_path(text: str) -> str:
    """``normalizePath``: collapse ``//``, drop ``/./`` segments and resolve ``..`` the way
    the upstream will (a leading ``..`` that climbs above the root is kept)."""
    if "/" not in text:
        return text
    absolute = text.startswith("/")
    trailing = text.endswith("/")
    out: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == ".." and out and out[-1] != "..":
            out.pop()
        else:
            out.append(segment)
    result = "/".join(out)
    if absolute:
        result = "/" + result
    if trailing and result not in ("", "/"):
        result += "/"
    return result


def normalize_path_win(text: str) -> str:
    """``normalizePathWin``: backslashes become slashes, then :func:`normalize_path`."""
    return normalize_path(text.replace("\\", "/")) if "\\" in text else normalize_path(text)


def backslashes_to_slashes(text: str) -> str:
    """``backslashToSlash`` (ours): backslashes become slashes, nothing is resolved, so
    ``..\\..\\`` stays visible as traversal."""
    return text.replace("\\", "/") if "\\" in text else text


def cmd_line(text: str) -> str:
    """``cmdLine`` (SecLang): delete ``\\ " ' ^``; delete spaces before ``/`` and ``(``;
    turn ``,`` and ``;`` into spaces; compress whitespace; lowercase. So ``c^md /c``,
    ``w'h'o'am'i`` and ``/bin/c\\at`` read as ``cmd/c``, ``whoami`` and ``/bin/cat``."""
    for char in ("\\", '"', "'", "^"):
        if char in text:
            text = text.replace(char, "")
    if "," in text:
        text = text.replace(",", " ")
    if ";" in text:
        text = text.replace(";", " ")
    text = " ".join(text.split())
    if " /" in text:
        text = text.replace(" /", "/")
    if " (" in text:
        text = text.replace(" (", "(")
    return text.lower()


def shell_unquote(text: str) -> str:
    """``shellUnquote`` (ours): what a shell drops before running a word: quotes, carets
    and backslashes (``w'h'o\\am^i``), empty ``$@`` and ``${x}``-free glue; separators stay,
    unlike ``cmdLine``, so rules still see where a new command starts."""
    for char in ("\\", '"', "'", "^"):
        if char in text:
            text = text.replace(char, "")
    if "$@" in text:
        text = text.replace("$@", "")
    if "\t" in text:
        text = text.replace("\t", " ")
    return text


def remove_xml_declarations(text: str) -> str:
    """``removeXmlDeclarations`` (ours): delete each complete ``<?xml ...?>`` declaration.
    An HTML parser reads it as a comment (the "bogus comment" state), so it is inert markup;
    what follows is kept and still inspected. Unterminated ones and other processing
    instructions (``<?import``, ``<?php``, a short tag written ``<?xml:echo``) stay. Only
    for XSS detection: PHP rules look at ``<?`` themselves."""
    if "<?" not in text:
        return text
    parts = text.split("<?")
    out = [parts[0]]
    for part in parts[1:]:
        end = part.find("?>")
        if end > 3 and part[:3].lower() == "xml" and part[3].isspace() and ">" not in part[:end]:
            out.append(part[end + 2 :])
        else:
            out.append("<?" + part)
    return "".join(out)


def trim(text: str) -> str:
    """``trim``."""
    return text.strip()


_NOT_PLAIN = frozenset("%&\\+\0\t\n\r\x0b\x0c*'\"`^;$#")

PLAIN_IDENTITY = frozenset(
    {
        "none",
        "urlDecodeUni",
        "urlDecodePath",
        "htmlEntityDecode",
        "jsDecode",
        "cssDecode",
        "unicodeNormalize",
        "removeNulls",
        "compressWhitespace",
        "replaceComments",
        "removeCommentsChar",
        "shellUnquote",
        "backslashToSlash",
        "trim",
    }
)
"""Transformations that never change a :func:`is_plain` value (the engine skips them)."""


def is_plain(text: str) -> bool:
    """ASCII without any character a :data:`PLAIN_IDENTITY` transformation acts on (escape
    introducers, quotes, comment and shell characters, control characters, runs of or
    leading/trailing spaces). Most parameter values, tokens and ids are plain."""
    return (
        text.isascii()
        and text.isprintable()
        and _NOT_PLAIN.isdisjoint(text)
        and "  " not in text
        and text[:1] != " "
        and text[-1:] != " "
        and "--" not in text
    )


def _identity_preserving(transform: Transform) -> Transform:
    """The engine recognises an unchanged value by identity (``is``) and then shares one
    scan between pipelines, so a transformation that changed nothing returns its input."""

    def wrapped(text: str) -> str:
        result = transform(text)
        return text if result == text else result

    wrapped.__doc__ = transform.__doc__
    wrapped.__name__ = transform.__name__
    return wrapped


_TRANSFORMS: dict[str, Transform] = {
    "none": lambda text: text,
    "urlDecodeUni": url_decode_uni,
    "urlDecodePath": url_decode_path,
    "htmlEntityDecode": html_entity_decode,
    "jsDecode": js_decode,
    "cssDecode": css_decode,
    "unicodeNormalize": unicode_normalize,
    "removeNulls": remove_nulls,
    "lowercase": lowercase,
    "compressWhitespace": compress_whitespace,
    "removeWhitespace": remove_whitespace,
    "removeCommentsChar": remove_comments_char,
    "replaceComments": replace_comments,
    "normalizePath": normalize_path,
    "normalizePathWin": normalize_path_win,
    "backslashToSlash": backslashes_to_slashes,
    "cmdLine": cmd_line,
    "shellUnquote": shell_unquote,
    "trim": trim,
    "removeXmlDeclarations": remove_xml_declarations,
}

TRANSFORMS: dict[str, Transform] = {
    name: _identity_preserving(fn) for name, fn in _TRANSFORMS.items()
}
"""Every transformation a rule may name."""
