"""The WAF operators a rule may name, declared once (Coraza's ``operators`` registry).

Each :class:`Operator` says what a rule using it must carry and how the engine runs it:

- a *pattern operator* (``rx``, ``pm``) is nothing but Hyperscan expressions: a rule
  matches where one of :meth:`Operator.expressions` matches its transformed value;
- a *detector* (``detectSQLi``, ``detectXSS``) judges the transformed value with a function
  (libinjection), only where the rule's optional ``prefilter`` expression matched.

The rule loader validates names and arguments against :data:`OPERATORS`; the engine asks the
same entries for expressions and detectors, so adding an operator is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import libinjection

Argument = Literal["pattern", "phrases"]


@dataclass(frozen=True, slots=True)
class Operator:
    """One operator. Exactly one of ``compile`` and ``detect`` is set."""

    name: str
    argument: Argument | None
    """The rule field it requires (non-empty), or ``None``."""
    compile: Callable[[str, tuple[str, ...]], tuple[bytes, ...]] | None = None
    """(pattern, phrases) -> the Hyperscan expressions that are the match."""
    detect: Callable[[str], bool] | None = None
    """A transformed value -> whether it is an attack. Pure: answers may be remembered."""


def encodable(value: str) -> str:
    """libinjection encodes its input as strict UTF-8; a lone surrogate (a JSON ``\\udac4``
    escape, a ``%uD800`` decode) would raise there and fail the request closed with 500.
    Such code points become U+FFFD, which keeps the tokens around them intact."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def escape_literal(phrase: str) -> bytes:
    """A Hyperscan expression matching ``phrase`` literally (every non-alphanumeric byte
    escaped as ``\\xNN``)."""
    return b"".join(
        bytes([b]) if chr(b).isalnum() else b"\\x%02x" % b for b in phrase.encode("utf-8")
    )


def _rx(pattern: str, _phrases: tuple[str, ...]) -> tuple[bytes, ...]:
    return (pattern.encode(),)


def _pm(_pattern: str, phrases: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(escape_literal(phrase) for phrase in phrases)


def _sqli(value: str) -> bool:
    return bool(libinjection.is_sql_injection(encodable(value))["is_sqli"])


def _xss(value: str) -> bool:
    return bool(libinjection.is_xss(encodable(value))["is_xss"])


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("rx", "pattern", compile=_rx),
        Operator("pm", "phrases", compile=_pm),
        Operator("detectSQLi", None, detect=_sqli),
        Operator("detectXSS", None, detect=_xss),
    )
}
"""Every operator a rule may name, by name."""
