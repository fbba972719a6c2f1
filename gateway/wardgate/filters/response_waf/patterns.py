"""Leak signatures: what an upstream's error page or listing looks like when it tells the
client more than it should (SQL error messages, stack traces, directory listings).

Matched with one Hyperscan block-mode database (compiled once per process: the set is
fixed, so every policy generation shares it), never with Python ``re``: response bodies
come from the upstream but often echo attacker input. Patterns are case-sensitive where
the stacks print a fixed spelling, to keep prose about errors from matching, and do not
depend on real line breaks, so a trace escaped inside a JSON string (``\\n``) matches too.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import hyperscan

from wardgate.filters.hyperscan_db import compile_database


@dataclass(frozen=True, slots=True)
class LeakSignature:
    """One pattern: a stable id (for logs and metrics), its category and what it finds."""

    id: str
    category: str
    pattern: bytes
    message: str
    caseless: bool = False


SIGNATURES: tuple[LeakSignature, ...] = (
    # SQL error messages.
    LeakSignature(
        "leak.sql.mysql",
        "sql",
        rb"You have an error in your SQL syntax|com\.mysql\.(cj\.)?jdbc|MySqlException|"
        rb"Warning</b>: +mysqli?_|\bmysqli?_(fetch_\w+|num_rows|query)\(\) expects",
        "MySQL error message",
    ),
    LeakSignature(
        "leak.sql.postgresql",
        "sql",
        rb"ERROR: +(syntax error at or near|unterminated quoted string|column \S+ does not exist)|"
        rb"org\.postgresql\.util\.PSQLException|PG::\w+Error|psycopg2?\.errors\.[A-Z]\w+|"
        rb"psycopg2?\.\w*Error|"
        rb"Npgsql\.PostgresException",
        "PostgreSQL error message",
    ),
    LeakSignature(
        "leak.sql.mssql",
        "sql",
        rb"Unclosed quotation mark after the character string|"
        rb"Microsoft OLE DB Provider for (SQL Server|ODBC Drivers)|"
        rb"System\.Data\.SqlClient\.SqlException|Microsoft\.Data\.SqlClient\.SqlException|"
        rb"\[Microsoft\]\[ODBC SQL Server Driver\]|Incorrect syntax near '",
        "Microsoft SQL Server error message",
    ),
    LeakSignature(
        "leak.sql.oracle",
        "sql",
        rb"\bORA-[0-9]{5}: |oracle\.jdbc\.driver|quoted string not properly terminated",
        "Oracle error message",
    ),
    LeakSignature(
        "leak.sql.sqlite",
        "sql",
        rb"sqlite3\.(OperationalError|IntegrityError|ProgrammingError)|SQLITE_ERROR|"
        rb"SQLite3?::\w*Exception|System\.Data\.SQLite\.SQLiteException|"
        rb"unrecognized token: \"",
        "SQLite error message",
    ),
    LeakSignature(
        "leak.sql.generic",
        "sql",
        rb"java\.sql\.SQL\w*Exception|SQLSTATE\[[0-9A-Z]{5}\]|"
        rb"sqlalchemy\.exc\.\w+Error|DB2 SQL error|Dynamic SQL Error",
        "SQL driver error message",
    ),
    # Stack traces.
    LeakSignature(
        "leak.trace.python",
        "stacktrace",
        rb"Traceback \(most recent call last\):|"
        rb"File \\?\"[^\"\r\n]{1,512}\.py\\?\", line [0-9]+, in ",
        "Python traceback",
    ),
    LeakSignature(
        "leak.trace.java",
        "stacktrace",
        rb"\bat [\w$]+(\.[\w$<>]+)+\(([\w$]+\.(java|kt|scala|groovy):[0-9]+|Native Method|"
        rb"Unknown Source)\)|Exception in thread \"|\bjava\.lang\.\w+(Exception|Error)\b",
        "Java stack trace",
    ),
    LeakSignature(
        "leak.trace.php",
        "stacktrace",
        rb"<b>(Fatal|Parse) error</b>:|PHP (Fatal|Parse) error:|"
        rb"\.php</b> on line <b>[0-9]+</b>|#[0-9]+ [^\s\"]{1,512}\.php\([0-9]+\): |"
        rb"\bin [^\s\"]{1,512}\.php:[0-9]+\b|Uncaught \w+(Exception|Error)\b",
        "PHP error or stack trace",
    ),
    LeakSignature(
        "leak.trace.dotnet",
        "stacktrace",
        rb"Server Error in '[^'\r\n]{0,256}' Application|"
        rb"\bat [\w.`<>]+\([^()\r\n]{0,512}\) in [^\r\n]{1,512}\.(cs|vb):line [0-9]+|"
        rb"--- End of (inner exception )?stack trace|\bSystem\.(\w+\.)*\w+Exception: |"
        rb"ASP\.NET is configured to show verbose error messages",
        ".NET error page or stack trace",
    ),
    LeakSignature(
        "leak.trace.node",
        "stacktrace",
        rb"\bat [^\s()]{1,512}( \[as [^\]\r\n]{1,256}\])? \([^()\s]{1,1024}\.(js|mjs|cjs|ts):"
        rb"[0-9]+:[0-9]+\)|"
        rb"\(node:internal/[^()\s]{1,512}:[0-9]+:[0-9]+\)|\bat Module\._compile\b",
        "Node.js stack trace",
    ),
    # Directory listings.
    LeakSignature(
        "leak.listing",
        "listing",
        rb"<title>Index of /|<h1>Index of /|Directory listing for /|"
        rb"<title>Directory Listing For |\[To Parent Directory\]|>Parent Directory</a>",
        "directory listing",
    ),
)


@dataclass(frozen=True, slots=True)
class LeakMatch:
    """The first signature that matched a body."""

    signature: LeakSignature


class LeakScanner:
    """Scans a body for any signature. Immutable after construction; Hyperscan scratch
    space is per thread (it must not be shared by concurrent scans)."""

    def __init__(self, signatures: tuple[LeakSignature, ...] = SIGNATURES) -> None:
        self.signatures = signatures
        base = hyperscan.HS_FLAG_SINGLEMATCH
        self._database = compile_database(
            [s.pattern for s in signatures],
            [base | (hyperscan.HS_FLAG_CASELESS if s.caseless else 0) for s in signatures],
        )
        self._local = threading.local()

    def _scratch(self) -> hyperscan.Scratch:
        scratch: hyperscan.Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = hyperscan.Scratch(self._database)
            self._local.scratch = scratch
        return scratch

    def scan(self, data: bytes) -> LeakMatch | None:
        """The first signature found in ``data`` (scanning stops there), or ``None``."""
        found: list[int] = []

        def on_match(index: int, start: int, end: int, flags: int, context: object) -> bool:
            found.append(index)
            return True  # stop: one leak is enough to decide

        if data:
            try:
                self._database.scan(data, match_event_handler=on_match, scratch=self._scratch())
            except hyperscan.error:
                if not found:  # scan stopped by the handler raises in some versions
                    raise
        return LeakMatch(self.signatures[found[0]]) if found else None


@functools.cache
def default_scanner() -> LeakScanner:
    """The scanner over :data:`SIGNATURES`, compiled once per process."""
    return LeakScanner()
