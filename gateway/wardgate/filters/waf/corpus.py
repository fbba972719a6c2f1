"""Measure the WAF on a request corpus (the CRS-regression JSONL format of
``shared/waf-corpus/README.md``): detection per category on ``block`` records, false
positives on ``allow`` records.

``python -m wardgate.filters.waf.corpus CORPUS.jsonl [--paranoia-level N]`` prints the
table (``make waf-eval``). Requests go through the real :class:`WafFilter` phases, in
process, built the way the proxy builds them (raw target, headers as sent, the body with
``Content-Length`` as the CRS test runner sends it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus

from multidict import CIMultiDict

from wardgate.config.waf import WafSpec
from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.filters.waf.filter import WafConfig


@dataclass(frozen=True, slots=True)
class Record:
    """One corpus request."""

    id: str
    category: str
    expect: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    paranoia_level: int | None
    benign_confidence: str | None
    version: str = "HTTP/1.1"


def load(path: Path) -> list[Record]:
    """Read a JSONL corpus."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(from_json(json.loads(line)))
    return records


def from_json(data: dict[str, Any]) -> Record:
    body = (data.get("body") or "").encode("utf-8", "surrogateescape")
    headers = [(str(k), str(v)) for k, v in (data.get("headers") or {}).items()]
    names = {k.lower() for k, _ in headers}
    method = str(data.get("method") or "GET")
    if (
        data.get("autocomplete_headers", True)
        and "content-length" not in names
        and (body or method in ("POST", "PUT", "PATCH"))
    ):
        headers.append(("Content-Length", str(len(body))))
    return Record(
        id=str(data.get("id", "")),
        category=str(data.get("category", "")),
        expect=str(data.get("expect", "")),
        method=method,
        target=str(data.get("path") or "/"),
        headers=tuple(headers),
        body=body,
        paranoia_level=data.get("paranoia_level"),
        benign_confidence=data.get("benign_confidence"),
        version=str(data.get("http_version") or "HTTP/1.1"),
    )


def to_request(record: Record) -> HttpRequest:
    path, _, query = record.target.partition("?")
    return HttpRequest(
        method=record.method,
        raw_target=record.target,
        path=path,
        query=query,
        headers=CIMultiDict(record.headers),
        version=record.version,
        request_id=record.id,
    )


async def decide(config: WafConfig, record: Record) -> LocalReply | None:
    """The WAF's answer for one record: a refusal or ``None`` (let through)."""
    request = to_request(record)
    flt = config.create_filter()
    reply = await flt.decode_headers(request)
    if reply is not None or not record.body:
        return reply
    limit = config.spec.request_body_limit
    return await flt.decode_body(request, record.body[:limit], len(record.body) <= limit)


@dataclass(slots=True)
class Tally:
    total: int = 0
    blocked: int = 0

    @property
    def rate(self) -> float:
        return self.blocked / self.total if self.total else 0.0


@dataclass(slots=True)
class Report:
    """Detection (attacks blocked) and false positives (benign blocked), per category."""

    attacks: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    benign: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    missed: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)

    def overall(self, tallies: dict[str, Tally]) -> Tally:
        return Tally(
            sum(t.total for t in tallies.values()), sum(t.blocked for t in tallies.values())
        )

    @property
    def detection(self) -> float:
        return self.overall(self.attacks).rate

    @property
    def false_positive_rate(self) -> float:
        return self.overall(self.benign).rate

    def table(self) -> str:
        lines = [f"{'category':<22}{'attacks':>9}{'detected':>10}{'benign':>8}{'FP':>8}"]
        for name in sorted(set(self.attacks) | set(self.benign)):
            attack = self.attacks.get(name, Tally())
            benign = self.benign.get(name, Tally())
            lines.append(
                f"{name:<22}{attack.total:>9}{attack.rate:>10.1%}{benign.total:>8}"
                f"{benign.rate:>8.1%}"
            )
        attack, benign = self.overall(self.attacks), self.overall(self.benign)
        lines.append(
            f"{'all':<22}{attack.total:>9}{attack.rate:>10.1%}{benign.total:>8}{benign.rate:>8.1%}"
        )
        return "\n".join(lines)


