"""Moving the windows to the newest labels, and the DVC arguments that carry them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import Params
from loopline.data.datasets.base import Dataset
from loopline.data.splits import moved_split
from loopline.data.time_axis import TimeAxis
from loopline.infra.dvc import set_arguments
from loopline.infra.prediction_log import PredictionLog
from loopline.workspace import Workspace
from tests.conftest import ROOT


def _split_overrides(params: Params, dataset: Dataset, tmp_path: Path) -> dict[str, str]:
    """The split overrides a retrain by days asks for, with labels up to 2013-08-18."""
    log = PredictionLog(
        tmp_path / "log.sqlite", dataset.record_fields(), dataset.key_columns,
        dataset.target_column,
    )  # fmt: skip
    plan = TimeAxis.of(dataset).plan_retrain(params, log, "2013-08-18", None, lambda: None)
    log.close()
    return dict(plan.overrides)


def _workspace_at(folder: Path, **sections: dict[str, str]) -> Workspace:
    """The workspace of params.yaml copied into `folder`, with some settings replaced."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, settings in sections.items():
        raw[section].update(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return Workspace.load(folder / "params.yaml")


def test_windows_end_at_the_last_labeled_day_and_training_grows(params: Params) -> None:
    moved = moved_split(params.featurize.split, dt.date(2013, 8, 18), params.retrain)
    assert moved.test.end == dt.date(2013, 8, 18)
    assert (moved.test.end - moved.test.start).days + 1 == params.retrain.test_days
    assert (moved.valid.end - moved.valid.start).days + 1 == params.retrain.valid_days
    assert moved.valid.end + dt.timedelta(days=1) == moved.test.start
    assert moved.train.end + dt.timedelta(days=1) == moved.valid.start
    assert moved.train.start == params.featurize.split.train.start  # expanding window


def test_too_few_labeled_days_is_refused(params: Params) -> None:
    with pytest.raises(LooplineError, match="no training days"):
        moved_split(params.featurize.split, dt.date(2013, 1, 20), params.retrain)


def test_dates_are_passed_quoted_so_dvc_keeps_them_strings(
    params: Params, dataset: Dataset, tmp_path: Path
) -> None:
    arguments = set_arguments(_split_overrides(params, dataset, tmp_path))
    assert arguments[:2] == ["-S", 'featurize.split.train.start="2013-01-01"']
    assert len(arguments) == 12


def test_a_temporary_workspace_is_pointed_at_the_checkouts_shared_state(
    params: Params, dataset: Dataset, tmp_path: Path
) -> None:
    """Relative store and registry paths would land in the temporary copy and vanish."""
    shared = _workspace_at(tmp_path).shared_state()
    assert shared == {
        "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "mlflow.artifact_root": str(tmp_path / "mlruns"),
        "registry.ledger": str(tmp_path / "registry/ledger.jsonl"),
        "registry.cards": str(tmp_path / "registry/cards"),
    }
    # A team file's servers: passed as they are (the experiment starts from params.yaml).
    team = _workspace_at(
        tmp_path / "team",
        mlflow={"tracking_uri": "http://mlflow.internal:5000"},
        registry={"ledger": "postgresql://db.internal/loopline"},
    ).shared_state()
    assert team["mlflow.tracking_uri"] == "http://mlflow.internal:5000"
    assert team["registry.ledger"] == "postgresql://db.internal/loopline"
    arguments = set_arguments(_split_overrides(params, dataset, tmp_path) | shared)
    assert f'mlflow.tracking_uri="sqlite:///{tmp_path}/mlflow.db"' in arguments


def test_moving_windows_without_their_sizes_names_the_missing_key(params: Params) -> None:
    """A params file for a table without time leaves the day windows out; a retrain by days
    under it says which key is missing instead of failing on None arithmetic."""
    arrivals_only = params.retrain.model_copy(update={"test_days": None})
    with pytest.raises(ConfigError, match=r"retrain.test_days is not set; it is needed to move"):
        moved_split(params.featurize.split, dt.date(2013, 8, 18), arrivals_only)
