"""Moving the windows to the newest labels, and the DVC arguments that carry them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import Params
from loopline.loop.retraining import dvc_overrides, moved_split, shared_state


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


def test_dates_are_passed_quoted_so_dvc_keeps_them_strings(params: Params) -> None:
    arguments = dvc_overrides(params.featurize.split, {})
    assert arguments[:2] == ["-S", 'featurize.split.train.start="2013-01-01"']
    assert len(arguments) == 12


def test_a_temporary_workspace_is_pointed_at_the_checkouts_shared_state(
    params: Params, tmp_path: Path
) -> None:
    """Relative store and registry paths would land in the temporary copy and vanish."""
    shared = shared_state(params, tmp_path)
    assert shared == {
        "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "mlflow.artifact_root": str(tmp_path / "mlruns"),
        "registry.ledger": str(tmp_path / "registry/ledger.jsonl"),
        "registry.cards": str(tmp_path / "registry/cards"),
    }
    # A team file's servers: passed as they are (the experiment starts from params.yaml).
    remote = params.mlflow.model_copy(update={"tracking_uri": "http://mlflow.internal:5000"})
    table = params.registry.model_copy(update={"ledger": "postgresql://db.internal/loopline"})
    team = shared_state(params.model_copy(update={"mlflow": remote, "registry": table}), tmp_path)
    assert team["mlflow.tracking_uri"] == "http://mlflow.internal:5000"
    assert team["registry.ledger"] == "postgresql://db.internal/loopline"
    arguments = dvc_overrides(params.featurize.split, shared)
    assert f'mlflow.tracking_uri="sqlite:///{tmp_path}/mlflow.db"' in arguments


def test_moving_windows_without_their_sizes_names_the_missing_key(params: Params) -> None:
    """A params file for a table without time leaves the day windows out; a retrain by days
    under it says which key is missing instead of failing on None arithmetic."""
    arrivals_only = params.retrain.model_copy(update={"test_days": None})
    with pytest.raises(ConfigError, match=r"retrain.test_days is not set; it is needed to move"):
        moved_split(params.featurize.split, dt.date(2013, 8, 18), arrivals_only)
