"""The request schema generated from the contract: what it accepts and what it refuses."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from loopline.data.contract import FieldOrder
from loopline.data.datasets import get_dataset
from loopline.serving.schema import RequestSchema
from tests.strategies import records

CONTRACT = get_dataset("nycflights13").contract
REQUEST = RequestSchema.of(CONTRACT, max_records=3, record_name="FlightRecord")
ORDERS = [rule for rule in CONTRACT.row_rules if isinstance(rule, FieldOrder)]
FlightRecord = REQUEST.record_adapter
GOOD = {
    "year": 2013, "month": 6, "day": 14, "sched_dep_time": 1730, "sched_arr_time": 2015,
    "carrier": "UA", "flight": 1545, "tailnum": "N14228", "origin": "EWR", "dest": "IAH",
    "distance": 1400, "temp": 75.2, "dewp": 60.1, "humid": 59.0, "wind_dir": 270.0,
    "wind_speed": 10.4, "wind_gust": None, "precip": 0.0, "pressure": 1012.0, "visib": 10.0,
}  # fmt: skip


def test_the_schema_has_exactly_the_contract_record_fields() -> None:
    fields = list(REQUEST.record_json_schema()["properties"])
    assert fields == [f.name for f in CONTRACT.record_fields()]


@settings(max_examples=60, deadline=None)
@given(batch=records(CONTRACT, max_size=5))
def test_every_record_the_contract_allows_is_accepted(batch) -> None:
    """Each value is allowed; the API refuses a date that does not exist (the contract
    allows day 31 in any month) and a record breaking an order rule, and nothing else."""
    for row in json.loads(batch.to_json(orient="records")):
        errors, expected = _errors(row), _refusal(row)
        if expected is None:
            assert errors == []
        else:
            assert [e["type"] for e in errors] == ["value_error"]
            assert errors[0]["msg"].startswith(f"Value error, {expected}"), errors


def _refusal(row: dict) -> str | None:
    """Why the API must refuse a record of allowed values (None: it must not)."""
    try:
        dt.date(row["year"], row["month"], row["day"])
    except ValueError:
        return "year/month/day"
    for rule in ORDERS:
        left, right = row.get(rule.left), row.get(rule.right)
        if left is not None and right is not None and not rule.holds(left, right):
            return f"breaks the contract's rule {rule.name}"
    return None


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"dest": "EWR"}, "flights: origin differs from dest"),
        ({"dewp": 80.0}, "weather: dewp is at most temp"),
        ({"wind_speed": 30.0, "wind_gust": 25.0}, "weather: wind_speed is at most wind_gust"),
    ],
)
def test_a_record_breaking_an_order_rule_is_refused_naming_it(change: dict, rule: str) -> None:
    body = json.dumps({"records": [GOOD | change]}).encode()
    with pytest.raises(ValidationError, match=f"breaks the contract's rule {rule}"):
        REQUEST.records(body)


def test_an_order_rule_is_not_judged_without_both_fields() -> None:
    """No gust reported (most hours): any wind speed passes, as in the data gate."""
    no_gust = GOOD | {"wind_speed": 30.0, "wind_gust": None}
    assert REQUEST.records(json.dumps({"records": [no_gust]}).encode()) == [no_gust]


def _errors(row: dict) -> list[dict]:
    try:
        FlightRecord.validate_python(row)
    except ValidationError as error:
        return error.errors()
    return []


def test_nullable_weather_may_be_omitted() -> None:
    record = FlightRecord.validate_python(
        {k: v for k, v in GOOD.items() if k not in ("temp", "wind_gust")}
    )
    assert "temp" not in record  # an absent field stays absent: the featurizer reads None
    assert record == {k: v for k, v in GOOD.items() if k not in ("temp", "wind_gust")}


def _error_fields(payload: dict) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        FlightRecord.validate_json(json.dumps(payload, allow_nan=True))
    return {str(e["loc"][0]) if e["loc"] else e["msg"] for e in caught.value.errors()}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"origin": "XXX"}, "origin"),  # not an allowed category
        ({"carrier": "ZZ"}, "carrier"),
        ({"dest": "houston"}, "dest"),  # does not match the FAA pattern
        ({"distance": "1400"}, "distance"),  # a string is not an integer
        ({"flight": 12.5}, "flight"),
        ({"month": 13}, "month"),  # out of range
        ({"sched_dep_time": 2400}, "sched_dep_time"),  # scheduled clocks run 0000-2359
        ({"temp": float("nan")}, "temp"),  # not finite
        ({"wind_speed": float("inf")}, "wind_speed"),
        ({"surprise": 1}, "surprise"),  # unknown field
    ],
)
def test_bad_values_are_refused_naming_the_field(change: dict, field: str) -> None:
    assert field in _error_fields(GOOD | change)


def test_a_missing_required_field_is_named() -> None:
    assert "carrier" in _error_fields({k: v for k, v in GOOD.items() if k != "carrier"})


@pytest.mark.parametrize(
    ("change", "message"),
    [({"month": 2, "day": 30}, "year/month/day"), ({"sched_dep_time": 1275}, "sched_dep_time")],
)
def test_impossible_dates_and_clock_times_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FlightRecord.validate_python(GOOD | change)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": []}, "records"),  # at least one
        ({"records": [GOOD] * 4}, "records"),  # at most max_records
        ({"records": [GOOD], "extra": 1}, "extra"),
        ({"rows": [GOOD]}, "records"),
    ],
)
def test_a_request_body_is_one_list_of_records_within_the_limit(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        REQUEST.records(json.dumps(body).encode())
    assert field in {str(e["loc"][0]) for e in caught.value.errors()}


def test_a_valid_body_yields_plain_dict_records() -> None:
    assert REQUEST.records(json.dumps({"records": [GOOD, GOOD]}).encode()) == [GOOD, GOOD]


def test_the_published_body_schema_has_no_references() -> None:
    """OpenAPI 3.0 (BentoML's /docs.json) has no `$defs`: the record schema is inlined."""
    text = json.dumps(REQUEST.json_schema())
    assert "$ref" not in text
    assert "$defs" not in text
