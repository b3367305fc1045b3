"""Tree ensemble: scikit-learn's histogram gradient boosting with native categorical splits."""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier

from loopline.core.params import HistGBParams
from loopline.training.feature_sets import FeatureSets

MAX_NATIVE_CATEGORIES = 255  # HistGradientBoosting bins categories into at most 255 values


def train(data: FeatureSets, params: HistGBParams, seed: int) -> HistGradientBoostingClassifier:
    """Fit on the training window; very high-cardinality codes are treated as ordinal."""
    native = [c for c in data.categorical if data.tables.cardinalities[c] <= MAX_NATIVE_CATEGORIES]
    model = HistGradientBoostingClassifier(
        max_iter=params.max_iter,
        learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        categorical_features=native,
        early_stopping=False,  # its own stopping uses a random split; we validate by time
        random_state=seed,
    )
    return model.fit(data.x["train"], data.y["train"])
