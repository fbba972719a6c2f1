"""Hyperscan databases: compiling (with an on-disk cache), the batch form of a pattern, and
per-thread scratch space.

Compiling is the expensive part of building an engine (Hyperscan builds automata); a
compiled database is cached on disk under a digest of its patterns, flags and the Hyperscan
version, so a process that compiled the same rules before loads them instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hyperscan

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


def cache_dir() -> Path | None:
    """A private directory for compiled databases (``$WARDGATE_HS_CACHE``, else
    ``~/.cache/wardgate/hyperscan``); ``None`` when there is none we own (read-only root
    filesystems: then every process compiles)."""
    configured = os.environ.get("WARDGATE_HS_CACHE")
    if configured == "":
        return None
    path = Path(configured) if configured else Path.home() / ".cache" / "wardgate" / "hyperscan"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    # Only a directory of our own that nobody else can write: a planted database would
    # silently change what the WAF matches.
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return path


def compile_database(
    patterns: Sequence[bytes],
    expressions: Sequence[tuple[Rule, bool]],
    flags: int = FLAGS,
) -> hyperscan.Database:
    """Compile ``patterns`` (ids are their positions), or load the identical database
    compiled before: the cache key is a digest of every pattern, the flags and the Hyperscan
    version. ``expressions`` (per pattern: its rule and whether it is a prefilter) only names
    the culprits when compiling fails: raises :class:`FilterCompileError`."""
    version = str(getattr(hyperscan, "__version__", "")).encode()
    key = hashlib.sha256(b"\0".join([str(flags).encode(), version, *patterns])).hexdigest()
    cache = cache_dir()
    cached = cache / f"{key}.hsdb" if cache else None
    if cached is not None and cached.is_file():
        try:
            return hyperscan.loadb(cached.read_bytes(), mode=hyperscan.HS_MODE_BLOCK)
        except (hyperscan.error, OSError, TypeError, ValueError):
            pass  # stale or damaged: compile again
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(
            expressions=list(patterns),
            ids=list(range(len(patterns))),
            elements=len(patterns),
            flags=[flags] * len(patterns),
        )
    except hyperscan.error:
        raise FilterCompileError(_find_bad_patterns(list(patterns), list(expressions))) from None
    if cached is not None:
        try:
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(hyperscan.dumpb(database))
            partial.replace(cached)  # atomic: readers never see half a file
        except OSError:
            pass
    return database


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
