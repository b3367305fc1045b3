"""XGBoost (`hist`) with native categorical splits and early stopping on the validation split.

Trains in this process or on a Dask cluster (`engine`, see `dask`); exported as XGBoost's
own UBJSON, scored by XGBoost (and by Treelite for a handful of rows).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import xgboost
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import write_xgboost
from loopline.training.families import Family, Fitted, TrainContext
from loopline.training.families.xgboost.params import XGBoostParams
from loopline.training.feature_sets import FeatureSets

log = logging.getLogger(__name__)


class AsCategories(TransformerMixin, BaseEstimator):
    """Give integer-coded columns a pandas categorical dtype with a fixed category set."""

    def __init__(self, cardinalities: dict[str, int]) -> None:
        self.cardinalities = cardinalities

    def fit(self, x: pd.DataFrame, y: object = None) -> AsCategories:
        """Stateless: the categories come from the featurizer's cardinalities."""
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        """Same frame, coded columns as `category` dtype (codes 0..K-1)."""
        converted = {
            column: pd.Categorical.from_codes(x[column].to_numpy(), categories=range(size))
            for column, size in self.cardinalities.items()
        }
        rest = x.drop(columns=list(converted))
        return pd.concat([rest, pd.DataFrame(converted, index=x.index)], axis=1)[list(x.columns)]


def resolve_device(requested: str) -> str:
    """`cuda` when asked (or `auto`) and this XGBoost build and machine have a GPU."""
    if requested == "cpu":
        return "cpu"
    has_cuda_build = bool(xgboost.build_info().get("USE_CUDA"))
    try:
        import torch  # noqa: PLC0415

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    if requested == "cuda" and not (has_cuda_build and has_gpu):
        log.warning("xgboost device=cuda requested but unavailable here; using cpu")
    return "cuda" if has_cuda_build and has_gpu else "cpu"


def _settings(params: XGBoostParams, seed: int) -> dict:
    """The booster's settings, the same on one process and on Dask."""
    return {
        "n_estimators": params.n_estimators,
        "learning_rate": params.learning_rate,
        "max_depth": params.max_depth,
        "min_child_weight": params.min_child_weight,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "reg_lambda": params.reg_lambda,
        "max_cat_to_onehot": params.max_cat_to_onehot,
        "early_stopping_rounds": params.early_stopping_rounds,
        "tree_method": "hist",
        "enable_categorical": True,
        "eval_metric": "logloss",
        "device": resolve_device(params.device),
        "random_state": seed,
    }


def train(data: FeatureSets, params: XGBoostParams, context: TrainContext) -> Fitted:
    """Fit on train, stop when validation log loss has not improved for a while.

    `params.engine` picks where: this process, or the workers of a Dask cluster (each
    holds a share of the rows; histograms are summed across them). Either way the result
    is the same kind of fitted `XGBClassifier`, compiled and served the same way.
    """
    categories = AsCategories({c: data.tables.cardinalities[c] for c in data.categorical})
    train_x, valid_x = categories.transform(data.x["train"]), categories.transform(data.x["valid"])
    if params.engine == "dask":
        from loopline.training.families.xgboost.dask import fit_on_dask  # noqa: PLC0415

        model = fit_on_dask(_settings(params, context.seed), params, (train_x, data.y["train"]),
                            (valid_x, data.y["valid"]))  # fmt: skip
    else:
        model = xgboost.XGBClassifier(**_settings(params, context.seed), n_jobs=None)
        model.fit(train_x, data.y["train"], eval_set=[(valid_x, data.y["valid"])], verbose=False)
    log.info(
        "xgboost: best validation loss at tree %d of at most %d",
        model.best_iteration + 1,
        params.n_estimators,
    )
    return Fitted(Pipeline([("categories", categories), ("classify", model)]))


def export(pipeline: Any, tables: FeatureTables, out: Path) -> dict[str, Any]:
    """The booster, cut to the trees early stopping chose, as UBJSON."""
    model = pipeline.named_steps["classify"]
    booster = model.get_booster()
    if model.best_iteration is not None:
        booster = booster[: model.best_iteration + 1]
    return write_xgboost(booster, out)


FAMILY = Family(
    name="xgboost",
    summary="XGBoost `hist`, native categorical splits, early stopping on validation",
    params=XGBoostParams,
    train=train,
    export=export,
)
