"""The Great Expectations suite passes real data and catches each kind of corruption."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.errors import DataValidationError
from loopline.core.params import Params
from loopline.data.datasets.base import Dataset
from loopline.data.datasets.nycflights13 import LOCAL
from loopline.data.rules import local_time
from loopline.data.validation import ValidationReport, validate_tables


def _run(
    tables: dict, dataset: Dataset, params: Params, docs: Path | None = None
) -> ValidationReport:
    return validate_tables(tables, dataset.contract, params.validate_.min_rows, docs_dir=docs)


def test_the_real_data_slice_passes_and_builds_data_docs(
    small_tables: dict, dataset: Dataset, small_params: Params, tmp_path: Path
) -> None:
    report = _run(small_tables, dataset, small_params, docs=tmp_path / "docs")
    assert report.success, report.summary()
    assert report.evaluated > 200
    assert (tmp_path / "docs" / "index.html").is_file()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))


def _drop_column(t: dict) -> None:
    t["flights"] = t["flights"].drop(columns="dest")


def _wrong_type(t: dict) -> None:
    t["flights"] = t["flights"].assign(distance=t["flights"]["distance"].astype(str))


def _out_of_range(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[:40], "sched_dep_time"] = 2500
    t["flights"] = flights


def _null_burst(t: dict) -> None:
    weather = t["weather"].copy()
    weather.loc[weather.index[: len(weather) // 3], "temp"] = np.nan
    t["weather"] = weather


def _duplicate_keys(t: dict) -> None:
    t["planes"] = pd.concat([t["planes"], t["planes"].iloc[:5]], ignore_index=True)


def _unknown_category(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[:10], "origin"] = "XXX"
    t["flights"] = flights


def _broken_reference(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[: len(flights) // 2], "tailnum"] = "N0PE"
    t["flights"] = flights


def _truncated(t: dict) -> None:
    t["flights"] = t["flights"].iloc[:100]


def _local_day(frame: pd.DataFrame) -> pd.Series:
    return local_time(frame["time_hour"], LOCAL).dt.strftime("%Y-%m-%d")


def _label_source_null_for_a_month(t: dict) -> None:
    flights = t["flights"].copy()
    march = flights.index[flights["month"] == 3]
    flights.loc[march[::4], "arr_delay"] = np.nan  # 25% of March, ~2% of the year
    t["flights"] = flights


def _label_source_zeroed_for_a_month(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights["month"] == 9, "arr_delay"] = 0  # a feed reporting "on time" for all
    t["flights"] = flights


def _weather_missing_for_a_day_at_one_origin(t: dict) -> None:
    weather = t["weather"]
    gone = (weather["origin"] == "JFK") & (_local_day(weather) == "2013-03-05")
    t["weather"] = weather[~gone].reset_index(drop=True)


def _a_day_of_flights_missing(t: dict) -> None:
    flights = t["flights"]
    t["flights"] = flights[_local_day(flights) != "2013-06-12"].reset_index(drop=True)


def _scheduled_at_2400(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[:20], "sched_dep_time"] = 2400
    t["flights"] = flights


def _year_disagrees_with_time_hour(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[:100], "year"] = 2014
    t["flights"] = flights


def _clock_minute_past_59(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[:7], "sched_arr_time"] = 1275
    t["flights"] = flights


def _delay_disagrees_with_clocks(t: dict) -> None:
    flights = t["flights"].copy()
    departed = flights.index[flights["dep_delay"].notna()][:50]
    flights.loc[departed, "dep_delay"] += 30
    t["flights"] = flights


def _cancelled_but_arrived(t: dict) -> None:
    flights = t["flights"].copy()
    arrived = flights.index[flights["arr_time"].notna()][:12]
    flights.loc[arrived, ["dep_time", "dep_delay"]] = np.nan
    t["flights"] = flights


def _routes_with_a_second_distance(t: dict) -> None:
    """Three routes, half their flights a hundred miles longer: a key with two attributes."""
    flights = t["flights"].copy()
    for origin, dest in (("JFK", "LAX"), ("LGA", "ATL"), ("EWR", "ORD")):
        route = flights.index[(flights["origin"] == origin) & (flights["dest"] == dest)]
        flights.loc[route[::2], "distance"] += 100
    t["flights"] = flights


def _destination_is_the_origin(t: dict) -> None:
    flights = t["flights"].copy()
    flights.loc[flights.index[:20], "dest"] = flights.loc[flights.index[:20], "origin"]
    t["flights"] = flights


def _dew_point_above_temperature(t: dict) -> None:
    """Dew point and temperature swapped in 30 readings: each still inside its range."""
    weather = t["weather"].copy()
    rows = weather.index[weather["dewp"] < weather["temp"] - 5][:30]
    weather.loc[rows, ["temp", "dewp"]] = weather.loc[rows, ["dewp", "temp"]].to_numpy()
    t["weather"] = weather


def _a_month_of_temperatures_in_celsius(t: dict) -> None:
    """July sent in Celsius: 22-38 C is inside the contract's -40..120 F range."""
    weather = t["weather"].copy()
    july = _local_day(weather).str.startswith("2013-07")
    weather.loc[july, "temp"] = (weather.loc[july, "temp"] - 32) * 5 / 9
    t["weather"] = weather