def select(records: Iterable[Record], paranoia_level: int) -> list[Record]:
    """The README's suggested selection: attacks up to the level, high-confidence benign."""
    chosen = []
    for record in records:
        if record.expect == "block":
            if record.paranoia_level is not None and record.paranoia_level <= paranoia_level:
                chosen.append(record)
        elif record.expect == "allow" and record.benign_confidence in (None, "high"):
            chosen.append(record)
    return chosen


async def evaluate(config: WafConfig, records: Iterable[Record]) -> Report:
    report = Report()
    for record in records:
        blocked = await decide(config, record) is not None
        tallies = report.attacks if record.expect == "block" else report.benign
        tally = tallies[record.category]
        tally.total += 1
        tally.blocked += blocked
        if record.expect == "block" and not blocked:
            report.missed.append(record.id)
        elif record.expect != "block" and blocked:
            report.false_positives.append(record.id)
    return report


def relocated(records: list[Record], where: str) -> list[Record]:
    """Each PL1 attack payload (the longest parameter name or value) moved into a custom
    header (``where='header'``) or into the URL path."""
    out = []
    for record in records:
        if record.expect != "block" or record.category not in RELOCATABLE:
            continue
        payload = longest_parameter(record, min_length=3)
        if payload is None:
            continue
        if where == "header":
            if any(ord(c) < 32 for c in payload):
                continue
            out.append(_variant(record, "/", (("X-Data", payload),)))
        else:
            out.append(_variant(record, "/api/" + quote(payload, safe=""), ()))
    return out


RELOCATABLE = {"sqli", "xss", "rce", "lfi", "php", "java", "generic"}


def longest_parameter(record: Record, min_length: int) -> str | None:
    """The longest decoded name or value among a record's query and urlencoded-form
    parameters (the payload of a CRS test), or ``None`` when shorter than ``min_length``."""
    parts = [record.target.partition("?")[2]]
    content_type = {k.lower(): v for k, v in record.headers}.get("content-type", "")
    if record.body and "urlencoded" in content_type:
        parts.append(record.body.decode("utf-8", "replace"))
    best = ""
    for part in parts:
        for pair in part.split("&"):
            name, _, value = pair.partition("=")
            for text in (unquote_plus(name), unquote_plus(value)):
                if len(text) > len(best):
                    best = text
    return best if len(best) >= min_length else None


def _variant(record: Record, target: str, extra: tuple[tuple[str, str], ...]) -> Record:
    return Record(
        id=record.id,
        category=record.category,
        expect="block",
        method="GET",
        target=target,
        headers=(("Host", "localhost"), ("User-Agent", "bench"), ("Accept", "*/*"), *extra),
        body=b"",
        paranoia_level=record.paranoia_level,
        benign_confidence=None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wardgate.filters.waf.corpus")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--paranoia-level", type=int, default=1, choices=(1, 2, 3, 4))
    parser.add_argument("--all", action="store_true", help="every record, no selection")
    parser.add_argument("--list", action="store_true", help="print missed and FP ids")
    args = parser.parse_args(argv)
    spec = WafSpec.model_validate({"paranoiaLevel": args.paranoia_level})
    config = WafConfig(spec)
    records = load(args.corpus)
    if not args.all:
        records = select(records, args.paranoia_level)
    report = asyncio.run(evaluate(config, records))
    print(report.table())
    for where in ("header", "path"):
        moved_records = relocated(records, where)
        moved = asyncio.run(evaluate(config, moved_records))
        print(f"attacks moved into the {where}: {moved.detection:.1%} of {len(moved_records)}")
    if args.list:
        print("missed:", " ".join(report.missed))
        print("false positives:", " ".join(report.false_positives))
    return 0


if __name__ == "__main__":
    sys.exit(main())
