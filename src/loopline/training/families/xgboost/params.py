"""The XGBoost family's settings, `train.xgboost` (apart, so `dask` imports it alone)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopline.core.params import Section


class XGBoostParams(Section):
    """`train.xgboost`: XGBoost `hist` with native categories and early stopping."""

    n_estimators: int = Field(ge=1)
    learning_rate: float = Field(gt=0, le=1)
    max_depth: int = Field(ge=1)
    min_child_weight: float = Field(ge=0)
    subsample: float = Field(gt=0, le=1)
    colsample_bytree: float = Field(gt=0, le=1)
    reg_lambda: float = Field(ge=0)
    max_cat_to_onehot: int = Field(ge=1)
    early_stopping_rounds: int = Field(ge=1)
    device: Literal["auto", "cpu", "cuda"]
    engine: Literal["local", "dask"]  # dask: xgboost.dask over a Dask cluster
    scheduler: str | None  # dask: a scheduler address (tcp://host:8786); None: a local cluster
    dask_workers: int = Field(ge=1, le=64)  # ... of this many single-threaded workers
