"""Metrics for an imbalanced target, threshold choice, curves and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from loopline.training.metrics import (
    choose_threshold,
    classification_metrics,
    comparison_table,
    curves,
    expected_calibration_error,
    paired_bootstrap,
)

RNG = np.random.default_rng(7)
LABELS = (RNG.random(4000) < 0.3).astype(int)
GOOD = np.clip(0.3 + 0.35 * (LABELS - 0.3) + RNG.normal(0, 0.15, 4000), 0.01, 0.99)
NOISE = np.clip(RNG.random(4000), 0.01, 0.99)


def test_a_perfect_ranking_scores_one_and_noise_about_half() -> None:
    perfect = classification_metrics(LABELS, LABELS * 0.9 + 0.05, 0.5)
    noise = classification_metrics(LABELS, NOISE, 0.5)
    assert perfect["roc_auc"] == 1.0
    assert perfect["f1"] == 1.0
    assert noise["roc_auc"] == pytest.approx(0.5, abs=0.05)
    assert noise["pr_auc"] == pytest.approx(LABELS.mean(), abs=0.05)


def test_threshold_maximises_f1() -> None:
    chosen = choose_threshold(LABELS, GOOD)
    f1_at = classification_metrics(LABELS, GOOD, chosen)["f1"]
    for other in (0.2, 0.3, 0.4, 0.5):
        assert f1_at >= classification_metrics(LABELS, GOOD, other)["f1"]


def test_calibration_error_is_small_when_calibrated_and_large_when_shifted() -> None:
    proba = RNG.random(20000)
    labels = (RNG.random(20000) < proba).astype(int)
    assert expected_calibration_error(labels, proba) < 0.02
    assert expected_calibration_error(labels, np.clip(proba + 0.3, 0, 1)) > 0.2


def test_curves_have_the_columns_dvc_plots_reads() -> None:
    data = curves(LABELS, GOOD, 0.4, ("stayed", "churned"), points=50)
    assert list(data["roc"].columns) == ["fpr", "tpr"]
    assert len(data["roc"]) <= 50
    assert list(data["pr"].columns) == ["recall", "precision"]
    assert {"mean_predicted", "observed_rate"} <= set(data["calibration"].columns)
    assert len(data["confusion"]) == len(LABELS)
    assert set(data["confusion"]["actual"]) == {"stayed", "churned"}  # the dataset's names


def test_paired_bootstrap_interval_brackets_the_difference_and_excludes_zero_for_a_real_gap() -> (
    None
):
    result = paired_bootstrap(
        LABELS, GOOD, NOISE, metric=roc_auc_score, samples=200, confidence=0.95, seed=1
    )
    assert result["low"] <= result["difference"] <= result["high"]
    assert result["low"] > 0
    same = paired_bootstrap(
        LABELS, GOOD, GOOD, metric=roc_auc_score, samples=100, confidence=0.95, seed=1
    )
    assert same["difference"] == same["low"] == same["high"] == 0.0


def test_comparison_table_ranks_by_the_primary_metric() -> None:
    rows = {
        name: classification_metrics(LABELS, p, 0.5)
        for name, p in (("noise", NOISE), ("good", GOOD))
    }
    table = comparison_table(rows, "roc_auc").splitlines()
    assert table[2].startswith("| good |")
    assert table[3].startswith("| noise |")
