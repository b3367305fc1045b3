"""Moving the windows to the newest labels, and the DVC arguments that carry them."""

from __future__ import annotations

import datetime as dt

import pytest

from loopline.config import Params
from loopline.errors import LooplineError
from loopline.retraining import dvc_overrides, moved_split


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
    arguments = dvc_overrides(params.featurize.split)
    assert arguments[:2] == ["-S", 'featurize.split.train.start="2013-01-01"']
    assert len(arguments) == 12
