"""Evidently snapshots of a batch: the drift dashboard's and the HTML report's face.

The monitor decides on profiles (`loopline.monitoring.drift`); Evidently draws what people
look at. A snapshot is built from at most `monitor.report_rows` rows of the batch (a
seeded sample: its size, and so its cost, do not grow with the batch) against the
champion's reference. Evidently picks each test by column type and size (Wasserstein
distance for numbers, Jensen-Shannon for categories above 1,000 reference rows, threshold
0.1): the same distances the monitor computes from profiles.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd

from loopline.monitoring.drift import LABEL, PROBABILITY, MonitoredColumns


def load_evidently() -> Any:
    """The `evidently` package, imported on first use, its telemetry off."""
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
    import evidently  # noqa: PLC0415 - heavy import, only when monitoring

    return evidently


def run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: MonitoredColumns,
    *,
    labeled: bool,
    timestamp: dt.datetime,
    name: str,
    exact: tuple[Mapping[str, float], Mapping[str, float]] = ({}, {}),
) -> Any:
    """An Evidently Snapshot of `current` against `reference`, dated `timestamp`.

    The dashboard plots snapshots by their timestamp: pass the batch's data time.

    Both frames carry the tested columns plus `probability` and `label`; when `labeled`,
    also the target, and the snapshot adds classification quality and the positive rate.
    A column with no value in either frame is not tested (it counts as not drifted).
    `exact`: the monitor's figures of the whole batch by name, and each field's drift score
    (`BatchOutcome.figures`), added as metrics of their own (`loopline.monitoring.figures`).
    """
    evidently = load_evidently()
    empty = {c for c in columns.tested if current[c].isna().all() or reference[c].isna().all()}
    if empty:  # nothing to test (a dead feed is the traffic checks' to report)
        columns = replace(columns, share=tuple(c for c in columns.share if c not in empty),
                          report=tuple(c for c in columns.report if c not in empty))  # fmt: skip
    definition = _definition(evidently, columns, labeled=labeled)
    keep = [*columns.tested, PROBABILITY, LABEL, *([columns.target] if labeled else [])]

    numbers = [c for c in keep if c in columns.numeric or c == PROBABILITY]
    classes = [LABEL, *([columns.target] if labeled else [])]

    def dataset(frame: pd.DataFrame) -> Any:
        kept = frame[keep].reset_index(drop=True)
        # a field missing from the whole batch is read back from the log as None objects
        kept[numbers] = kept[numbers].astype("float64")
        # the log reads numbers as floats; labels are classes, compared with the reference's
        kept[classes] = kept[classes].astype("int64")
        return evidently.Dataset.from_pandas(kept, data_definition=definition)

    from loopline.monitoring.figures import batch_figures  # noqa: PLC0415 - imports Evidently

    report = evidently.Report([*_metrics(columns, labeled=labeled), *batch_figures(*exact)])
    return report.run(
        current_data=dataset(current), reference_data=dataset(reference),
        timestamp=timestamp, name=name,
    )  # fmt: skip


def _metrics(columns: MonitoredColumns, *, labeled: bool) -> list[Any]:
    """What a snapshot measures: drift per field, the drift share and data quality.

    With labels also the classification quality and the observed positive rate.
    """
    from evidently.metrics import (  # noqa: PLC0415 - heavy import
        DriftedColumnsCount,
        DuplicatedRowCount,
        F1Score,
        MeanValue,
        MissingValueCount,
        Precision,
        Recall,
        RocAuc,
        ValueDrift,
    )  # fmt: skip

    metrics: list[Any] = [ValueDrift(column=c) for c in columns.tested]
    metrics += [DriftedColumnsCount(columns=list(columns.share)), MeanValue(column=PROBABILITY)]
    # data quality, for the dashboard (the monitor's incident checks are in traffic.py)
    metrics += [MissingValueCount(column=c) for c in columns.rarely_missing]
    metrics += [DuplicatedRowCount()]
    if labeled:
        metrics += [RocAuc(), Precision(), Recall(), F1Score(), MeanValue(column=columns.target)]
    return metrics


def _definition(evidently: Any, columns: MonitoredColumns, *, labeled: bool) -> Any:
    """Evidently's reading of the frames: which columns are numbers, categories, the task."""
    classification = None
    if labeled:
        classification = [
            evidently.BinaryClassification(
                target=columns.target, prediction_labels=LABEL,
                prediction_probas=PROBABILITY, pos_label=1,
            )
        ]  # fmt: skip
    numeric = [c for c in columns.tested if c in columns.numeric]
    categorical = [c for c in columns.tested if c not in columns.numeric]
    return evidently.DataDefinition(
        numerical_columns=[*numeric, PROBABILITY],
        categorical_columns=[*categorical, LABEL, *([columns.target] if labeled else [])],
        classification=classification,
    )


def evidently_drift(snapshot: Any) -> dict[str, float]:
    """Evidently's drift value per tested column, read from a snapshot."""
    return {
        metric["config"]["column"]: float(metric["value"])
        for metric in snapshot.dict()["metrics"]
        if metric["config"].get("type", "").endswith(":ValueDrift")
    }
