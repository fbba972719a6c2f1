"""The test oracle for the engine: scan one target at a time, without the memo, the batch
or the kind-specific engines, which :meth:`Engine.scan` must agree with."""

from __future__ import annotations

from collections.abc import Iterable

from wardgate.filters.waf.engine import Engine, Match
from wardgate.filters.waf.engine.databases import Scratches
from wardgate.filters.waf.engine.single import rules_each
from wardgate.filters.waf.targets import Target


def scan_each(engine: Engine, targets: Iterable[Target]) -> list[Match]:
    """Every (rule, target) match, in the order :meth:`Engine.scan` reports them."""
    listed = list(targets)
    scratches = Scratches(engine.plan.databases()).get()
    return [
        Match(rule, target.location, target.kind)
        for target, rules in zip(
            listed, rules_each(engine.plan, listed, {}, scratches), strict=True
        )
        for rule in rules
    ]
