"""The shared featurizer: leakage guard, row independence, unknowns, what it learns, and
that its saved tables and every input path (frame, dict records, Arrow) agree exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

from loopline.core.errors import DataContractError
from loopline.core.params import Params
from loopline.data import columns as cols
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import Dataset
from loopline.data.splits import split_by_time
from loopline.data.time_axis import TimeAxis
from loopline.scoring.features import UNKNOWN_CODE, FeatureTables, history_feature_name
from loopline.training.featurize import fit_featurizer
from tests.strategies import records

OUTCOME_COLUMNS = ["dep_time", "dep_delay", "arr_time", "air_time"]
CONTRACT = get_dataset("nycflights13").contract


@pytest.fixture(scope="module")
def splits(dataset: Dataset, small_tables: dict, params: Params) -> dict[str, pd.DataFrame]:
    examples = dataset.build_examples(small_tables, params.dataset)
    return TimeAxis.of(dataset).split(examples, params)


def _fit(dataset: Dataset, tables: dict, params: Params, train: pd.DataFrame) -> FeatureTables:
    return fit_featurizer(train, dataset=dataset, tables=tables, params=params)


@pytest.fixture(scope="module")
def featurizer(dataset, small_tables, params, splits) -> FeatureTables:
    return _fit(dataset, small_tables, params, splits["train"])


def test_features_ignore_everything_known_only_after_departure(
    dataset: Dataset, small_tables: dict, params: Params, featurizer: FeatureTables
) -> None:
    """Scrambling every post-departure column changes no feature of any flight."""
    rng = np.random.default_rng(0)
    scrambled_flights = small_tables["flights"].copy()
    for column in OUTCOME_COLUMNS:
        scrambled_flights[column] = rng.permutation(scrambled_flights[column].to_numpy())
    scrambled = {**small_tables, "flights": scrambled_flights}
    columns = dataset.record_columns()
    original = dataset.build_examples(small_tables, params.dataset)[columns]
    changed = dataset.build_examples(scrambled, params.dataset)[columns]
    pd.testing.assert_frame_equal(featurizer.transform(original), featurizer.transform(changed))


def test_features_of_a_flight_do_not_depend_on_later_flights(
    splits: dict, featurizer: FeatureTables, dataset: Dataset
) -> None:
    """Transforming the first rows alone gives what they get alongside all later rows."""
    test = splits["test"].sort_values(dataset.time_column)[dataset.record_columns()]
    head = test.iloc[:50]
    pd.testing.assert_frame_equal(
        featurizer.transform(head), featurizer.transform(test).loc[head.index]
    )


def test_labels_after_the_training_window_never_reach_the_featurizer(
    dataset: Dataset, small_tables: dict, params: Params
) -> None:
    """Flipping every label after training ends, then splitting and fitting as the stage
    does, leaves every feature of every split unchanged."""
    examples = dataset.build_examples(small_tables, params.dataset)
    after_train = examples[dataset.time_column].dt.date > params.featurize.split.train.end
    flipped = examples.assign(late=examples["late"].where(~after_train, 1 - examples["late"]))
    windows = params.featurize.split.windows()
    honest = split_by_time(examples, dataset.time_column, windows)
    tampered = split_by_time(flipped, dataset.time_column, windows)
    fitted = _fit(dataset, small_tables, params, honest["train"])
    refitted = _fit(dataset, small_tables, params, tampered["train"])
    for name in windows:
        records = honest[name][dataset.record_columns()]
        pd.testing.assert_frame_equal(fitted.transform(records), refitted.transform(records))


def test_history_rate_is_the_smoothed_training_late_rate(
    splits: dict, featurizer: FeatureTables, params: Params
) -> None:
    train = splits["train"]
    carrier = train["carrier"].value_counts().index[0]
    labels = train.loc[train["carrier"] == carrier, "late"]
    m, prior = params.featurize.history_smoothing, train["late"].mean()
    expected = (labels.sum() + m * prior) / (len(labels) + m)
    assert featurizer.history_table("carrier").rate(carrier) == pytest.approx(expected)
    assert featurizer.history_table("carrier").rate("never-seen") == pytest.approx(prior)


def test_history_changes_when_training_labels_change(
    dataset: Dataset, small_tables: dict, params: Params, splits: dict
) -> None:
    """The guard above can fail: training labels do move the learned rates."""
    train = splits["train"]
    fitted = _fit(dataset, small_tables, params, train)
    flipped = _fit(dataset, small_tables, params, train.assign(late=1 - train["late"]))
    name = history_feature_name(("carrier",))
    test = splits["test"][dataset.record_columns()]
    assert not np.allclose(fitted.transform(test)[name], flipped.transform(test)[name])


def test_unknown_categories_and_missing_values_are_handled_as_in_training(
    splits: dict, featurizer: FeatureTables, dataset: Dataset
) -> None:
    record = splits["test"][dataset.record_columns()].iloc[[0]].copy()
    record["dest"] = "ZZZ"
    record["tailnum"] = "N0NE"
    record["temp"] = np.nan
    features = featurizer.transform(record).iloc[0]
    assert features["dest"] == UNKNOWN_CODE
    assert features["plane_seats__missing"] == 1.0
    assert features["temp__missing"] == 1.0
    assert np.isfinite(features.to_numpy(dtype="float64")).all()


def test_output_columns_types_and_names_agree(splits: dict, featurizer: FeatureTables) -> None:
    features = featurizer.transform(splits["valid"][list(splits["valid"].columns[:-2])])
    assert list(features.columns) == featurizer.feature_names
    assert all(features[c].dtype == np.float32 for c in featurizer.numeric_features)
    assert all(features[c].dtype == np.int32 for c in featurizer.categorical_features)
    for column, cardinality in featurizer.cardinalities.items():
        assert features[column].between(0, cardinality - 1).all()


def test_fitting_on_no_rows_is_an_error(
    dataset: Dataset, small_tables: dict, params: Params, splits: dict
) -> None:
    with pytest.raises(DataContractError, match="empty training window"):
        _fit(dataset, small_tables, params, splits["train"].iloc[:0])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=records(CONTRACT))
def test_any_contract_valid_batch_gives_finite_features_row_by_row(
    batch: pd.DataFrame, featurizer: FeatureTables
) -> None:
    """Property: every record the contract allows featurizes to finite values, and each row
    gets the same features alone as inside the batch (what serving relies on)."""
    features = featurizer.transform(batch)
    assert np.isfinite(features.to_numpy(dtype="float64")).all()
    last = batch.iloc[[-1]]
    pd.testing.assert_frame_equal(featurizer.transform(last), features.iloc[[-1]])


def test_saved_tables_transform_exactly_like_the_fitted_ones(
    splits: dict, featurizer: FeatureTables, dataset: Dataset, tmp_path
) -> None:
    """The JSON file serving loads is the featurizer: same features to the bit."""
    featurizer.write(tmp_path / "featurizer.json")
    loaded = FeatureTables.read(tmp_path / "featurizer.json")
    test = splits["test"][dataset.record_columns()]
    pd.testing.assert_frame_equal(loaded.transform(test), featurizer.transform(test))
    assert loaded.feature_names == featurizer.feature_names


def test_an_unknown_tables_format_is_refused_by_name(featurizer: FeatureTables) -> None:
    data = featurizer.to_json() | {"format": 99}
    with pytest.raises(DataContractError, match="format 99"):
        FeatureTables.from_json(data)


@pytest.mark.parametrize("rows", [1, 7, cols.SMALL - 1, cols.SMALL, 3 * cols.SMALL])
def test_dict_records_and_arrow_give_the_frame_features(
    splits: dict, featurizer: FeatureTables, dataset: Dataset, rows: int
) -> None:
    """Serving's dict path, batch scoring's Arrow path, and training's frame path agree
    exactly, on both sides of the small/large lookup switch (unknowns and nulls included)."""
    frame = splits["test"][dataset.record_columns()].head(rows).copy()
    frame.loc[frame.index[::3], "dest"] = "ZZZ"
    frame.loc[frame.index[::4], "tailnum"] = None
    frame.loc[frame.index[::5], "wind_gust"] = np.nan
    expected = featurizer.transform(frame).to_numpy(dtype="float32")
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
    from_records = featurizer.transform_columns(
        cols.from_records(records, featurizer.record_fields)
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    from_arrow = featurizer.transform_columns(cols.from_arrow(table, featurizer.record_fields))
    np.testing.assert_array_equal(from_records, expected)
    np.testing.assert_array_equal(from_arrow, expected)


def test_absent_optional_fields_count_as_missing(
    splits: dict, featurizer: FeatureTables, dataset: Dataset
) -> None:
    frame = splits["test"][dataset.record_columns()].head(5)
    without = featurizer.transform(frame.drop(columns=["wind_gust", "tailnum"]))
    nulls = featurizer.transform(frame.assign(wind_gust=np.nan, tailnum=None))
    pd.testing.assert_frame_equal(without, nulls)


def test_missing_or_null_integer_fields_are_errors_naming_the_field(
    splits: dict, featurizer: FeatureTables, dataset: Dataset
) -> None:
    frame = splits["test"][dataset.record_columns()].head(3)
    with pytest.raises(DataContractError, match="sched_dep_time: the input has no such column"):
        cols.from_frame(frame.drop(columns=["sched_dep_time"]), featurizer.record_fields)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    nulled = table.set_column(
        table.schema.get_field_index("distance"), "distance", pa.array([1, None, 3], pa.int64())
    )
    with pytest.raises(DataContractError, match="distance: 1 null values"):
        cols.from_arrow(nulled, featurizer.record_fields)
