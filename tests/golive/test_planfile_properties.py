"""Property: whatever is done to the demo plan, validating it gives a plan or a PlanError with
paths, never another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golive.demo.fleet import DemoFleet
from golive.errors import PlanError
from golive.planfile import load_plan

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "{",
            "}",
            "{}",
            "{address.__class__}",
            "../../etc",
            "/",
            "0%",
            "150%",
            "-1s",
            "2026-02-30",
            "x" * 5000,
            "\x00",
            "é",
            "*",
            "1e999",
            "0",
            "inf",
            "prod",
        ]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    fleet = DemoFleet(tmp_path_factory.mktemp("fleet"))
    path = fleet.write_plan("2.0.0")
    return path, yaml.safe_load(path.read_text())


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a parsed plan a mutation can reach."""
    found = [prefix] if prefix else []
    if isinstance(value, dict | list):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in list(children):
            found += paths_in(child, (*prefix, key))
    return found


def mutate(plan: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    plan = copy.deepcopy(plan)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        places = paths_in(plan)
        if not places:
            break
        place = data.draw(st.sampled_from(places))
        parent: Any = plan
        for key in place[:-1]:
            parent = parent[key]
        key = place[-1]
        how = data.draw(st.sampled_from(["delete", "duplicate", "retype", "nest", "odd"]))
        if how == "delete":
            del parent[key]
        elif how == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif how == "nest":
            parent[key] = {"x": parent[key]} if data.draw(st.booleans()) else [parent[key]]
        else:
            parent[key] = data.draw(ODD_VALUES)
    return plan


def validates_or_explains(path: Path) -> None:
    try:
        load_plan(path)
    except PlanError as error:
        assert error.problems and all(str(p) for p in error.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_demo_plan_validates_or_says_what_is_wrong(
    demo_plan: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    path, plan = demo_plan
    mutated = path.with_name("mutated.yaml")
    mutated.write_text(yaml.safe_dump(mutate(plan, data), allow_unicode=True))
    validates_or_explains(mutated)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_plan_text_with_bytes_cut_or_inserted_validates_or_says_what_is_wrong(
    demo_plan: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    path, _ = demo_plan
    text = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(min_value=1, max_value=5))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        if data.draw(st.booleans()):
            del text[at : at + data.draw(st.integers(min_value=1, max_value=20))]
        else:
            text[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    mutated = path.with_name("garbled.yaml")
    mutated.write_bytes(bytes(text))
    validates_or_explains(mutated)
