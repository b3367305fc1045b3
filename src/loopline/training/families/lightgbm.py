"""LightGBM: leaf-wise gradient boosting, native categorical splits, early stopping on valid.

Exported through Treelite (which reads LightGBM's own model text), scored by Treelite's
GTIL: serving needs no LightGBM and loads nothing that can run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm
import treelite
from pydantic import Field

from loopline.core.params import Section
from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import write_treelite
from loopline.training.families import Family, Fitted, TrainContext
from loopline.training.feature_sets import FeatureSets


class LightGBMParams(Section):
    """`train.lightgbm`: LightGBM's gradient boosting with early stopping on validation."""

    n_estimators: int = Field(ge=1)
    learning_rate: float = Field(gt=0, le=1)
    num_leaves: int = Field(ge=2)
    min_child_samples: int = Field(ge=1)
    subsample: float = Field(gt=0, le=1)
    colsample_bytree: float = Field(gt=0, le=1)
    reg_lambda: float = Field(ge=0)
    early_stopping_rounds: int = Field(ge=1)
    threads: int = Field(ge=1)  # fixed, with deterministic=True: the same trees on any machine


def train(data: FeatureSets, params: LightGBMParams, context: TrainContext) -> Fitted:
    """Fit on train; stop when validation log loss has not improved for a while."""
    model = lightgbm.LGBMClassifier(
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        min_child_samples=params.min_child_samples,
        subsample=params.subsample,
        subsample_freq=1 if params.subsample < 1 else 0,  # bagging needs a frequency
        colsample_bytree=params.colsample_bytree,
        reg_lambda=params.reg_lambda,
        n_jobs=params.threads,
        random_state=context.seed,
        deterministic=True,
        force_row_wise=True,  # with `deterministic`: no layout chosen by timing
        verbose=-1,
    )
    model.fit(
        data.x["train"], data.y["train"],
        eval_set=[(data.x["valid"], data.y["valid"])], eval_metric="binary_logloss",
        categorical_feature=list(data.categorical),
        callbacks=[lightgbm.early_stopping(params.early_stopping_rounds, verbose=False)],
    )  # fmt: skip
    report = {"best_iteration": int(model.best_iteration_ or params.n_estimators)}
    return Fitted(model, report)


def export(model: Any, tables: FeatureTables, out: Path) -> dict[str, Any]:
    """The trees early stopping kept, read by Treelite from LightGBM's model text."""
    kept = model.best_iteration_ or None  # None: every tree (no early stop happened)
    booster = lightgbm.Booster(model_str=model.booster_.model_to_string(num_iteration=kept))
    return write_treelite(treelite.frontend.from_lightgbm(booster), out)


FAMILY = Family(
    name="lightgbm",
    summary="LightGBM, leaf-wise trees, native categorical splits, early stopping on validation",
    params=LightGBMParams,
    train=train,
    export=export,
)
