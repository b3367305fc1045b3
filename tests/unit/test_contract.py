"""The data contract is consistent, and its record can never carry leakage columns."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loopline.data.contract import DataContract, Field_, Link, Role, Table
from loopline.data.datasets.base import Dataset


def test_record_fields_exclude_outcomes_and_target(dataset: Dataset) -> None:
    roles = {f.role for f in dataset.contract.record_fields()}
    assert Role.OUTCOME not in roles
    assert Role.TARGET not in roles


def test_post_departure_columns_are_outcomes(dataset: Dataset) -> None:
    flights = dataset.contract.table("flights")
    for name in ("dep_time", "dep_delay", "arr_time", "air_time"):
        assert flights.field(name).role is Role.OUTCOME
    assert flights.field("arr_delay").role is Role.TARGET


def test_record_names_are_unique_and_follow_the_contract(dataset: Dataset) -> None:
    names = dataset.record_columns()
    assert len(names) == len(set(names))
    assert names[:3] == ["year", "month", "day"]
    assert "temp" in names  # weather joins into the record
    assert "hour" not in names  # redundant attributes stay out


def test_an_outcome_cannot_be_declared_as_a_prediction_input() -> None:
    with pytest.raises(ValidationError, match="cannot be a prediction input"):
        Field_(name="dep_delay", dtype="int", role=Role.OUTCOME, in_record=True, description="x")


def test_nullable_field_must_state_its_null_budget() -> None:
    with pytest.raises(ValidationError, match="max_null_fraction"):
        Field_(name="x", dtype="float", role=Role.FEATURE, nullable=True, description="x")


def test_ranges_only_apply_to_numbers() -> None:
    with pytest.raises(ValidationError, match="min/max only apply"):
        Field_(name="x", dtype="string", role=Role.FEATURE, min=0, description="x")


def test_links_must_name_declared_columns() -> None:
    table = Table(
        name="a",
        key=("id",),
        description="x",
        fields=(Field_(name="id", dtype="int", role=Role.KEY, description="x"),),
    )
    with pytest.raises(ValidationError, match="has no columns"):
        DataContract(
            tables=(table,),
            links=(Link(source="a", columns=("nope",), target="a", target_columns=("id",)),),
        )


def test_table_key_must_be_declared() -> None:
    with pytest.raises(ValidationError, match="not declared"):
        Table(
            name="a",
            key=("missing",),
            description="x",
            fields=(Field_(name="id", dtype="int", role=Role.KEY, description="x"),),
        )
