"""Model behaviour: quality above chance, same seed same model, invariance and direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import Params
from loopline.datasets.base import Dataset
from loopline.evaluation import classification_metrics
from loopline.models.base import FeatureSets, load_feature_sets
from loopline.training import CLASSIC, TrainedFamily, train_family


@pytest.fixture(scope="module")
def data(small_features_dir: Path) -> FeatureSets:
    return load_feature_sets(small_features_dir, "late")


@pytest.fixture(scope="module")
def test_records(small_features_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(small_features_dir / "examples" / "test.parquet")


@pytest.fixture(scope="module")
def trained(data: FeatureSets, fast_params: Params, dataset: Dataset) -> dict[str, TrainedFamily]:
    return {
        family: train_family(
            family,
            data,
            fast_params.train,
            seed=fast_params.seed,
            record_columns=dataset.record_columns(),
        )
        for family in CLASSIC
    }


@pytest.mark.parametrize("family", list(CLASSIC))
def test_each_family_ranks_far_better_than_chance_on_the_test_window(
    family: str, trained: dict, test_records: pd.DataFrame
) -> None:
    model = trained[family].model
    metrics = classification_metrics(
        test_records["late"], model.predict_proba(test_records), model.threshold
    )
    assert metrics["roc_auc"] > 0.62, metrics
    assert metrics["pr_auc"] > test_records["late"].mean() + 0.05, metrics


@pytest.mark.parametrize("family", list(CLASSIC))
def test_same_params_and_seed_give_the_same_model(
    family: str,
    trained: dict,
    data: FeatureSets,
    fast_params: Params,
    dataset: Dataset,
    test_records: pd.DataFrame,
) -> None:
    again = train_family(
        family,
        data,
        fast_params.train,
        seed=fast_params.seed,
        record_columns=dataset.record_columns(),
    )
    first = trained[family].model.predict_proba(test_records)
    np.testing.assert_array_equal(first, again.model.predict_proba(test_records))
    assert again.valid_metrics == trained[family].valid_metrics


def test_a_different_seed_gives_a_different_xgboost_model(
    trained: dict,
    data: FeatureSets,
    fast_params: Params,
    dataset: Dataset,
    test_records: pd.DataFrame,
) -> None:
    """The seed really reaches the library (subsampling differs), so the test above can fail."""
    other = train_family(
        "xgboost",
        data,
        fast_params.train,
        seed=fast_params.seed + 1,
        record_columns=dataset.record_columns(),
    )
    assert not np.array_equal(
        trained["xgboost"].model.predict_proba(test_records),
        other.model.predict_proba(test_records),
    )


@pytest.mark.parametrize("family", list(CLASSIC))
def test_the_model_scores_raw_records_and_labels_at_its_threshold(
    family: str, trained: dict, test_records: pd.DataFrame
) -> None:
    model = trained[family].model
    scored = model.predict(test_records)
    assert scored["probability"].between(0, 1).all()
    assert (scored["label"] == (scored["probability"] >= model.threshold)).all()
    assert 0.05 < model.threshold < 0.95


@pytest.mark.parametrize("family", list(CLASSIC))
def test_identifiers_and_batching_do_not_change_a_prediction(
    family: str, trained: dict, test_records: pd.DataFrame
) -> None:
    """Invariance: the flight number is an identifier; a record scores alike alone or in bulk."""
    model = trained[family].model
    renumbered = test_records.assign(flight=(test_records["flight"] * 7) % 9000 + 1)
    np.testing.assert_allclose(model.predict_proba(renumbered), model.predict_proba(test_records))
    single = model.predict_proba(test_records.iloc[[5]])
    np.testing.assert_allclose(single, model.predict_proba(test_records)[[5]], rtol=1e-6)


@pytest.mark.parametrize("family", ["hist_gb", "xgboost"])
def test_direction_storm_weather_raises_the_risk(
    family: str, trained: dict, test_records: pd.DataFrame
) -> None:
    """Direction: low visibility, rain and gusts at departure make lateness more likely."""
    model = trained[family].model
    storm = test_records.assign(visib=0.5, precip=0.3, wind_gust=45.0, wind_speed=30.0)
    assert model.predict_proba(storm).mean() > model.predict_proba(test_records).mean() + 0.02
