"""The splits: disjoint, ordered time windows (rows outside them are dropped), or seeded,
stratified fractions for a dataset without time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from loopline.core import tags
from loopline.core.errors import ConfigError
from loopline.core.params import DateWindow, FractionSplit, Params, load_params
from loopline.data.datasets import get_dataset
from loopline.data.splits import split_at_random, split_by_time, window_tags
from loopline.data.time_axis import TimeAxis


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


# -- fractions (a dataset without time) ----------------------------------------------------------

FRACTIONS = FractionSplit(train=0.5, valid=0.15, test=0.15)


def _labeled(rows: int, positive_every: int) -> pd.DataFrame:
    return pd.DataFrame({"key": np.arange(rows), "target": (np.arange(rows) % positive_every == 0)})


def test_fractions_keep_the_positive_rate_in_every_split_and_leave_the_rest_out() -> None:
    examples = _labeled(10_000, positive_every=4)  # 25% positive
    splits = split_at_random(examples, "target", FRACTIONS, seed=7)
    keys = pd.concat([frame["key"] for frame in splits.values()])
    assert keys.is_unique  # no example in two splits
    assert [len(f) for f in splits.values()] == [5000, 1500, 1500]  # 2,000 left: traffic
    for frame in splits.values():
        assert frame["target"].mean() == pytest.approx(0.25, abs=1e-3)
        assert frame["key"].is_monotonic_increasing  # original order kept


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    examples = _labeled(2_000, positive_every=3)
    first = split_at_random(examples, "target", FRACTIONS, seed=7)
    again = split_at_random(examples, "target", FRACTIONS, seed=7)
    other = split_at_random(examples, "target", FRACTIONS, seed=8)
    assert all(first[n]["key"].equals(again[n]["key"]) for n in first)
    assert not first["train"]["key"].equals(other["train"]["key"])


def test_fractions_over_one_and_date_windows_without_time_are_refused(params: Params) -> None:
    with pytest.raises(ValidationError, match=r"add up to 1\.1, over 1"):
        FractionSplit(train=0.6, valid=0.3, test=0.2)
    churn = get_dataset("wa_churn")
    with pytest.raises(ConfigError, match="has no time column: give fractions"):
        TimeAxis.of(churn).split(_labeled(100, 2), params)  # params.yaml gives date windows


def test_wa_churn_params_split_by_fractions(dataset) -> None:
    params = load_params(Path(__file__).parents[2] / "params.wa_churn.yaml")
    assert isinstance(params.featurize.split, FractionSplit)


def test_a_split_by_fractions_is_tagged_as_shares_not_as_bare_numbers() -> None:
    """/metadata shows the train tag: "0.5" read as a window; it is half of the examples."""
    found = window_tags(FractionSplit(train=0.5, valid=0.125, test=0.25))
    assert found[tags.window("train")] == "50% of the examples, at random (seeded, stratified)"
    assert found[tags.window("valid")].startswith("12.5% of the examples")
