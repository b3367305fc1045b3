"""Measuring one batch: drift against the champion's training data, quality once labeled.

The batch comes from the time axis (`loopline.data.time_axis.Batch`): a range of event
days, or what arrived since the previous batch. It is read once, `monitor.chunk_rows`
rows at a time, into a profile (`loopline.monitoring.profile`), a seeded sample of at
most `monitor.report_rows` rows and the hashes of its keys; everything that decides comes
from those: the data-quality checks, the drift tests against the reference's profile, the
quality metrics, the rates. Its numbers become a `BatchOutcome`, its profile is stored
beside it, its Evidently snapshot (of the sample) goes to the dashboard, and its HTML
report is kept.
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
from loopline.monitoring.drift import LABEL, PROBABILITY, MonitoredColumns, drift_tests
from loopline.monitoring.profile import Profile
from loopline.monitoring.reading import BatchRead, read_batch
from loopline.monitoring.records import DRIFT_PREFIX, BatchOutcome
from loopline.monitoring.snapshot import run_report
from loopline.registry.reference import logged_reference
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """One batch's outcome, its profile, its Evidently snapshot and its HTML report's path."""

    outcome: BatchOutcome
    profile: Profile
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


@dataclass(frozen=True)
class Assessed:
    """A batch's outcome (what decides) and what its report is drawn from."""

    outcome: BatchOutcome
    read: BatchRead
    reference: pd.DataFrame  # the reference's rows, scored
    labeled: bool  # every prediction of the batch has its label


def measure_batch(workspace: Workspace, batch: Batch) -> Measured:
    """Assess the batch, then draw its Evidently snapshot and keep its HTML report."""
    assessed = assess_batch(workspace, batch)
    snapshot, report_path = report_batch(workspace, batch, assessed)
    return Measured(assessed.outcome, assessed.read.profile, snapshot, report_path)


def report_batch(workspace: Workspace, batch: Batch, assessed: Assessed) -> tuple[Any, Path]:
    """The batch's Evidently snapshot (of its sample) and where its HTML report was saved."""
    dataset, monitor = workspace.dataset, workspace.params.monitor
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    snapshot = run_report(
        assessed.reference, assessed.read.sample, columns, labeled=assessed.labeled,
        name=batch.batch_id, timestamp=batch.timestamp, exact=assessed.outcome.figures(),
    )  # fmt: skip
    report_path = monitor.reports / f"{batch.batch_id.replace(':', '')}.html"
    with atomic_path(report_path) as tmp:
        snapshot.save_html(str(tmp))
    return snapshot, report_path


def assess_batch(workspace: Workspace, batch: Batch) -> Assessed:
    """Data-quality incidents, drift and (once every prediction has its label) quality."""
    dataset, monitor = workspace.dataset, workspace.params.monitor
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    read = read_batch(workspace, batch, columns.profiled(batch.day_column, dataset.key_columns))
    profile = read.profile
    version = profile.main_version()  # the version that served most of the batch
    reference = reference_frame(workspace, version)
    reference_profile = columns.reference_profile(reference)
    keys = traffic.KeyReader(
        tuple(dataset.key_columns),
        lambda: workspace.prediction_log.read_chunks(
            batch.selection, dataset.key_columns, monitor.chunk_rows, monitor.readers
        ),
    )
    problems = traffic.incidents(
        profile, reference_profile, dataset.contract, monitor.traffic, repeats=read.repeats,
        keys=keys,
    )  # fmt: skip
    for problem in problems:
        log.warning("batch %s: %s", batch.batch_id, problem)
    labeled = profile.labeled_rows == profile.rows
    drift = drift_tests(reference_profile, profile, columns, monitor.drift, workspace.params.seed)
    quality = profile.labeled.quality() if labeled else {}
    baseline = workspace.registry.tag(version, f"{tags.TEST_METRIC}{monitor.quality_metric}")
    scores = quality | {f"{DRIFT_PREFIX}{name}": score for name, score in drift.scores.items()}
    positives = int(profile.labeled.positives.sum())
    outcome = BatchOutcome(
        batch_id=batch.batch_id, first_day=batch.first_day, last_day=batch.last_day,
        rows=profile.rows, labeled_rows=profile.labeled_rows, model_version=version,
        drift_share=round(drift.share, 4), drifted_columns=drift.drifted,
        reported_drifted_columns=drift.reported_drifted,
        mean_probability=round(profile.mean_probability, 4),
        quality=round(quality[monitor.quality_metric], 4) if quality else None,
        baseline=float(baseline) if baseline is not None else None,
        positive_rate=round(positives / profile.rows, 4) if labeled else None,
        reference_positive_rate=round(float(reference[dataset.target_column].mean()), 4),
        metrics={name: round(value, 4) for name, value in scores.items()}, incidents=problems,
        last_arrival=batch.last_arrival,
        drift_limits={name: round(limit, 4) for name, limit in drift.limits.items()},
    )  # fmt: skip
    return Assessed(outcome, read, reference, labeled)
