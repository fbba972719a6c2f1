"""Precision and evasion figures: benign look-alikes and CRS attack payloads, each placed in
every part of a request (:mod:`wardgate.filters.waf.placements`), through the real filter.

``python -m wardgate.filters.waf.precision CRS.jsonl --lookalikes SAMPLES.jsonl`` prints, for
the default policy (or ``--paranoia-level``), the refusal rate of the benign requests per
class and per placement, and the detection of the attacks per class and per placement
(``make waf-eval``), plus the rules behind the false positives.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wardgate.config.waf import WafSpec
from wardgate.filters.waf import corpus, lookalikes, placements
from wardgate.filters.waf.filter import WafConfig

DEFAULT_LOOKALIKES = Path(__file__).parent / "data" / "lookalikes.jsonl"
"""The committed sample of :mod:`wardgate.filters.waf.lookalikes` (fixed seed)."""


@dataclass(slots=True)
class Grid:
    """Blocked/total per class, per placement and overall; the rules that blocked."""

    by_class: dict[str, corpus.Tally] = field(default_factory=lambda: defaultdict(corpus.Tally))
    by_place: dict[str, corpus.Tally] = field(default_factory=lambda: defaultdict(corpus.Tally))
    by_cell: dict[tuple[str, str], corpus.Tally] = field(
        default_factory=lambda: defaultdict(corpus.Tally)
    )
    """Per (class, placement)."""
    rules: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    """Replies with a 5xx status (always a bug)."""
    blocked_ids: list[str] = field(default_factory=list)
    passed_ids: list[str] = field(default_factory=list)
    """``id@placement`` of the records let through (for attacks: the misses)."""

    @property
    def overall(self) -> corpus.Tally:
        return corpus.Tally(
            sum(t.total for t in self.by_class.values()),
            sum(t.blocked for t in self.by_class.values()),
        )

    def table(self, title: str) -> str:
        lines = [f"{title}: {self.overall.rate:.1%} of {self.overall.total} refused"]
        for heading, tallies in (("class", self.by_class), ("placement", self.by_place)):
            cells = [f"{name} {t.rate:.1%}/{t.total}" for name, t in sorted(tallies.items())]
            lines.append(f"  by {heading}: " + ", ".join(cells))
        lines.extend(self.matrix())
        if self.rules:
            top = ", ".join(f"{rule} {count}" for rule, count in self.rules.most_common(12))
            lines.append(f"  rules: {top}")
        if self.errors:
            lines.append(f"  5xx replies: {self.errors}")
        return "\n".join(lines)

    def matrix(self) -> list[str]:
        """One row per class: the rate in each placement (``-`` where none was placed)."""
        places = sorted(self.by_place)
        rows = ["  " + " " * 10 + "".join(f"{p[:10]:>11}" for p in places)]
        for cls in sorted(self.by_class):
            cells = []
            for where in places:
                tally = self.by_cell.get((cls, where))
                cells.append(f"{tally.rate:>11.1%}" if tally and tally.total else f"{'-':>11}")
            rows.append(f"  {cls[:10]:<10}" + "".join(cells))
        return rows


async def measure(config: WafConfig, records: Iterable[corpus.Record]) -> Grid:
    """Run every record through the filter; classes and placements come from the record's
    ``category`` (``class@placement``)."""
    grid = Grid()
    for record in records:
        reply = await corpus.decide(config, record)
        cls, _, where = record.category.partition("@")
        blocked = reply is not None
        for tally in (grid.by_class[cls], grid.by_place[where], grid.by_cell[cls, where]):
            tally.total += 1
            tally.blocked += blocked
        if reply is None:
            grid.passed_ids.append(f"{record.id}@{where}")
        if reply is not None:
            grid.blocked_ids.append(f"{record.id}@{where}")
            if reply.status >= 500:
                grid.errors += 1
            for violation in reply.violations:
                grid.rules[violation.rule_id] += 1
    return grid


def benign_records(path: Path = DEFAULT_LOOKALIKES) -> list[corpus.Record]:
    return placements.benign_records(lookalikes.load(path))


def attack_records(crs: Path) -> list[corpus.Record]:
    return placements.attack_records(placements.attack_payloads(corpus.load(crs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wardgate.filters.waf.precision")
    parser.add_argument("crs", type=Path, help="the CRS-regression corpus (attack payloads)")
    parser.add_argument("--lookalikes", type=Path, default=DEFAULT_LOOKALIKES)
    parser.add_argument("--paranoia-level", type=int, default=1, choices=(1, 2, 3, 4))
    parser.add_argument("--list", action="store_true", help="print refused benign ids")
    parser.add_argument("--missed", action="store_true", help="print missed attack ids")
    args = parser.parse_args(argv)
    config = WafConfig(WafSpec.model_validate({"paranoiaLevel": args.paranoia_level}))
    benign = asyncio.run(measure(config, benign_records(args.lookalikes)))
    print(benign.table("benign look-alikes"))
    attacks = asyncio.run(measure(config, attack_records(args.crs)))
    print(attacks.table("placed CRS attack payloads (detected)"))
    if args.list:
        print("refused benign:", " ".join(benign.blocked_ids))
    if args.missed:
        print("missed attacks:", " ".join(attacks.passed_ids))
    return 1 if benign.errors or attacks.errors else 0


if __name__ == "__main__":
    sys.exit(main())
