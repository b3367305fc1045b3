"""Measuring one batch: drift against the champion's training data, quality once labeled.

The batch comes from the time axis (`loopline.data.time_axis.Batch`): a range of event
days, or what arrived since the previous batch. Its numbers become a `BatchOutcome`, its
Evidently snapshot goes to the dashboard, and its HTML report is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.core import tags
from loopline.core.io import atomic_path
from loopline.data.time_axis import Batch, ReferenceSources
from loopline.monitoring import traffic
from loopline.monitoring.drift import LABEL, PROBABILITY, MonitoredColumns, drift_result, run_report
from loopline.monitoring.records import BatchOutcome
from loopline.registry.reference import logged_reference
from loopline.scoring.registered import load_version
from loopline.training.metrics import batch_quality
from loopline.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """One batch's outcome, its Evidently snapshot and where its HTML report went."""

    outcome: BatchOutcome
    snapshot: Any
    report_path: Path


def reference_frame(workspace: Workspace, version: str) -> pd.DataFrame:
    """A sample of the version's own training data, scored by that version (cached).

    The time axis says where the sample comes from: the examples of the version's
    training window, or the sample of its training split logged with it.
    """
    monitor = workspace.params.monitor
    cache = monitor.reports.parent / "reference" / f"v{version}.parquet"
    if cache.is_file():
        return pd.read_parquet(cache)
    registry = workspace.registry
    sources = ReferenceSources(
        examples=workspace.examples, logged=lambda: logged_reference(registry, version)
    )
    sample = workspace.axis.reference_sample(
        registry.version_tags(version), sources, monitor.reference_rows, workspace.params.seed
    )
    scored = load_version(registry, version).scorer.score_frame(sample)
    reference = sample.assign(**{PROBABILITY: scored["probability"], LABEL: scored["label"]})
    with atomic_path(cache) as tmp:
        reference.to_parquet(tmp, index=False)
    log.info("reference for version %s: %d training rows", version, len(reference))
    return reference.reset_index(drop=True)


def measure_batch(workspace: Workspace, batch: Batch) -> Measured:
    """Data-quality incidents, drift and (once every prediction has its label) quality."""
    dataset, monitor = workspace.dataset, workspace.params.monitor
    rows, target = batch.rows, dataset.target_column
    version = str(rows["model_version"].mode().iloc[0])  # the version that served most of it
    reference = reference_frame(workspace, version)
    columns = MonitoredColumns.from_contract(dataset.contract, target)
    problems = traffic.incidents(
        rows, reference, dataset.contract, dataset.key_columns, monitor.traffic,
        day_column=batch.day_column,
    )  # fmt: skip
    for problem in problems:
        log.warning("batch %s: %s", batch.batch_id, problem)
    labeled_rows = int(rows[target].notna().sum())
    labeled = labeled_rows == len(rows)
    snapshot = run_report(
        reference, rows, columns, labeled=labeled, name=batch.batch_id, timestamp=batch.timestamp
    )
    drift = drift_result(snapshot, columns)
    quality = {}
    if labeled:
        quality = batch_quality(
            rows[target].to_numpy(int), rows[PROBABILITY].to_numpy(), rows[LABEL].to_numpy(int)
        )
    baseline = workspace.registry.tag(version, f"{tags.TEST_METRIC}{monitor.quality_metric}")
    scores = quality | {f"drift_{name}": score for name, score in drift.scores.items()}
    outcome = BatchOutcome(
        batch_id=batch.batch_id, first_day=batch.first_day, last_day=batch.last_day,
        rows=len(rows), labeled_rows=labeled_rows, model_version=version,
        drift_share=round(drift.share, 4), drifted_columns=drift.drifted,
        reported_drifted_columns=drift.reported_drifted,
        mean_probability=round(float(rows[PROBABILITY].mean()), 4),
        quality=round(quality[monitor.quality_metric], 4) if quality else None,
        baseline=float(baseline) if baseline is not None else None,
        positive_rate=round(float(rows[target].mean()), 4) if labeled else None,
        reference_positive_rate=round(float(reference[target].mean()), 4),
        metrics={name: round(value, 4) for name, value in scores.items()}, incidents=problems,
        last_arrival=batch.last_arrival,
    )  # fmt: skip
    report_path = monitor.reports / f"{batch.batch_id.replace(':', '')}.html"
    with atomic_path(report_path) as tmp:
        snapshot.save_html(str(tmp))
    return Measured(outcome, snapshot, report_path)
