"""A dataset without time goes by arrival: batches from the prediction log's `logged_at`,
and a retrain whose test split is the newest labeled arrivals (wa_churn, the real table)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml

from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import KeyedSplit, Params, load_params
from loopline.data.datasets.wa_churn import WaChurn
from loopline.infra.prediction_log import PredictionLog
from loopline.loop.retraining import SPLIT_COLUMN, arrival_split, retrain_params_file
from loopline.monitoring.job import batch_by_arrival
from loopline.scoring.features import left_out, split_at_random, split_by_key, split_examples
from tests.conftest import ROOT

DATASET = WaChurn()
KEY = "customer_id"


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(ROOT / "params.wa_churn.yaml")


@pytest.fixture(scope="module")
def examples(params: Params) -> pd.DataFrame:
    return DATASET.build_examples(DATASET.materialize(), params.dataset)


@pytest.fixture(scope="module")
def future(examples: pd.DataFrame, params: Params) -> pd.DataFrame:
    """The customers the split by fractions keeps out: the replay's arrivals."""
    return left_out(examples, DATASET.target_column, params.featurize.split, params.seed)


def _arrivals(future: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The first `rows` left-out customers as labeled arrivals, a second apart."""
    start = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    return pd.DataFrame({
        KEY: future[KEY].iloc[:rows].to_numpy(),
        "logged_at": [(start + dt.timedelta(seconds=i)).isoformat() for i in range(rows)],
    })  # fmt: skip


def test_the_left_out_customers_are_in_no_split(
    examples: pd.DataFrame, future: pd.DataFrame, params: Params
) -> None:
    splits = split_at_random(examples, DATASET.target_column, params.featurize.split, params.seed)
    used = pd.concat(splits.values())[KEY]
    assert len(future) + len(used) == len(examples)
    assert not set(future[KEY]) & set(used)
    assert len(future) == pytest.approx(0.2 * len(examples), abs=2)


def test_a_retrain_tests_on_the_newest_arrivals_and_trains_on_the_rest(
    examples: pd.DataFrame, future: pd.DataFrame, params: Params
) -> None:
    arrivals = _arrivals(future, 1000)
    keys, span = arrival_split(
        examples, arrivals, key_columns=[KEY], target_column=DATASET.target_column,
        params=params,
    )  # fmt: skip
    test = keys[keys[SPLIT_COLUMN] == "test"]
    newest = arrivals.iloc[-params.retrain.test_arrivals :]
    assert set(test[KEY]) == set(newest[KEY])  # the newest 400, and only they
    assert span == f"{newest['logged_at'].iloc[0]}..{newest['logged_at'].iloc[-1]}"
    older = set(arrivals[KEY].iloc[: -params.retrain.test_arrivals])
    learned = set(keys.loc[keys[SPLIT_COLUMN] != "test", KEY])
    assert older <= learned  # the older arrivals join train and valid
    assert not keys[KEY].duplicated().any()
    first = split_at_random(examples, DATASET.target_column, params.featurize.split, params.seed)
    assert set(pd.concat(first.values())[KEY]) <= learned  # so does the first split
    assert set(future[KEY].iloc[1000:]).isdisjoint(keys[KEY])  # not yet arrived: unused
    counts = keys[SPLIT_COLUMN].value_counts()
    assert counts["train"] / counts["valid"] == pytest.approx(0.5 / 0.15, rel=0.01)


def test_too_few_labeled_arrivals_are_refused(
    examples: pd.DataFrame, future: pd.DataFrame, params: Params
) -> None:
    with pytest.raises(LooplineError, match=r"newest 400 \(retrain.test_arrivals\)"):
        arrival_split(
            examples, _arrivals(future, 399), key_columns=[KEY],
            target_column=DATASET.target_column, params=params,
        )  # fmt: skip


def test_the_featurize_stage_splits_by_the_keys_file(
    examples: pd.DataFrame, future: pd.DataFrame, params: Params, tmp_path: Path
) -> None:
    keys, span = arrival_split(
        examples, _arrivals(future, 600), key_columns=[KEY],
        target_column=DATASET.target_column, params=params,
    )  # fmt: skip
    keys.to_parquet(tmp_path / "keys.parquet", index=False)
    split = KeyedSplit(keys_file=tmp_path / "keys.parquet", judged_arrivals=span)
    retrained = params.model_copy(
        update={"featurize": params.featurize.model_copy(update={"split": split})}
    )
    splits = split_examples(examples, DATASET, retrained)
    for name, frame in splits.items():
        assert set(frame[KEY]) == set(keys.loc[keys[SPLIT_COLUMN] == name, KEY]), name
    assert set(splits["test"][KEY]) == set(future[KEY].iloc[200:600])


def test_a_keys_file_naming_a_key_twice_or_lacking_a_split_is_refused(
    examples: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "keys.parquet"
    pd.DataFrame({KEY: [1, 1], SPLIT_COLUMN: ["train", "test"]}).to_parquet(path)
    with pytest.raises(ConfigError, match="names a key twice"):
        split_by_key(examples, [KEY], path)
    pd.DataFrame({KEY: [1, 2], SPLIT_COLUMN: ["train", "valid"]}).to_parquet(path)
    with pytest.raises(ConfigError, match="puts no example in 'test'"):
        split_by_key(examples, [KEY], path)


def test_a_retrains_params_keep_the_shared_state_and_send_outputs_to_scratch(
    params: Params, tmp_path: Path
) -> None:
    written = retrain_params_file(
        ROOT / "params.wa_churn.yaml", params, tmp_path, tmp_path / "keys.parquet", "a..b"
    )
    raw = yaml.safe_load(written.read_text())
    retrained = load_params(written)
    assert retrained.featurize.split == KeyedSplit(keys_file=tmp_path / "keys.parquet",
                                                   judged_arrivals="a..b")  # fmt: skip
    assert retrained.paths.models == tmp_path / "models"
    assert retrained.paths.data == ROOT / "data_wa_churn"
    assert raw["registry"]["ledger"] == str(ROOT / params.registry.ledger)
    assert raw["mlflow"]["tracking_uri"] == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert raw["serve"]["prediction_log"] == str(ROOT / params.serve.prediction_log)


def test_batches_by_arrival_see_every_prediction_once(tmp_path: Path) -> None:
    """A cursor at the previous batch's last arrival: nothing read twice, nothing skipped."""
    log = PredictionLog(
        tmp_path / "log.sqlite", DATASET.contract, DATASET.key_columns, DATASET.target_column
    )
    times = [f"2026-11-28T10:00:0{i}.5+00:00" for i in range(6)]
    log.append([
        {"prediction_id": f"p{i}", "request_id": "r", "logged_at": at, "model_name": "m",
         "model_version": "1", "probability": 0.4, "label": 0, KEY: i % 4}
        for i, at in enumerate(times)
    ])  # fmt: skip
    first = batch_by_arrival(log, None, times[2])
    second = batch_by_arrival(log, first.last_arrival, log.latest_logged_at())
    assert first.rows["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert second.rows["prediction_id"].tolist() == ["p3", "p4", "p5"]
    assert second.batch_id == "2026-11-28T10:00:03.500..2026-11-28T10:00:05.500"
    assert batch_by_arrival(log, second.last_arrival, log.latest_logged_at()) is None
    assert log.latest_labeled_arrival() is None
    labels = pd.DataFrame({KEY: [0, 1, 3], DATASET.target_column: [1, 0, 1]})
    log.deliver_labels(labels, "2026-11-28T11:00:00+00:00")
    arrived = log.labeled_arrivals(until=times[-1])
    assert arrived[KEY].tolist() == [0, 1, 3]  # one row per key, first arrival first
    assert arrived["logged_at"].tolist() == [times[0], times[1], times[3]]
    assert log.latest_labeled_arrival() == times[5]  # key 1 arrived again, labeled
    log.close()
