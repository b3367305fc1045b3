"""Measuring one batch: drift against the champion's training data, quality once labeled.

A batch is the traffic of a range of event days (a dataset with a time column: the
flights of a week), or of a range of arrival times in the prediction log (a dataset
without one: every record logged since the previous batch).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from loopline.core.errors import LooplineError
from loopline.core.io import atomic_path
from loopline.core.params import Params
from loopline.data.datasets.base import Dataset, read_tables
from loopline.infra.prediction_log import PredictionLog
from loopline.monitoring import traffic
from loopline.monitoring.decision import BatchOutcome
from loopline.monitoring.drift import LABEL, PROBABILITY, MonitoredColumns, drift_result, run_report
from loopline.registry.reference import logged_reference
from loopline.registry.versions import Registry
from loopline.scoring.registered import TEST_METRIC_TAG, load_version
from loopline.training.tracking import window_tag

log = logging.getLogger(__name__)
ARRIVAL_DAY = "arrival_day"  # a batch by arrival: each row's logged day, for per-day checks


@dataclass(frozen=True)
class Batch:
    """Logged predictions (with the labels in so far) and what names them."""

    rows: pd.DataFrame
    batch_id: str
    first_day: dt.date
    last_day: dt.date
    day_column: str  # each row's day, for the per-day checks: event day, or arrival day
    last_arrival: str | None = None  # batches by arrival: the next batch starts after it


def batch_by_event_days(log_store: PredictionLog, first_day: dt.date, last_day: dt.date) -> Batch:
    """The predictions for examples dated first_day..last_day."""
    rows = log_store.read_batch(first_day.isoformat(), last_day.isoformat())
    if rows.empty:
        raise LooplineError(f"no predictions logged for examples dated {first_day}..{last_day}")
    return Batch(rows, f"{first_day}..{last_day}", first_day, last_day, traffic.EVENT_DAY)


def batch_by_arrival(log_store: PredictionLog, after: str | None, until: str) -> Batch | None:
    """The predictions logged after `after` up to `until` (None: nothing arrived)."""
    rows = log_store.read_arrivals(after, until)
    if rows.empty:
        return None
    rows = rows.assign(**{ARRIVAL_DAY: rows["logged_at"].str.slice(0, 10)})
    first, last = (dt.datetime.fromisoformat(rows["logged_at"].iloc[i]) for i in (0, -1))
    named = "..".join(
        t.replace(tzinfo=None).isoformat(timespec="milliseconds") for t in (first, last)
    )
    return Batch(
        rows, named, first.date(), last.date(), ARRIVAL_DAY,
        last_arrival=rows["logged_at"].iloc[-1],
    )  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """One batch's outcome, its Evidently snapshot and where its HTML report went."""

    outcome: BatchOutcome
    snapshot: Any
    report_path: Path


def reference_frame(
    dataset: Dataset, params: Params, registry: Registry, version: str, root: Path
) -> pd.DataFrame:
    """A sample of the version's own training data, scored by that version (cached).

    With a time column, the examples of its training window; without, the sample of its
    training split that the register stage logged with it.
    """
    cache = root / params.monitor.reports.parent / "reference" / f"v{version}.parquet"
    if cache.is_file():
        return pd.read_parquet(cache)
    if dataset.has_time:
        sample = _training_window_sample(dataset, params, registry, version, root)
    else:
        sample = logged_reference(registry, version)
    scored = load_version(registry, version).scorer.score_frame(sample)
    reference = sample.assign(**{PROBABILITY: scored["probability"], LABEL: scored["label"]})
    with atomic_path(cache) as tmp:
        reference.to_parquet(tmp, index=False)
    log.info("reference for version %s: %d training rows", version, len(reference))
    return reference.reset_index(drop=True)


def _training_window_sample(
    dataset: Dataset, params: Params, registry: Registry, version: str, root: Path
) -> pd.DataFrame:
    window = registry.window(version, "train")
    if window is None:
        raise LooplineError(
            f"version {version} has no {window_tag('train')} tag (register versions with the "
            "register stage): its training data cannot serve as the drift reference"
        )
    tables = read_tables(root / params.paths.data, dataset.contract)
    examples = dataset.build_examples(tables, params.dataset)
    days = examples[dataset.time_column].dt.date
    inside = examples[(days >= window.start) & (days <= window.end)]
    return inside.sample(min(params.monitor.reference_rows, len(inside)), random_state=params.seed)


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
    batch: Batch,
    root: Path,
) -> Measured:
    """Data-quality incidents, drift and (once every prediction has its label) quality."""
    rows, batch_id = batch.rows, batch.batch_id
    target = dataset.target_column
    version = str(rows["model_version"].mode().iloc[0])  # the version that served most of it
    reference = reference_frame(dataset, params, registry, version, root)
    columns = MonitoredColumns.from_contract(dataset.contract, target)
    problems = traffic.incidents(
        rows, reference, dataset.contract, dataset.key_columns, params.monitor.traffic,
        day_column=batch.day_column,
    )  # fmt: skip
    for problem in problems:
        log.warning("batch %s: %s", batch_id, problem)
    labeled_rows = int(rows[target].notna().sum())
    labeled = labeled_rows == len(rows)
    ended = (
        dt.datetime.fromisoformat(batch.last_arrival).replace(tzinfo=None)
        if batch.last_arrival
        else dt.datetime.combine(batch.last_day, dt.time(23, 59))
    )
    snapshot = run_report(reference, rows, columns, labeled=labeled, name=batch_id, timestamp=ended)
    drift = drift_result(snapshot, columns)
    tags = registry.client.get_model_version(registry.name, version).tags
    metric = params.monitor.quality_metric
    quality = {}
    if labeled:
        quality = _quality(
            rows[target].to_numpy(int), rows[PROBABILITY].to_numpy(), rows[LABEL].to_numpy(int)
        )
    baseline = tags.get(f"{TEST_METRIC_TAG}{metric}")
    scores = quality | {f"drift_{name}": score for name, score in drift.scores.items()}
    outcome = BatchOutcome(
        batch_id=batch_id, first_day=batch.first_day, last_day=batch.last_day, rows=len(rows),
        labeled_rows=labeled_rows, model_version=version, drift_share=round(drift.share, 4),
        drifted_columns=drift.drifted, reported_drifted_columns=drift.reported_drifted,
        mean_probability=round(float(rows[PROBABILITY].mean()), 4),
        quality=round(quality[metric], 4) if metric in quality else None,
        baseline=float(baseline) if baseline is not None else None,
        positive_rate=round(float(rows[target].mean()), 4) if labeled else None,
        reference_positive_rate=round(float(reference[target].mean()), 4),
        metrics={name: round(value, 4) for name, value in scores.items()}, incidents=problems,
        last_arrival=batch.last_arrival,
    )  # fmt: skip
    report_path = root / params.monitor.reports / f"{batch_id.replace(':', '')}.html"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(report_path) as tmp:
        snapshot.save_html(str(tmp))
    return Measured(outcome, snapshot, report_path)
