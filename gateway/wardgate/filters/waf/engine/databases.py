"""Hyperscan databases of the engine: compiling (stored, cached or compiled by
:mod:`wardgate.filters.hyperscan_db`), the batch form of a pattern, and per-thread scratch
space."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import hyperscan

from wardgate.filters import hyperscan_db
from wardgate.filters.api import FilterCompileError

if TYPE_CHECKING:
    from wardgate.filters.waf.rules import Rule

FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
"""One-value scans: a match per expression is enough."""
BATCH_FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL
"""Batch scans: every match is reported, so each value of the buffer gets its own."""
SEP = "\x01"
"""Joins the values of one kind into one buffer for a batched scan. Batch patterns are
rewritten so that nothing matches it (see :func:`separated`), so no match spans values."""
SEP_BYTE = 0x01


def separated(pattern: str) -> str:
    """The batch form of a Hyperscan pattern: ``.``, negated classes and ``\\W \\S \\D``
    exclude the separator, ``^``/``$`` also match at a separator. On a value without the
    separator it matches exactly what ``pattern`` matches."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in "WSD":
                out.append(f"[^\\{nxt.lower()}\\x01]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            i = _separated_class(pattern, i, out)
            continue
        if c == ".":
            out.append("[^\\x01]")
        elif c == "^":
            out.append("(?:^|\\x01)")
        elif c == "$":
            out.append("(?:$|\\x01)")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _separated_class(pattern: str, i: int, out: list[str]) -> int:
    """Append the batch form of the character class opening at ``pattern[i]``; return the
    index after it."""
    n = len(pattern)
    j = i + 1
    negated = j < n and pattern[j] == "^"
    if negated:
        j += 1
    start = j
    if j < n and pattern[j] == "]":
        j += 1  # a leading ] is a literal
    while j < n and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    body = pattern[start:j]
    out.append(f"[^\\x01{body}]" if negated else f"[{body}]")
    return j + 1


def batch_patterns(patterns: Iterable[bytes]) -> list[bytes]:
    """:func:`separated` over encoded patterns."""
    return [separated(p.decode()).encode() for p in patterns]


def compile_database(
    patterns: Sequence[bytes],
    expressions: Sequence[tuple[Rule, bool]],
    flags: int = FLAGS,
) -> hyperscan.Database:
    """:func:`wardgate.filters.hyperscan_db.compile_database` (stored, cached or compiled),
    with ids the positions in ``patterns``. ``expressions`` (per pattern: its rule and
    whether it is a prefilter) names the culprits when compiling fails: raises
    :class:`FilterCompileError`."""
    try:
        return hyperscan_db.compile_database(patterns, flags)
    except hyperscan.error:
        raise FilterCompileError(_find_bad_patterns(list(patterns), list(expressions))) from None


def _find_bad_patterns(patterns: list[bytes], expressions: list[tuple[Rule, bool]]) -> list[str]:
    problems = []
    for pattern, (rule, is_gate) in zip(patterns, expressions, strict=True):
        try:
            hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK).compile(
                expressions=[pattern], flags=[FLAGS]
            )
        except hyperscan.error as exc:
            field = "prefilter" if is_gate else "pattern"
            problems.append(f"waf rule {rule.id}.{field}: {exc}")
    return problems or ["waf: the rule set does not compile"]


class Scratches:
    """Hyperscan scratch space per thread, one per database (scratch must not be shared by
    concurrent scans; the binding cannot grow one for several databases)."""

    __slots__ = ("_databases", "_local")

    def __init__(self, databases: Iterable[hyperscan.Database]) -> None:
        self._databases = tuple(databases)
        self._local = threading.local()

    def get(self) -> dict[int, hyperscan.Scratch]:
        """This thread's scratch space, by ``id(database)``."""
        scratches: dict[int, hyperscan.Scratch] | None = getattr(self._local, "scratch", None)
        if scratches is None:
            scratches = {id(db): hyperscan.Scratch(db) for db in self._databases}
            self._local.scratch = scratches
        return scratches
