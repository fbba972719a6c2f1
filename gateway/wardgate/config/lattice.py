"""Which value of a policy field is the stricter one: the lattice a ``SecurityBaseline``
merge walks ("stricter wins").

Every policy field declares its merge direction as ``Annotated`` metadata, the way
:data:`~wardgate.config.base.SECRET` marks secrets::

    max_url_bytes: Annotated[int, Field(ge=64), LOWER] = 8192

so a new field cannot be added without saying how a baseline tightens it (a test walks the
whole schema and fails on a field without a direction), and the merge finds a floor's field
by its Python name, never by a hand-written document key.

For each direction, :meth:`Merge.stricter` is the *meet* of two values (the stricter one):
commutative, associative and idempotent, so applying several baselines in any order gives
the same policy. This module knows no section of the policy; the sections import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class Direction(StrEnum):
    """How a field's values are ordered from weakest to strictest."""

    LOWER = "lower"
    """Smaller is stricter (sizes, thresholds): the meet is the minimum."""
    HIGHER = "higher"
    """Larger is stricter (paranoia levels): the meet is the maximum."""
    RANKED = "ranked"
    """An ordered set of names (``off`` < ``detect`` < ``enforce``): the later one."""
    SUBSET = "subset"
    """Fewer is stricter (allow-lists): the meet is the intersection, in the field's order."""
    REQUIRED = "required"
    """On (or present) is stricter than off (or absent)."""
    DELEGATED = "delegated"
    """Entries that weaken the policy (WAF exceptions): kept only where every baseline
    delegates them."""
    NESTED = "nested"
    """A section or a mapping of sections: its own fields declare their directions."""
    APP = "app"
    """The app team's choice: no baseline sets a floor on it (routes, upstream settings)."""


@dataclass(frozen=True, slots=True)
class Merge:
    """The merge direction of one field (``Annotated`` metadata). ``order`` lists a
    :attr:`Direction.RANKED` field's values from weakest to strictest."""

    direction: Direction
    order: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Merge({self.direction.value}{', ' + repr(self.order) if self.order else ''})"

    def rank(self, value: object) -> int:
        """A ranked value's strength; anything not in ``order`` (missing) is weakest."""
        return self.order.index(value) if isinstance(value, str) and value in self.order else -1

    def stricter(self, current: object, bound: Any) -> Any:
        """``bound`` when it is stricter than ``current``, else ``None`` (nothing to change).
        A missing ``current`` (``None``, or the wrong type) counts as the weakest value."""
        if bound is None:
            return None
        if self.direction is Direction.LOWER:
            return bound if not _is_int(current) or current > bound else None
        if self.direction is Direction.HIGHER:
            return bound if bound > (current if _is_int(current) else 0) else None
        if self.direction is Direction.RANKED:
            return bound if self.rank(bound) > self.rank(current) else None
        if self.direction is Direction.REQUIRED:
            return True if bound is True and current is not True else None
        raise TypeError(f"{self!r} has no single stricter value; the merge handles it")

    def strictest(self, *values: Any) -> Any:
        """The meet of ``values`` (``None`` ignored; ``None`` when all are)."""
        present = [v for v in values if v is not None]
        if not present:
            return None
        if self.direction is Direction.SUBSET:
            kept = list(present[0])
            for other in present[1:]:
                kept = [item for item in kept if item in other]
            return kept
        best = present[0]
        for value in present[1:]:
            tighter = self.stricter(best, value)
            best = best if tighter is None else tighter
        return best

    def intersect(self, current: Sequence[str], bound: Sequence[str]) -> list[str]:
        """A :attr:`Direction.SUBSET` meet: the items of ``current`` that ``bound`` allows."""
        return [item for item in current if item in bound]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


LOWER = Merge(Direction.LOWER)
HIGHER = Merge(Direction.HIGHER)
SUBSET = Merge(Direction.SUBSET)
REQUIRED = Merge(Direction.REQUIRED)
DELEGATED = Merge(Direction.DELEGATED)
NESTED = Merge(Direction.NESTED)
APP = Merge(Direction.APP)


def ranked(*order: str) -> Merge:
    """A :attr:`Direction.RANKED` direction, values from weakest to strictest."""
    return Merge(Direction.RANKED, tuple(order))


class MissingMergeDirection(LookupError):
    """A policy field declares no :class:`Merge` (a schema bug, found by the tests)."""


def merge_of(model: type[BaseModel], name: str) -> Merge:
    """The merge direction of ``model.<name>`` (its Python name). Raises ``KeyError`` for a
    field the model does not have (a floor naming a renamed field) and
    :class:`MissingMergeDirection` for a field without a direction."""
    info = model.model_fields[name]
    for item in info.metadata:
        if isinstance(item, Merge):
            return item
    raise MissingMergeDirection(f"{model.__name__}.{name} declares no merge direction")


def document_key(model: type[BaseModel], name: str) -> str:
    """The document (camelCase) key of ``model.<name>``; ``KeyError`` when it is no field."""
    info = model.model_fields[name]
    return info.alias or name
