"""Metrics for an imbalanced binary target, curves for DVC plots, and a paired bootstrap.

All functions take true labels (0/1) and predicted probabilities of the positive class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn import metrics

MetricFn = Callable[[np.ndarray, np.ndarray], float]

RANKING_METRICS: dict[str, MetricFn] = {
    "roc_auc": metrics.roc_auc_score,
    "pr_auc": metrics.average_precision_score,
}


def choose_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut-off that maximises F1 (chosen on validation, used on test)."""
    precision, recall, thresholds = metrics.precision_recall_curve(y_true, proba)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    return float(thresholds[best])


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over equal-width probability bins, weighted by size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(y_true[mask].mean() - proba[mask].mean())
    return float(error)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float
) -> dict[str, float]:
    """Ranking, probability-quality and thresholded metrics of one model on one window."""
    y_true = np.asarray(y_true, dtype=int)
    proba = np.clip(np.asarray(proba, dtype=float), 1e-7, 1 - 1e-7)
    label = (proba >= threshold).astype(int)
    result = {name: float(fn(y_true, proba)) for name, fn in RANKING_METRICS.items()}
    result |= {
        "log_loss": float(metrics.log_loss(y_true, proba, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y_true, proba)),
        "ece": expected_calibration_error(y_true, proba),
        "precision": float(metrics.precision_score(y_true, label, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, label, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, label, zero_division=0)),
        "threshold": float(threshold),
        "positive_rate": float(y_true.mean()),
        "predicted_positive_rate": float(label.mean()),
        "rows": len(y_true),
    }
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()}


def curves(
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    labels: tuple[str, str],
    points: int = 200,
) -> dict[str, pd.DataFrame]:
    """ROC, precision-recall, calibration and confusion data, ready to write for DVC plots.

    ROC and PR curves are thinned to about `points` rows so the files stay small; the
    confusion rows name the classes by `labels` (negative, positive).
    """
    fpr, tpr, _ = metrics.roc_curve(y_true, proba)
    precision, recall, _ = metrics.precision_recall_curve(y_true, proba)
    keep_roc = np.unique(np.linspace(0, len(fpr) - 1, points).astype(int))
    keep_pr = np.unique(np.linspace(0, len(recall) - 1, points).astype(int))
    bins = pd.cut(proba, np.linspace(0, 1, 11), include_lowest=True)
    calibration = (
        pd.DataFrame({"predicted": proba, "observed": y_true, "bin": bins})
        .groupby("bin", observed=True)
        .agg(
            mean_predicted=("predicted", "mean"),
            observed_rate=("observed", "mean"),
            rows=("observed", "size"),
        )
        .reset_index(drop=True)
    )
    names = np.array(labels)
    return {
        "roc": pd.DataFrame({"fpr": fpr[keep_roc], "tpr": tpr[keep_roc]}),
        "pr": pd.DataFrame({"recall": recall[keep_pr], "precision": precision[keep_pr]}),
        "calibration": calibration.round(6),
        "confusion": pd.DataFrame(
            {
                "actual": names[np.asarray(y_true, dtype=int)],
                "predicted": names[(proba >= threshold).astype(int)],
            }
        ),
    }


def paired_bootstrap(
    y_true: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    *,
    metric: MetricFn,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, float]:
    """Difference metric(a) - metric(b) on the same rows, with a bootstrap interval.

    Rows are resampled with replacement and both models are scored on the same resample,
    so the interval reflects the difference, not each model's own noise.
    """
    y_true, proba_a, proba_b = (np.asarray(v) for v in (y_true, proba_a, proba_b))
    rng = np.random.default_rng(seed)
    n = len(y_true)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        if y_true[idx].min() == y_true[idx].max():
            continue  # a resample with one class has no ranking metric
        diffs.append(metric(y_true[idx], proba_a[idx]) - metric(y_true[idx], proba_b[idx]))
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {
        "difference": float(metric(y_true, proba_a) - metric(y_true, proba_b)),
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "samples": len(diffs),
    }


TABLE_COLUMNS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall", "f1")


def comparison_table(results: dict[str, dict[str, float]], primary: str) -> str:
    """Markdown table of candidates, best first by the primary metric."""
    ranked = sorted(results, key=lambda family: results[family][primary], reverse=True)
    lines = [
        "| model | " + " | ".join(TABLE_COLUMNS) + " |",
        "|---|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for family in ranked:
        cells = " | ".join(f"{results[family][column]:.4f}" for column in TABLE_COLUMNS)
        lines.append(f"| {family} | {cells} |")
    return "\n".join(lines)


def period_quality(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Rates, Brier score and (with both classes) ranking of one model on one period."""
    out = {"positive_rate": float(labels.mean()), "mean_probability": float(proba.mean()),
           "brier": float(metrics.brier_score_loss(labels, proba))}  # fmt: skip
    if labels.min() != labels.max():
        out |= {"roc_auc": float(metrics.roc_auc_score(labels, proba)),
                "pr_auc": float(metrics.average_precision_score(labels, proba))}  # fmt: skip
    return {k: round(v, 4) for k, v in out.items()}
