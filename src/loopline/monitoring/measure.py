"""Measuring one batch: drift against the champion's training data, quality once labeled.

The batch comes from the time axis (`loopline.data.time_axis.Batch`): a range of event
days, or what arrived since the previous batch. It is profiled (`loopline.monitoring.
profile`), `monitor.chunk_rows` rows at a time, and everything that decides comes from
the profile: the drift tests against the reference's profile, the quality metrics, the
rates. Its numbers become a `BatchOutcome` and its profile is stored beside it; its
Evidently snapshot (of a bounded sample) goes to the dashboard, and its HTML report is kept.
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
from loopline.monitoring.profile import Profile, profile_chunks
from loopline.monitoring.records import BatchOutcome
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


def measure_batch(workspace: Workspace, batch: Batch) -> Measured:
    """Data-quality incidents, drift and (once every prediction has its label) quality."""
    dataset, monitor = workspace.dataset, workspace.params.monitor
    rows, target = batch.rows, dataset.target_column
    columns = MonitoredColumns.from_contract(dataset.contract, target)
    profiled = columns.profiled(batch.day_column)
    profile = profile_chunks(rows, profiled, monitor.chunk_rows)
    version = profile.main_version()  # the version that served most of the batch
    reference = reference_frame(workspace, version)
    problems = traffic.incidents(
        rows, reference, dataset.contract, dataset.key_columns, monitor.traffic,
        day_column=batch.day_column,
    )  # fmt: skip
    for problem in problems:
        log.warning("batch %s: %s", batch.batch_id, problem)
    labeled = profile.labeled_rows == profile.rows
    drift = drift_tests(
        columns.reference_profile(reference), profile, columns, monitor.drift, workspace.params.seed
    )
    quality = profile.labeled.quality() if labeled else {}
    baseline = workspace.registry.tag(version, f"{tags.TEST_METRIC}{monitor.quality_metric}")
    scores = quality | {f"drift_{name}": score for name, score in drift.scores.items()}
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
        reference_positive_rate=round(float(reference[target].mean()), 4),
        metrics={name: round(value, 4) for name, value in scores.items()}, incidents=problems,
        last_arrival=batch.last_arrival,
        drift_limits={name: round(limit, 4) for name, limit in drift.limits.items()},
    )  # fmt: skip
    sample = rows.sample(n=min(len(rows), monitor.report_rows), random_state=workspace.params.seed)
    snapshot = run_report(
        reference, sample.sort_index(), columns, labeled=labeled, name=batch.batch_id,
        timestamp=batch.timestamp,
    )  # fmt: skip
    report_path = monitor.reports / f"{batch.batch_id.replace(':', '')}.html"
    with atomic_path(report_path) as tmp:
        snapshot.save_html(str(tmp))
    return Measured(outcome, profile, snapshot, report_path)
