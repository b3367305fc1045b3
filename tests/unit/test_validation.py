"""The Great Expectations suite passes real data and catches each kind of corruption."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import Params
from loopline.datasets.base import Dataset
from loopline.errors import DataValidationError
from loopline.validation import ValidationReport, validate_tables


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
}


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
    where = f"{table}.{column}" if column else table
    assert f"{where}: {expectation} failed" in str(caught.value)


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
