"""Every policy field says how a SecurityBaseline tightens it (``Annotated`` merge metadata,
like SECRET); floors pair with fields by Python name; each direction's meet is a lattice meet
(so the order of baselines never matters)."""

from __future__ import annotations

import typing
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from wardgate.config import PolicySpec
from wardgate.config.base import SpecModel
from wardgate.config.baseline import LimitsCeilingSpec, WafFloorSpec
from wardgate.config.lattice import (
    HIGHER,
    LOWER,
    REQUIRED,
    SUBSET,
    Direction,
    MissingMergeDirection,
    merge_of,
)
from wardgate.config.limits import LimitsSpec
from wardgate.config.waf import MODE_STRICTNESS, WafFamily, WafMode


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The models an annotation holds (``X | None``, ``dict[K, X]``, ``tuple[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _policy_fields() -> Iterator[tuple[str, type[BaseModel], str]]:
    """``(path, model, name)`` of every field a baseline merge can reach: PolicySpec's, and
    recursively those of sections declared NESTED."""
    pending: list[tuple[str, type[BaseModel]]] = [("", PolicySpec)]
    while pending:
        prefix, model = pending.pop()
        for name, info in model.model_fields.items():
            path = f"{prefix}{info.alias or name}"
            yield path, model, name
            merge = next((m for m in info.metadata if hasattr(m, "direction")), None)
            if merge is not None and merge.direction is Direction.NESTED:
                pending.extend((path + ".", m) for m in _models_in(info.annotation))


def test_every_policy_field_declares_its_merge_direction() -> None:
    missing = []
    for path, model, name in _policy_fields():
        try:
            merge_of(model, name)
        except MissingMergeDirection:
            missing.append(path)
    assert missing == [], f"declare a merge direction (wardgate.config.lattice) on {missing}"
    paths = {path for path, _, _ in _policy_fields()}
    # The walk reaches into the nested sections (it would pass vacuously otherwise).
    assert {"limits.maxUrlBytes", "waf.families", "waf.response.securityHeaders"} <= paths
    assert "waf.families.paranoiaLevel" in paths


def test_a_field_without_a_direction_is_reported() -> None:
    class Section(SpecModel):
        added_later: int = 1

    with pytest.raises(MissingMergeDirection, match=r"Section\.added_later"):
        merge_of(Section, "added_later")
    with pytest.raises(KeyError):
        merge_of(LimitsSpec, "renamed_field")


def test_every_ceiling_bounds_a_limit_that_can_be_lowered() -> None:
    for name in LimitsCeilingSpec.model_fields:
        assert merge_of(LimitsSpec, name) in (LOWER, SUBSET), name


def test_every_waf_family_can_get_a_floor() -> None:
    floor = WafFloorSpec.model_validate(
        {"families": {f.value: {"minimumParanoiaLevel": 2} for f in WafFamily}}
    )
    assert set(floor.families) == set(WafFamily)
    assert MODE_STRICTNESS.order == (WafMode.OFF, WafMode.DETECT, WafMode.ENFORCE)


MERGES = {
    "lower": (LOWER, st.integers(0, 100)),
    "higher": (HIGHER, st.integers(1, 4)),
    "ranked": (MODE_STRICTNESS, st.sampled_from(list(WafMode))),
    "required": (REQUIRED, st.booleans()),
}


@pytest.mark.parametrize("kind", sorted(MERGES))
@given(data=st.data())
def test_the_meet_is_commutative_associative_idempotent(kind: str, data: st.DataObject) -> None:
    merge, values = MERGES[kind]
    a, b, c = data.draw(values), data.draw(values), data.draw(values)
    assert merge.strictest(a, b) == merge.strictest(b, a)
    assert merge.strictest(merge.strictest(a, b), c) == merge.strictest(a, merge.strictest(b, c))
    assert merge.strictest(a, a) == a
    met = merge.strictest(a, b)
    # Nothing is stricter than the meet of a value and itself: stricter() has nothing to do.
    assert merge.stricter(met, a) is None and merge.stricter(met, b) is None


@given(st.lists(st.sampled_from("ABCDE"), unique=True), st.lists(st.sampled_from("ABCDE")))
def test_subset_meet_keeps_only_allowed_items_in_order(current: list[str], bound: list[str]):
    kept = SUBSET.intersect(current, bound)
    assert kept == [item for item in current if item in bound]
    assert SUBSET.strictest(current, bound) == kept
