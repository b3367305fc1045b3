"""The baseline: logistic regression on standardised numerics and one-hot categories.

Exported as weight arrays (a one-hot weight is a lookup by code), scored by NumPy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from loopline.core.params import Section
from loopline.scoring.features import FeatureTables
from loopline.scoring.formats import write_linear
from loopline.training.families import Family, Fitted, TrainContext
from loopline.training.feature_sets import FeatureSets


class LogisticParams(Section):
    """`train.logistic`: scikit-learn's LogisticRegression."""

    c: float = Field(gt=0)
    max_iter: int = Field(ge=10)
    class_weight: Literal["balanced"] | None


def train(data: FeatureSets, params: LogisticParams, context: TrainContext) -> Fitted:
    """Fit on the training split; categories one-hot encoded, unknown codes ignored."""
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
        C=params.c, max_iter=params.max_iter, class_weight=params.class_weight,
        random_state=context.seed,
    )  # fmt: skip
    pipeline = Pipeline([("encode", encode), ("classify", model)])
    return Fitted(pipeline.fit(data.x["train"], data.y["train"]))


def export(pipeline: Any, tables: FeatureTables, out: Path) -> dict[str, Any]:
    """The coefficients and intercept as weight arrays."""
    model = pipeline.named_steps["classify"]
    cardinalities = [tables.cardinalities[c] for c in tables.categorical_features]
    return write_linear(model.coef_[0], float(model.intercept_[0]), cardinalities, out)


FAMILY = Family(
    name="logistic",
    summary="scikit-learn logistic regression on one-hot categories: the baseline",
    params=LogisticParams,
    train=train,
    export=export,
)
