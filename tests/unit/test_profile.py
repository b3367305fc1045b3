"""Profiles: mergeable, the same figures as Evidently and scikit-learn, drift tests by size."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from loopline.core.params import Params
from loopline.data.datasets.base import Dataset
from loopline.monitoring.drift import MonitoredColumns, drift_tests, field_drift, pool_rare
from loopline.monitoring.profile import (
    CategoryCounts,
    NumberSketch,
    Profile,
    ProfiledColumns,
    merge_all,
    profile_frame,
)
from loopline.monitoring.snapshot import evidently_drift, run_report


@pytest.fixture(scope="module")
def examples(small_tables: dict, small_params: Params, dataset: Dataset) -> pd.DataFrame:
    """The slice's examples as logged predictions (a seeded probability, its label, a day)."""
    frame = dataset.build_examples(small_tables, small_params.dataset)
    probability = np.random.default_rng(0).beta(2, 5, len(frame))
    late = np.random.default_rng(1).random(len(frame)) < probability  # calibrated by design
    return frame.assign(
        probability=probability, label=(probability > 0.3).astype(int),
        **{dataset.target_column: late.astype(int)}, model_version="3",
        event_day=frame[dataset.time_column].dt.strftime("%Y-%m-%d"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def columns(dataset: Dataset) -> MonitoredColumns:
    """The contract's monitored fields."""
    return MonitoredColumns.from_contract(dataset.contract, dataset.target_column)


def _in_chunks(frame: pd.DataFrame, columns: ProfiledColumns, rows: int) -> Profile:
    """The merge of the profiles of `rows`-row chunks (what the monitor's read does)."""
    return merge_all(profile_frame(frame.iloc[at : at + rows], columns)
                     for at in range(0, len(frame), rows))  # fmt: skip


def _spring_and_july(examples: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, ...]:
    when = examples[dataset.time_column]
    return examples[when.dt.month <= 6], examples[when.dt.month == 7]


def test_a_profile_read_in_chunks_is_the_profile_of_the_whole(
    examples: pd.DataFrame, columns: MonitoredColumns
) -> None:
    profiled = columns.profiled("event_day")
    whole, chunked = profile_frame(examples, profiled), _in_chunks(examples, profiled, 1000)
    assert chunked.rows == whole.rows == len(examples)
    for name, sketch in whole.fields.items():
        other = chunked.fields[name]
        assert other.nulls == sketch.nulls
        if isinstance(sketch, NumberSketch):
            np.testing.assert_array_equal(other.keys, sketch.keys)
            np.testing.assert_array_equal(other.counts, sketch.counts)
            np.testing.assert_allclose(other.sums, sketch.sums, rtol=1e-12)
        else:
            assert other.counts == sketch.counts
    assert chunked.days == whole.days
    assert chunked.labeled.served == whole.labeled.served
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    again = Profile.from_dict(chunked.as_dict())  # what the monitor's state stores
    assert again.as_dict() == chunked.as_dict()


def test_profile_distances_agree_with_evidently_on_the_same_rows(
    examples: pd.DataFrame, dataset: Dataset, columns: MonitoredColumns, params: Params
) -> None:
    spring, july = _spring_and_july(examples, dataset)
    snapshot = run_report(
        spring, july, columns, labeled=False, timestamp=dt.datetime(2013, 7, 31), name="july"
    )
    theirs = evidently_drift(snapshot)
    profiled = columns.profiled("event_day")
    reference = columns.reference_profile(spring)
    current = profile_frame(july, profiled)
    unpooled = params.monitor.drift.model_copy(update={"min_expected": 1e-9})
    for name in columns.tested:
        ours = field_drift(
            name, reference.fields[name], current.fields[name], unpooled, seed=0, level=0.05
        )
        assert ours.distance == pytest.approx(theirs[name], rel=0.01, abs=1e-3), name


def test_quality_from_a_profile_matches_scikit_learn(
    examples: pd.DataFrame, columns: MonitoredColumns, dataset: Dataset
) -> None:
    labeled = _in_chunks(examples, columns.profiled("event_day"), 3000).labeled
    truth, proba = examples[dataset.target_column], examples["probability"]
    quality = labeled.quality()
    assert quality["roc_auc"] == pytest.approx(metrics.roc_auc_score(truth, proba), abs=1e-3)
    assert quality["pr_auc"] == pytest.approx(
        metrics.average_precision_score(truth, proba), abs=2e-3
    )
    for name, score in (("precision", metrics.precision_score), ("recall", metrics.recall_score),
                        ("f1", metrics.f1_score)):  # fmt: skip
        assert quality[name] == pytest.approx(score(truth, examples["label"]), rel=1e-12)
    assert quality["brier"] == pytest.approx(metrics.brier_score_loss(truth, proba), rel=1e-9)
    assert quality["log_loss"] == pytest.approx(metrics.log_loss(truth, proba), rel=1e-9)
    assert labeled.rows == len(examples)


def test_a_batch_with_one_class_has_no_ranking_quality(
    examples: pd.DataFrame, columns: MonitoredColumns, dataset: Dataset
) -> None:
    on_time = examples[examples[dataset.target_column] == 0]
    assert profile_frame(on_time, columns.profiled("event_day")).labeled.quality() == {}


def test_batches_of_the_training_data_itself_rarely_drift_at_any_size(
    examples: pd.DataFrame, dataset: Dataset, columns: MonitoredColumns, params: Params
) -> None:
    """A batch drifts (any counted field) at most ~5% of the time; a fixed 0.1 limit: often."""
    spring, _ = _spring_and_july(examples, dataset)
    profiled = columns.profiled("event_day")
    reference = columns.reference_profile(spring.sample(3000, random_state=0))
    tests, draws = params.monitor.drift, 100
    drifted, fixed = 0, pd.Series(0, index=list(columns.share))
    for draw in range(draws):
        batch = profile_frame(spring.sample(200, random_state=100 + draw), profiled)
        found = drift_tests(reference, batch, columns, tests, seed=draw)
        drifted += found.share > 0
        fixed += [found.fields[name].distance > tests.effect_limit for name in columns.share]
    assert drifted / draws <= 0.1
    assert (fixed / draws).max() >= 0.2, fixed  # what a limit blind to the size does


def test_real_drift_is_still_caught(
    examples: pd.DataFrame, dataset: Dataset, columns: MonitoredColumns, params: Params
) -> None:
    """Departures moved three hours later, and autumn weather, in batches of 500 rows."""
    spring, _ = _spring_and_july(examples, dataset)
    profiled = columns.profiled("event_day")
    reference = columns.reference_profile(spring)
    moved = spring.sample(500, random_state=7)
    moved = moved.assign(sched_dep_time=(moved["sched_dep_time"] + 300).clip(upper=2359))
    found = drift_tests(reference, profile_frame(moved, profiled), columns, params.monitor.drift, 0)
    assert found.drifted == ["sched_dep_time"]
    autumn = examples[examples[dataset.time_column].dt.month >= 10].sample(500, random_state=8)
    weather = drift_tests(
        reference, profile_frame(autumn, profiled), columns, params.monitor.drift, 0
    )
    assert "temp" in weather.reported_drifted


def test_rare_categories_are_pooled_with_those_never_seen() -> None:
    reference = {"JFK": 500, "LGA": 480, "EWR": 18, "SFO": 2}
    before, now = pool_rare(reference, {"JFK": 60, "LGA": 30, "XXX": 10}, rows=100, min_expected=5)
    # EWR (1.8 expected) and SFO (0.2) are pooled, and so is XXX, which the reference lacks
    np.testing.assert_array_equal(before, [500, 480, 20])
    np.testing.assert_array_equal(now, [60, 30, 10])
    kept, _ = pool_rare(reference, {"JFK": 1}, rows=10_000, min_expected=5)
    assert len(kept) == 4  # at 10,000 rows every category is expected often enough


def test_a_field_empty_in_the_batch_is_not_tested(
    examples: pd.DataFrame, columns: MonitoredColumns, params: Params
) -> None:
    profiled = columns.profiled("event_day")
    reference = columns.reference_profile(examples)
    dead = examples.head(800).assign(temp=np.nan, carrier=None)
    found = drift_tests(reference, profile_frame(dead, profiled), columns, params.monitor.drift, 0)
    assert "temp" not in found.fields
    assert "carrier" not in found.fields
    assert "dest" in found.fields


def test_sketches_merge_like_their_values() -> None:
    left, right = np.array([1.0, 2.5, np.nan, -3.0]), np.array([2.5, 1e6, 0.0])
    merged = NumberSketch.of(left).merge(NumberSketch.of(right))
    whole = NumberSketch.of(np.concatenate([left, right]))
    assert (merged.nulls, merged.count) == (whole.nulls, whole.count) == (1, 6)
    np.testing.assert_array_equal(merged.keys, whole.keys)
    assert merged.mean == pytest.approx(whole.mean)
    assert list(merged.support) == sorted(merged.support)  # bins keep the values' order
    counts = CategoryCounts.of(pd.Series(["a", None, "b"])).merge(
        CategoryCounts.of(pd.Series(["b"]))
    )
    assert (counts.nulls, counts.counts) == (1, {"a": 1, "b": 2})
