"""What every model family trains on: the featurize stage's feature sets.

A family's `train` takes `FeatureSets` (model-ready features of the three splits and the
feature tables that made them) and returns a fitted estimator with `predict_proba`;
`loopline.training.compile` then writes it, with the tables, into the pickle-free
compiled scorer that is logged, registered and served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.data.datasets import get_dataset
from loopline.scoring.features import FeatureTables
from loopline.training.metrics import classification_metrics
from loopline.workspace import FeaturizeLayout


@dataclass(frozen=True)
class FeatureSets:
    """Model-ready features and labels of the three splits, plus the feature tables."""

    tables: FeatureTables
    x: dict[str, pd.DataFrame]
    y: dict[str, np.ndarray]

    def scores(self, estimator: object, split: str, threshold: float = 0.5) -> dict[str, float]:
        """`classification_metrics` of a fitted estimator on one split."""
        proba = estimator.predict_proba(self.x[split])[:, 1]
        return classification_metrics(self.y[split], proba, threshold)

    @property
    def numeric(self) -> list[str]:
        """Numeric feature columns."""
        return self.tables.numeric_features

    @property
    def categorical(self) -> list[str]:
        """Categorical (integer-coded) feature columns."""
        return self.tables.categorical_features


def load_feature_sets(features_dir: Path) -> FeatureSets:
    """Read what the featurize stage wrote in `features_dir` (`paths.features`).

    The labels are the target column of the dataset the feature tables were fitted on.
    """
    layout = FeaturizeLayout(features_dir)
    tables = FeatureTables.read(layout.featurizer)
    target_column = get_dataset(tables.spec.dataset).target_column
    columns = tables.feature_names
    x, y = {}, {}
    for split in layout.SPLITS:
        frame = pd.read_parquet(layout.features(split))
        x[split] = frame[columns]
        y[split] = frame[target_column].to_numpy(dtype="int64")
    return FeatureSets(tables=tables, x=x, y=y)
