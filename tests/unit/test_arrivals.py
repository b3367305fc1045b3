"""A dataset without time goes by arrival: batches from the prediction log's `logged_at`,
and a retrain whose test split is the newest labeled arrivals (wa_churn, the real table)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml

from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import PARAMS_ENV, KeyedSplit, Params, load_params
from loopline.data.datasets.wa_churn import WaChurn
from loopline.data.splits import (
    SPLIT_COLUMN,
    arrival_split,
    left_out,
    split_at_random,
    split_by_key,
)
from loopline.data.time_axis import Batch, RetrainPlan, ScratchFile, TimeAxis
from loopline.infra.monitor_state import MonitorState
from loopline.infra.prediction_log import PredictionLog
from loopline.loop import retraining
from loopline.monitoring.records import BatchOutcome
from loopline.workspace import Workspace
from tests.conftest import ROOT

DATASET = WaChurn()
AXIS = TimeAxis.of(DATASET)
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


def _arrival_split(
    examples: pd.DataFrame, arrivals: pd.DataFrame, params: Params
) -> tuple[pd.DataFrame, str]:
    """The split a retrain by arrival makes under `params` (its fractions, test size, seed)."""
    return arrival_split(
        examples, arrivals, key_columns=[KEY], target_column=DATASET.target_column,
        split=params.featurize.split, test_rows=params.retrain.test_arrivals, seed=params.seed,
    )  # fmt: skip


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
    keys, span = _arrival_split(examples, arrivals, params)
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
        _arrival_split(examples, _arrivals(future, 399), params)


def test_the_featurize_stage_splits_by_the_keys_file(
    examples: pd.DataFrame, future: pd.DataFrame, params: Params, tmp_path: Path
) -> None:
    keys, span = _arrival_split(examples, _arrivals(future, 600), params)
    keys.to_parquet(tmp_path / "keys.parquet", index=False)
    split = KeyedSplit(keys_file=tmp_path / "keys.parquet", judged_arrivals=span)
    retrained = params.model_copy(
        update={"featurize": params.featurize.model_copy(update={"split": split})}
    )
    splits = AXIS.split(examples, retrained)
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
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The params file a retrain by arrival runs the stages under (outside DVC)."""
    seen: dict[str, Path] = {}

    def run_stages(root: Path, env: dict[str, str], timeout_s: float) -> None:
        written = Path(env[PARAMS_ENV])  # in a scratch folder removed after the run
        seen["scratch"] = written.parent
        (tmp_path / "params.yaml").write_text(written.read_text())
        (tmp_path / "keys.parquet").write_bytes(
            (written.parent / "split_keys.parquet").read_bytes()
        )

    monkeypatch.setattr(retraining, "run_stages", run_stages)
    monkeypatch.setattr(retraining, "registered_outcome", lambda name, run_id: {})
    workspace = Workspace.load(ROOT / "params.wa_churn.yaml")
    keys = pd.DataFrame({KEY: [1, 2, 3], SPLIT_COLUMN: ["train", "valid", "test"]})
    split = {"keys_file": ScratchFile("split_keys.parquet", keys), "judged_arrivals": "a..b"}
    planned = RetrainPlan("b", overrides={"featurize.split": split})
    retraining.reproduce(workspace, "retrain-test", planned, "parent-run", timeout_s=60)
    written, scratch = tmp_path / "params.yaml", seen["scratch"]
    raw = yaml.safe_load(written.read_text())
    retrained = load_params(written)
    assert retrained.featurize.split == KeyedSplit(keys_file=scratch / "split_keys.parquet",
                                                   judged_arrivals="a..b")  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "keys.parquet"), keys)
    assert retrained.paths.models == scratch / "models"
    assert retrained.paths.data == ROOT / "data_wa_churn"
    assert raw["registry"]["ledger"] == str(ROOT / params.registry.ledger)
    assert raw["mlflow"]["tracking_uri"] == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert raw["serve"]["prediction_log"] == str(ROOT / params.serve.prediction_log)


def _measured(batch: Batch | None) -> BatchOutcome:
    """What the monitor stores of a measured batch (only where it ends matters here)."""
    assert batch is not None
    return BatchOutcome(
        batch_id=batch.batch_id, first_day=batch.first_day, last_day=batch.last_day,
        rows=batch.rows, labeled_rows=0, model_version="1", drift_share=0.0,
        drifted_columns=[], reported_drifted_columns=[], mean_probability=0.4,
        last_arrival=batch.last_arrival,
    )  # fmt: skip


def test_batches_by_arrival_see_every_prediction_once(tmp_path: Path) -> None:
    """A cursor at the previous batch's last arrival: nothing read twice, nothing skipped."""
    log = PredictionLog(
        tmp_path / "log.sqlite", DATASET.record_fields(), DATASET.key_columns,
        DATASET.target_column,
    )  # fmt: skip
    state = MonitorState(tmp_path / "state.sqlite")
    times = [f"2026-11-28T10:00:0{i}.5+00:00" for i in range(6)]
    rows = [
        {"prediction_id": f"p{i}", "request_id": "r", "logged_at": at, "model_name": "m",
         "model_version": "1", "probability": 0.4, "label": 0, KEY: i % 4}
        for i, at in enumerate(times)
    ]  # fmt: skip
    log.append(rows[:3])  # arrived up to times[2] when the first batch is cut
    first = AXIS.batch(log, state, None, None)
    state.save_batch(_measured(first))  # the monitor stores each batch it measures
    log.append(rows[3:])
    second = AXIS.batch(log, state, None, None)
    state.save_batch(_measured(second))
    assert log.read(first.selection)["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert log.read(second.selection)["prediction_id"].tolist() == ["p3", "p4", "p5"]
    assert second.batch_id == "2026-11-28T10:00:03.500..2026-11-28T10:00:05.500"
    assert AXIS.batch(log, state, None, None) is None
    assert log.latest_labeled_arrival() is None
    labels = pd.DataFrame({KEY: [0, 1, 3], DATASET.target_column: [1, 0, 1]})
    log.deliver_labels(labels, "2026-11-28T11:00:00+00:00")
    arrived = log.labeled_arrivals(until=times[-1])
    assert arrived[KEY].tolist() == [0, 1, 3]  # one row per key, first arrival first
    assert arrived["logged_at"].tolist() == [times[0], times[1], times[3]]
    assert log.latest_labeled_arrival() == times[5]  # key 1 arrived again, labeled
    log.close()
