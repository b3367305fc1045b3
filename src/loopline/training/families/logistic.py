"""Baseline: logistic regression on standardised numerics and one-hot categories."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from loopline.core.params import LogisticParams
from loopline.training.feature_sets import FeatureSets


def train(data: FeatureSets, params: LogisticParams, seed: int) -> Pipeline:
    """Fit on the training window; categories one-hot encoded, unknown codes ignored."""
    categories = [list(range(data.tables.cardinalities[c])) for c in data.categorical]
    encode = ColumnTransformer(
        [
            ("numeric", "passthrough", data.numeric),
            (
                "categorical",
                OneHotEncoder(categories=categories, handle_unknown="ignore"),
                data.categorical,
            ),
        ]
    )
    model = LogisticRegression(
        C=params.c, max_iter=params.max_iter, class_weight=params.class_weight, random_state=seed
    )
    return Pipeline([("encode", encode), ("classify", model)]).fit(data.x["train"], data.y["train"])
