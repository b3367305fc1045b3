"""What every model family produces: a `LooplineModel` that takes raw records.

A LooplineModel is the fitted featurizer and the family's estimator in one scikit-learn
Pipeline, plus the decision threshold chosen on the validation window. It is what gets
saved, logged to MLflow, evaluated, registered and served: nothing else is needed to go
from a raw flight record to a probability and a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from loopline.evaluation import classification_metrics
from loopline.features import TabularFeaturizer
from loopline.io import read_joblib


@dataclass
class LooplineModel:
    """Featurizer + estimator + threshold; predicts from raw records."""

    family: str
    pipeline: Pipeline
    threshold: float
    record_columns: list[str]
    info: dict = field(default_factory=dict)

    def predict_proba(self, records: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class (late) for each record."""
        return self.pipeline.predict_proba(records[self.record_columns])[:, 1]

    def predict(self, records: pd.DataFrame) -> pd.DataFrame:
        """Probability and 0/1 label (at the stored threshold), aligned with `records`."""
        probability = self.predict_proba(records)
        return pd.DataFrame(
            {"probability": probability, "label": (probability >= self.threshold).astype("int64")},
            index=records.index,
        )


@dataclass(frozen=True)
class FeatureSets:
    """Model-ready features and labels of the three splits, plus the fitted featurizer."""

    featurizer: TabularFeaturizer
    x: dict[str, pd.DataFrame]
    y: dict[str, np.ndarray]

    def scores(self, estimator: object, split: str, threshold: float = 0.5) -> dict[str, float]:
        """`classification_metrics` of a fitted estimator on one split."""
        proba = estimator.predict_proba(self.x[split])[:, 1]
        return classification_metrics(self.y[split], proba, threshold)

    @property
    def numeric(self) -> list[str]:
        """Numeric feature columns."""
        return list(self.featurizer.numeric_features_)

    @property
    def categorical(self) -> list[str]:
        """Categorical (integer-coded) feature columns."""
        return list(self.featurizer.categorical_features_)


def load_feature_sets(features_dir: Path, target_column: str) -> FeatureSets:
    """Read what the featurize stage wrote: features per split and the featurizer."""
    featurizer: TabularFeaturizer = read_joblib(features_dir / "featurizer.joblib")
    columns = list(featurizer.get_feature_names_out())
    x, y = {}, {}
    for split in ("train", "valid", "test"):
        frame = pd.read_parquet(features_dir / "features" / f"{split}.parquet")
        x[split] = frame[columns]
        y[split] = frame[target_column].to_numpy(dtype="int64")
    return FeatureSets(featurizer=featurizer, x=x, y=y)


def assemble(
    family: str,
    featurizer: TabularFeaturizer,
    estimator: object,
    *,
    threshold: float,
    record_columns: list[str],
    info: dict | None = None,
) -> LooplineModel:
    """Wrap a fitted featurizer and a fitted estimator into a LooplineModel."""
    pipeline = Pipeline([("features", featurizer), ("model", estimator)])
    return LooplineModel(family, pipeline, float(threshold), list(record_columns), info or {})
