"""Hyperscan databases for every filter: compiled once, cached, or precompiled.

:func:`compile_database` returns the database for a list of patterns from, in order: the
read-only *store* built ahead of time, the private on-disk cache, or the compiler. All three
are keyed by a digest of every pattern, its flags and the Hyperscan version.

**The store.**
Compiling the shipped rules takes many seconds of CPU (most in a few large databases: the
union of every parameter rule and its batch form), and a sidecar with a read-only root
filesystem and an in-memory ``/tmp`` has no cache that survives a restart. So the image
build (``wardgate precompile-waf``, see the Dockerfile) and ``make install`` write every
database of the usual rule selections into a store, and :func:`load` reads them from there.

- Location: ``$WARDGATE_HS_STORE`` (empty: no store), else ``share/wardgate/hyperscan``
  under the installation prefix (the virtualenv: the image copies it whole).
- Entries are named like cache entries (a digest of the patterns, flags and Hyperscan
  version), so a store built for other rules is simply never hit: those databases are
  compiled as before. Nothing is ever served without the databases the rules need.
- Hyperscan checks the platform when it loads a database (a database compiled with CPU
  features the host lacks is refused); such an entry is ignored and compiled, with one
  warning, so an image built on another CPU is slow to start, never wrong.
- Only a store and entries nobody else can write are read (owned by root or by us, no
  group/other write bit): a planted database would silently change what the WAF matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hyperscan

log = logging.getLogger("wardgate.hyperscan")

STORE_ENV = "WARDGATE_HS_STORE"
_export: Path | None = None
"""While :func:`exporting`: where every database an engine builds or loads is written."""
_warned = False


def default_store_dir() -> Path:
    """Where the store is when ``$WARDGATE_HS_STORE`` is unset: inside the installation
    (the virtualenv), so it travels with the code it was built for."""
    return Path(sys.prefix) / "share" / "wardgate" / "hyperscan"


def store_dir() -> Path | None:
    """The store to read, or ``None`` (not configured, missing, or writable by others)."""
    configured = os.environ.get(STORE_ENV)
    if configured == "":
        return None
    path = Path(configured) if configured else default_store_dir()
    try:
        info = path.stat()
    except OSError:
        return None
    if info.st_uid not in (0, os.getuid()) or info.st_mode & 0o022:
        return None
    return path


def load(key: str) -> hyperscan.Database | None:
    """The stored database named ``key``, or ``None`` when there is none usable here."""
    global _warned  # noqa: PLW0603 - one warning per process, not one per database
    store = store_dir()
    if store is None:
        return None
    try:
        with (store / f"{key}.hsdb").open("rb") as entry:
            info = os.fstat(entry.fileno())
            if info.st_uid not in (0, os.getuid()) or info.st_mode & 0o022:
                return None  # an entry others could have rewritten is not trusted either
            data = entry.read()
    except OSError:
        return None
    try:
        return hyperscan.loadb(data, mode=hyperscan.HS_MODE_BLOCK)
    except (hyperscan.error, TypeError, ValueError) as exc:
        if not _warned:
            _warned = True
            log.warning(
                "precompiled WAF database not usable on this host; compiling instead",
                extra={"wardgate": {"store": str(store), "error": str(exc)}},
            )
        return None


def export(key: str, database: hyperscan.Database) -> None:
    """Write ``database`` to the store being built, if one is (see :func:`exporting`)."""
    if _export is None:
        return
    target = _export / f"{key}.hsdb"
    partial = target.with_suffix(".tmp")
    partial.write_bytes(hyperscan.dumpb(database))
    partial.chmod(0o644)
    partial.replace(target)


@contextmanager
def exporting(out: Path) -> Iterator[None]:
    """While active, every database compiled or loaded is also written into ``out`` (made
    world-readable, writable only by us; earlier ``*.hsdb`` entries there are removed)."""
    global _export  # noqa: PLW0603 - a build-time switch, never set while serving
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)
    for stale in out.glob("*.hsdb"):
        stale.unlink()
    _export = out
    try:
        yield
    finally:
        _export = None


def database_key(patterns: Sequence[bytes], flags: int | Sequence[int]) -> str:
    """The name of the database for ``patterns`` with ``flags`` (one for all, or one each)."""
    version = str(getattr(hyperscan, "__version__", "")).encode()
    flag_text = str(flags) if isinstance(flags, int) else ",".join(map(str, flags))
    return hashlib.sha256(b"\0".join([flag_text.encode(), version, *patterns])).hexdigest()


def compile_database(patterns: Sequence[bytes], flags: int | Sequence[int]) -> hyperscan.Database:
    """The block-mode database of ``patterns`` (ids are their positions): stored, cached or
    compiled. Raises :class:`hyperscan.error` when Hyperscan cannot compile them."""
    key = database_key(patterns, flags)
    database = load(key)
    if database is None:
        database = _cached_or_compiled(key, patterns, flags)
    export(key, database)
    return database


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


def _cached_or_compiled(
    key: str, patterns: Sequence[bytes], flags: int | Sequence[int]
) -> hyperscan.Database:
    cache = cache_dir()
    cached = cache / f"{key}.hsdb" if cache else None
    if cached is not None and cached.is_file():
        try:
            return hyperscan.loadb(cached.read_bytes(), mode=hyperscan.HS_MODE_BLOCK)
        except (hyperscan.error, OSError, TypeError, ValueError):
            pass  # stale or damaged: compile again
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=list(patterns),
        ids=list(range(len(patterns))),
        elements=len(patterns),
        flags=[flags] * len(patterns) if isinstance(flags, int) else list(flags),
    )
    if cached is not None:
        try:
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(hyperscan.dumpb(database))
            partial.replace(cached)  # atomic: readers never see half a file
        except OSError:
            pass
    return database
