"""Fixtures of the model tests: the slice's feature sets and its raw test records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopline.training.feature_sets import FeatureSets, load_feature_sets


@pytest.fixture(scope="module")
def data(small_features_dir: Path) -> FeatureSets:
    return load_feature_sets(small_features_dir)


@pytest.fixture(scope="module")
def test_records(small_features_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(small_features_dir / "examples" / "test.parquet")
