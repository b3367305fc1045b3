"""Measuring one batch: drift against the champion's training data, quality once labeled."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from loopline.config import Params
from loopline.datasets.base import Dataset, read_tables
from loopline.errors import LooplineError
from loopline.io import atomic_path
from loopline.monitoring import traffic
from loopline.monitoring.decision import BatchOutcome
from loopline.monitoring.drift import LABEL, PROBABILITY, MonitoredColumns, drift_result, run_report
from loopline.registry import Registry
from loopline.scoring.registered import TEST_METRIC_TAG, load_version
from loopline.serving.prediction_log import PredictionLog
from loopline.tracking import window_tag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """One batch's outcome, its Evidently snapshot and where its HTML report went."""

    outcome: BatchOutcome
    snapshot: Any
    report_path: Path


def reference_frame(
    dataset: Dataset, params: Params, registry: Registry, version: str, root: Path
) -> pd.DataFrame:
    """A sample of the version's own training window, scored by that version (cached)."""
    cache = root / params.monitor.reports.parent / "reference" / f"v{version}.parquet"
    if cache.is_file():
        return pd.read_parquet(cache)
    window = registry.window(version, "train")
    if window is None:
        raise LooplineError(
            f"version {version} has no {window_tag('train')} tag (register versions with the "
            "register stage): its training data cannot serve as the drift reference"
        )
    tables = read_tables(root / params.paths.data, dataset.contract)
    examples = dataset.build_examples(tables, params.dataset)
    days = examples[dataset.require_time("monitoring")].dt.date
    inside = examples[(days >= window.start) & (days <= window.end)]
    sample = inside.sample(
        min(params.monitor.reference_rows, len(inside)), random_state=params.seed
    )
    scored = load_version(registry, version).scorer.score_frame(sample)
    reference = sample.assign(**{PROBABILITY: scored["probability"], LABEL: scored["label"]})
    with atomic_path(cache) as tmp:
        reference.to_parquet(tmp, index=False)
    log.info("reference for version %s: %d rows of %s", version, len(reference), window)
    return reference.reset_index(drop=True)


def _quality(labels: np.ndarray, proba: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if labels.min() == labels.max():
        return {}
    return {
        "roc_auc": float(metrics.roc_auc_score(labels, proba)),
        "pr_auc": float(metrics.average_precision_score(labels, proba)),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
    }


def measure_batch(
    *,
    dataset: Dataset,
    params: Params,
    registry: Registry,
    log_store: PredictionLog,
    first_day: dt.date,
    last_day: dt.date,
    root: Path,
) -> Measured:
    """Data-quality incidents, drift and (once every prediction has its label) quality."""
    batch = log_store.read_batch(first_day.isoformat(), last_day.isoformat())
    if batch.empty:
        raise LooplineError(f"no predictions logged for flights of {first_day}..{last_day}")
    target = dataset.target_column
    version = str(batch["model_version"].mode().iloc[0])  # the version that served most of it
    reference = reference_frame(dataset, params, registry, version, root)
    columns = MonitoredColumns.from_contract(dataset.contract, target)
    problems = traffic.incidents(
        batch, reference, dataset.contract, dataset.key_columns, params.monitor.traffic
    )
    for problem in problems:
        log.warning("batch %s..%s: %s", first_day, last_day, problem)
    labeled_rows = int(batch[target].notna().sum())
    labeled = labeled_rows == len(batch)
    batch_id = f"{first_day}..{last_day}"
    snapshot = run_report(
        reference, batch, columns, labeled=labeled, name=batch_id,
        timestamp=dt.datetime.combine(last_day, dt.time(23, 59)),
    )  # fmt: skip
    drift = drift_result(snapshot, columns)
    tags = registry.client.get_model_version(registry.name, version).tags
    metric = params.monitor.quality_metric
    quality = {}
    if labeled:
        quality = _quality(
            batch[target].to_numpy(int), batch[PROBABILITY].to_numpy(), batch[LABEL].to_numpy(int)
        )
    baseline = tags.get(f"{TEST_METRIC_TAG}{metric}")
    scores = quality | {f"drift_{name}": score for name, score in drift.scores.items()}
    outcome = BatchOutcome(
        batch_id=batch_id, first_day=first_day, last_day=last_day, rows=len(batch),
        labeled_rows=labeled_rows, model_version=version, drift_share=round(drift.share, 4),
        drifted_columns=drift.drifted, reported_drifted_columns=drift.reported_drifted,
        mean_probability=round(float(batch[PROBABILITY].mean()), 4),
        quality=round(quality[metric], 4) if metric in quality else None,
        baseline=float(baseline) if baseline is not None else None,
        positive_rate=round(float(batch[target].mean()), 4) if labeled else None,
        reference_positive_rate=round(float(reference[target].mean()), 4),
        metrics={name: round(value, 4) for name, value in scores.items()}, incidents=problems,
    )  # fmt: skip
    report_path = root / params.monitor.reports / f"{batch_id}.html"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(report_path) as tmp:
        snapshot.save_html(str(tmp))
    return Measured(outcome, snapshot, report_path)
