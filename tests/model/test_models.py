"""Model behaviour, on the compiled scorers that serving loads: quality above chance, same
seed same model, invariance and direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.params import Params
from loopline.scoring.scorer import PARITY_TOLERANCE, CompiledScorer
from loopline.training.families import families, family_params
from loopline.training.feature_sets import FeatureSets
from loopline.training.metrics import classification_metrics
from loopline.training.train import TrainedFamily, train_family

CLASSIC = [name for name, family in families().items() if not family.distributed]


@pytest.fixture(scope="module")
def trained(data: FeatureSets, fast_params: Params) -> dict[str, TrainedFamily]:
    return {
        family: train_family(
            family, data, family_params(fast_params, family), seed=fast_params.seed
        )
        for family in CLASSIC
    }


@pytest.fixture(scope="module")
def scorers(
    trained: dict, data: FeatureSets, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CompiledScorer]:
    folder = tmp_path_factory.mktemp("scorers")
    return {family: model.compile(data, folder / family) for family, model in trained.items()}


@pytest.mark.parametrize("family", list(CLASSIC))
def test_each_family_ranks_far_better_than_chance_on_the_test_window(
    family: str, scorers: dict, test_records: pd.DataFrame
) -> None:
    scorer = scorers[family]
    metrics = classification_metrics(
        test_records["late"], scorer.score_frame(test_records)["probability"], scorer.threshold
    )
    assert metrics["roc_auc"] > 0.62, metrics
    assert metrics["pr_auc"] > test_records["late"].mean() + 0.05, metrics


@pytest.mark.parametrize("family", list(CLASSIC))
def test_same_params_and_seed_give_the_same_model(
    family: str,
    trained: dict,
    data: FeatureSets,
    fast_params: Params,
) -> None:
    again = train_family(family, data, family_params(fast_params, family), seed=fast_params.seed)
    first = trained[family].estimator.predict_proba(data.x["test"])
    np.testing.assert_array_equal(first, again.estimator.predict_proba(data.x["test"]))
    assert again.valid_metrics == trained[family].valid_metrics


def test_a_different_seed_gives_a_different_xgboost_model(
    trained: dict, data: FeatureSets, fast_params: Params
) -> None:
    """The seed really reaches the library (subsampling differs), so the test above can fail."""
    xgb = family_params(fast_params, "xgboost")
    other = train_family("xgboost", data, xgb, seed=fast_params.seed + 1)
    assert not np.array_equal(
        trained["xgboost"].estimator.predict_proba(data.x["test"]),
        other.estimator.predict_proba(data.x["test"]),
    )


@pytest.mark.parametrize("family", list(CLASSIC))
def test_the_model_scores_raw_records_and_labels_at_its_threshold(
    family: str, scorers: dict, test_records: pd.DataFrame
) -> None:
    scorer = scorers[family]
    scored = scorer.score_frame(test_records)
    assert scored["probability"].between(0, 1).all()
    assert (scored["label"] == (scored["probability"] >= scorer.threshold)).all()
    assert 0.05 < scorer.threshold < 0.95


@pytest.mark.parametrize("family", list(CLASSIC))
def test_identifiers_and_batching_do_not_change_a_prediction(
    family: str, scorers: dict, test_records: pd.DataFrame
) -> None:
    """Invariance: the flight number is an identifier; a record scores alike alone or in bulk."""
    scorer = scorers[family]
    every = scorer.score_frame(test_records)["probability"].to_numpy()
    renumbered = test_records.assign(flight=(test_records["flight"] * 7) % 9000 + 1)
    np.testing.assert_allclose(scorer.score_frame(renumbered)["probability"], every)
    single = scorer.score_records([test_records.iloc[5].to_dict()])
    np.testing.assert_allclose(single, every[[5]], rtol=0, atol=PARITY_TOLERANCE)


@pytest.mark.parametrize("family", ["hist_gb", "xgboost", "lightgbm"])
def test_direction_storm_weather_raises_the_risk(
    family: str, scorers: dict, test_records: pd.DataFrame
) -> None:
    """Direction: low visibility, rain and gusts at departure make lateness more likely."""
    scorer = scorers[family]
    storm = test_records.assign(visib=0.5, precip=0.3, wind_gust=45.0, wind_speed=30.0)
    risk = scorer.score_frame(storm)["probability"].mean()
    assert risk > scorer.score_frame(test_records)["probability"].mean() + 0.02