CORRUPTIONS: dict[str, tuple[Callable[[dict], None], str, str, str]] = {
    # name: (corrupt, table, column, expectation that must fail)
    "missing column": (_drop_column, "flights", "dest", "expect_column_to_exist"),
    "wrong type": (_wrong_type, "flights", "distance", "expect_column_values_to_be_in_type_list"),
    "out of range": (
        _out_of_range,
        "flights",
        "sched_dep_time",
        "expect_column_values_to_be_between",
    ),
    "null burst": (_null_burst, "weather", "temp", "expect_column_values_to_not_be_null"),
    "duplicate keys": (_duplicate_keys, "planes", "tailnum", "expect_column_values_to_be_unique"),
    "unknown category": (
        _unknown_category,
        "flights",
        "origin",
        "expect_column_values_to_be_in_set",
    ),
    "broken reference": (
        _broken_reference,
        "links",
        "flights.tailnum->planes",
        "expect_column_values_to_be_in_set",
    ),
    "truncated table": (_truncated, "flights", None, "expect_table_row_count_to_be_between"),
    # local faults: one month, one day, one origin-day
    "label source null for 25% of one month": (
        _label_source_null_for_a_month, "groups",
        "flights.arr_delay null fraction per month", "expect_column_values_to_be_between",
    ),
    "label source zeroed for one month": (
        _label_source_zeroed_for_a_month, "groups", "flights.arr_delay >= 15.0 share per month",
        "expect_column_values_to_be_between",
    ),
    "weather missing for one day at one origin": (
        _weather_missing_for_a_day_at_one_origin, "groups", "weather rows per origin-day",
        "expect_column_values_to_be_between",
    ),
    "one day of flights missing": (
        _a_day_of_flights_missing, "groups", "flights rows per day",
        "expect_column_values_to_be_between",
    ),
    # rules across columns
    "scheduled at 2400": (
        _scheduled_at_2400, "flights", "sched_dep_time", "expect_column_values_to_be_between",
    ),
    "year disagrees with time_hour": (
        _year_disagrees_with_time_hour, "relations",
        "flights: year+month+day+hour agree with time_hour", "expect_column_values_to_be_in_set",
    ),
    "clock minute past 59": (
        _clock_minute_past_59, "relations", "flights.sched_arr_time: HHMM minutes 00-59",
        "expect_column_values_to_be_in_set",
    ),
    "delay disagrees with the clocks": (
        _delay_disagrees_with_clocks, "relations", "flights: dep_delay = dep_time - sched_dep_time",
        "expect_column_values_to_be_in_set",
    ),
    "cancelled but arrived": (
        _cancelled_but_arrived, "relations",
        "flights: no dep_time -> no dep_delay, arr_time, arr_delay, air_time",
        "expect_column_values_to_be_in_set",
    ),
    # a dependency between rows, an order inside a row, a period out of line
    "routes with a second distance": (
        _routes_with_a_second_distance, "groups",
        "flights.distance distinct values per origin-dest", "expect_column_values_to_be_between",
    ),
    "destination is the origin": (
        _destination_is_the_origin, "relations", "flights: origin differs from dest",
        "expect_column_values_to_be_in_set",
    ),
    "dew point above temperature": (
        _dew_point_above_temperature, "relations", "weather: dewp is at most temp",
        "expect_column_values_to_be_in_set",
    ),
    "a month of temperatures in Celsius": (
        _a_month_of_temperatures_in_celsius, "groups",
        "weather.temp median shift from neighbours per origin-month",
        "expect_column_values_to_be_between",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_caught_and_named(
    name: str, small_tables: dict, dataset: Dataset, small_params: Params
) -> None:
    corrupt, table, column, expectation = CORRUPTIONS[name]
    tables = dict(small_tables)
    corrupt(tables)
    report = _run(tables, dataset, small_params)
    assert not report.success
    failed = {(o.table, o.column, o.expectation) for o in report.failures()}
    assert (table, column, expectation) in failed, report.summary()
    with pytest.raises(DataValidationError) as caught:
        report.raise_for_failures()
    where = column if table in ("groups", "relations") else f"{table}.{column}" if column else table
    assert f"{where}: {expectation} failed" in str(caught.value)


@pytest.mark.parametrize(
    ("corrupt", "line"),
    [
        (_label_source_null_for_a_month,
         "flights.arr_delay null fraction per month: expect_column_values_to_be_between failed: "
         "1 groups fail (8.333%); limit: <= 0.08 in every group; e.g. 2013-03=0.27"),
        (_weather_missing_for_a_day_at_one_origin,
         "weather rows per origin-day: expect_column_values_to_be_between failed: 1 groups fail "
         "(0.092%); limit: >= 12 in every group; e.g. JFK 2013-03-05=0"),
        (_a_day_of_flights_missing,
         "flights rows per day: expect_column_values_to_be_between failed: 1 groups fail "
         "(0.274%); limit: between 0.5x the median group and 1.5x the median group in every "
         "group; e.g. 2013-06-12=0x median"),
        (_year_disagrees_with_time_hour,
         "flights: year+month+day+hour agree with time_hour: expect_column_values_to_be_in_set "
         "failed: 100 rows fail (0.742%); limit: holds in every row; e.g. year=2014"),
        (_routes_with_a_second_distance,
         "flights.distance distinct values per origin-dest: expect_column_values_to_be_between "
         "failed: 4 groups fail (1.932%); limit: <= 1 in all but 2 groups; e.g. EWR ORD: 719, "
         "819; JFK EGE: 1746, 1747; JFK LAX: 2475, 2575; LGA ATL: 762, 862"),
        (_destination_is_the_origin,
         "flights: origin differs from dest: expect_column_values_to_be_in_set failed: 20 rows "
         "fail (0.148%); limit: holds in every row; e.g. year=2013 month=1 day=1 carrier=UA "
         "flight=1545 origin=EWR sched_dep_time=515 dest=EWR"),
        (_dew_point_above_temperature,
         "weather: dewp is at most temp: expect_column_values_to_be_in_set failed: 30 rows fail "
         "(0.115%); limit: holds in every row; e.g. origin=EWR time_hour=2013-01-01 06:00:00 "
         "dewp=39.02 temp=26.06"),
        (_a_month_of_temperatures_in_celsius,
         "weather.temp median shift from neighbours per origin-month: "
         "expect_column_values_to_be_between failed: 9 groups fail (25.000%); limit: <= 2.5 in "
         "every group; e.g. JFK 2013-07=12.66; LGA 2013-07=11.89; EWR 2013-07=11.53"),
    ],
)  # fmt: skip
def test_a_local_fault_is_named_with_its_limit_and_the_groups_or_rows_that_break_it(
    corrupt: Callable[[dict], None],
    line: str,
    small_tables: dict,
    dataset: Dataset,
    small_params: Params,
) -> None:
    tables = dict(small_tables)
    corrupt(tables)
    summary = _run(tables, dataset, small_params).summary()
    assert line in summary, summary


def test_a_breaking_row_is_shown_by_its_key_and_the_columns_of_the_rule(
    small_tables: dict, dataset: Dataset, small_params: Params
) -> None:
    tables = dict(small_tables)
    _year_disagrees_with_time_hour(tables)
    failure = next(o for o in _run(tables, dataset, small_params).failures()
                   if o.table == "relations")  # fmt: skip
    first = tables["flights"].iloc[0]
    assert failure.examples[0].startswith(f"year=2014 month={first['month']} day={first['day']}")
    assert f"time_hour={first['time_hour']}" in failure.examples[0]


def test_failure_message_quotes_offending_values(
    small_tables: dict, dataset: Dataset, small_params: Params
) -> None:
    tables = dict(small_tables)
    _out_of_range(tables)
    failure = next(
        o for o in _run(tables, dataset, small_params).failures() if o.column == "sched_dep_time"
    )
    assert failure.unexpected_count == 40
    assert "2500" in failure.describe()
