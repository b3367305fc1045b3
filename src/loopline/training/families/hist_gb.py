"""A tree ensemble: scikit-learn's histogram gradient boosting, native categorical splits.

Exported through Treelite (a checkpoint of the trees), scored by Treelite's GTIL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import treelite
from pydantic import Field
from sklearn.ensemble import HistGradientBoostingClassifier

from loopline.core.params import Section
from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import write_treelite
from loopline.training.families import Family, Fitted, TrainContext
from loopline.training.feature_sets import FeatureSets

MAX_NATIVE_CATEGORIES = 255  # HistGradientBoosting bins categories into at most 255 values


class HistGBParams(Section):
    """`train.hist_gb`: scikit-learn's HistGradientBoostingClassifier."""

    max_iter: int = Field(ge=1)
    learning_rate: float = Field(gt=0, le=1)
    max_leaf_nodes: int = Field(ge=2)
    min_samples_leaf: int = Field(ge=1)
    l2_regularization: float = Field(ge=0)


def train(data: FeatureSets, params: HistGBParams, context: TrainContext) -> Fitted:
    """Fit on the training split; very high-cardinality codes are treated as ordinal."""
    native = [c for c in data.categorical if data.tables.cardinalities[c] <= MAX_NATIVE_CATEGORIES]
    model = HistGradientBoostingClassifier(
        max_iter=params.max_iter,
        learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        categorical_features=native,
        early_stopping=False,  # its own stopping uses a random split; we validate by time
        random_state=context.seed,
    )
    return Fitted(model.fit(data.x["train"], data.y["train"]))


def export(model: Any, tables: FeatureTables, out: Path) -> dict[str, Any]:
    """The trees as a Treelite checkpoint."""
    return write_treelite(treelite.sklearn.import_model(model), out)


FAMILY = Family(
    name="hist_gb",
    summary="scikit-learn HistGradientBoosting, native categorical splits",
    params=HistGBParams,
    train=train,
    export=export,
)
