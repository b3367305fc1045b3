"""What every model family trains on: the featurize stage's feature sets.

A family's `train` function takes `FeatureSets` (model-ready features of the three time
windows and the feature tables that made them) and returns a fitted estimator with
`predict_proba`. `loopline.scoring` then compiles the tables and the estimator into the
pickle-free scorer that is logged, registered and served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.data.datasets import get_dataset
from loopline.scoring.features import TABLES_FILE, FeatureTables
from loopline.training.metrics import classification_metrics


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
    """Read what the featurize stage wrote: features per split and the feature tables.

    The labels are the target column of the dataset the feature tables were fitted on.
    """
    tables = FeatureTables.read(features_dir / TABLES_FILE)
    target_column = get_dataset(tables.spec.dataset).target_column
    columns = tables.feature_names
    x, y = {}, {}
    for split in ("train", "valid", "test"):
        frame = pd.read_parquet(features_dir / "features" / f"{split}.parquet")
        x[split] = frame[columns]
        y[split] = frame[target_column].to_numpy(dtype="int64")
    return FeatureSets(tables=tables, x=x, y=y)
