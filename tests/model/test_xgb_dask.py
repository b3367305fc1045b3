"""XGBoost on Dask (`train.xgboost.engine: dask`): one big fit spread over workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import xgboost

from loopline.core.params import Params, parse_params
from loopline.data.datasets.base import Dataset
from loopline.training.families import family_params
from loopline.training.families.xgboost.params import XGBoostParams
from loopline.training.feature_sets import load_feature_sets
from loopline.training.train import train_family
from tests.conftest import small_params_dict, write_features

pytestmark = pytest.mark.slow


def _on_dask(xgb: XGBoostParams, **changes: object) -> XGBoostParams:
    return xgb.model_copy(update={"engine": "dask", "dask_workers": 2, **changes})


def _without_sampling(xgb: XGBoostParams) -> XGBoostParams:
    return xgb.model_copy(update={"subsample": 1.0, "colsample_bytree": 1.0})


def test_without_row_sampling_two_workers_grow_the_very_trees_of_one_process(
    small_features_dir: Path, fast_params: Params, tmp_path: Path
) -> None:
    """Each of 2 worker processes holds half the rows; their histograms are summed, so
    with no random sampling the trees are those of the one-process fit (not an ensemble
    of per-worker models): same early-stopping point, same scores. It compiles and
    serves like any local fit."""
    data = load_feature_sets(small_features_dir)
    exact = _without_sampling(family_params(fast_params, "xgboost"))
    local = train_family("xgboost", data, exact, seed=fast_params.seed)
    dask = train_family("xgboost", data, _on_dask(exact), seed=fast_params.seed)
    classifier = dask.estimator.named_steps["classify"]
    assert type(classifier) is xgboost.XGBClassifier
    assert classifier.best_iteration == local.estimator.named_steps["classify"].best_iteration
    assert dask.valid_metrics["roc_auc"] == pytest.approx(local.valid_metrics["roc_auc"], abs=1e-6)
    dask.compile(data, tmp_path / "scorer")  # raises unless it scores as the estimator does


@pytest.fixture(scope="module")
def full_features_dir(
    tmp_path_factory: pytest.TempPathFactory, full_tables: dict, dataset: Dataset
) -> Path:
    """The featurize stage's output on all of 2013 (the real training set: 109k rows)."""
    out = tmp_path_factory.mktemp("full-features")
    return write_features(full_tables, parse_params(small_params_dict()), dataset, out)


def test_with_the_project_settings_a_dask_fit_has_the_quality_of_one_process(
    full_features_dir: Path, params: Params
) -> None:
    """The real settings (row and column sampling, early stopping) on the full training
    window: each worker draws its own samples, so the trees differ, but the validation
    ROC-AUC is within 0.005 of the one-process fit."""
    data = load_feature_sets(full_features_dir)
    xgb = family_params(params, "xgboost")
    local = train_family("xgboost", data, xgb, seed=params.seed)
    dask = train_family("xgboost", data, _on_dask(xgb), seed=params.seed)
    gap = abs(local.valid_metrics["roc_auc"] - dask.valid_metrics["roc_auc"])
    assert gap < 0.005, (local.valid_metrics, dask.valid_metrics)
