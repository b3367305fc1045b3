"""The time split: disjoint, ordered windows; rows outside them are dropped."""

from __future__ import annotations

import pandas as pd
import pytest

from loopline.config import DateWindow, Params
from loopline.errors import ConfigError
from loopline.features import split_by_time


@pytest.fixture(scope="module")
def examples(dataset, small_tables, params) -> pd.DataFrame:
    return dataset.build_examples(small_tables, params.dataset)


def test_splits_do_not_share_a_single_day(examples: pd.DataFrame, params: Params) -> None:
    splits = split_by_time(examples, "scheduled_departure", params.featurize.split.windows())
    days = {name: set(frame["scheduled_departure"].dt.date) for name, frame in splits.items()}
    assert not days["train"] & days["valid"]
    assert not days["valid"] & days["test"]
    assert max(days["train"]) < min(days["valid"]) <= max(days["valid"]) < min(days["test"])


def test_each_split_stays_inside_its_window(examples: pd.DataFrame, params: Params) -> None:
    windows = params.featurize.split.windows()
    for name, frame in split_by_time(examples, "scheduled_departure", windows).items():
        dates = frame["scheduled_departure"].dt.date
        assert dates.min() >= windows[name].start
        assert dates.max() <= windows[name].end


def test_rows_outside_every_window_are_dropped(examples: pd.DataFrame, params: Params) -> None:
    splits = split_by_time(examples, "scheduled_departure", params.featurize.split.windows())
    after = examples["scheduled_departure"] > pd.Timestamp(
        params.featurize.split.test.end
    ) + pd.Timedelta(days=1)
    assert after.any()
    assert sum(len(s) for s in splits.values()) == len(examples) - after.sum()


def test_an_empty_window_names_the_data_range(examples: pd.DataFrame) -> None:
    windows = {"train": DateWindow(start="2014-01-01", end="2014-02-01")}
    with pytest.raises(ConfigError, match=r"no rows; the data covers 2013-01-01\.\.2013-12-31"):
        split_by_time(examples, "scheduled_departure", windows)
