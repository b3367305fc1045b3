"""The monitor's read over Dask: two workers give the profile one process gives."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import numpy as np
import pytest

from loopline.core.params import Params
from loopline.data import columns as cols
from loopline.data.datasets.base import Dataset
from loopline.data.time_axis import ByDays
from loopline.infra.prediction_log import PredictionLog, Selection
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.reading import PartitionJob, read_partitions, split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory, small_tables: dict, small_params: Params,
    dataset: Dataset,
) -> tuple[PredictionLog, int]:  # fmt: skip
    """The slice's flights logged with scores, arrival times a second apart, most labeled."""
    examples = dataset.build_examples(small_tables, small_params.dataset)
    log = PredictionLog(
        tmp_path_factory.mktemp("dask") / "log.sqlite", dataset.record_fields(),
        dataset.key_columns, dataset.target_column,
    )  # fmt: skip
    probability = np.random.default_rng(0).random(len(examples))
    days = ByDays(dataset).event_days(cols.from_frame(examples, dataset.record_fields()))
    records = examples[dataset.record_columns()].astype(object)
    records = records.where(records.notna(), None).to_dict("records")
    log.append([
        record | {"prediction_id": uuid.uuid4().hex, "request_id": "r", "model_name": "m",
                  "model_version": "1" if i % 5 else "2", "probability": float(p),
                  "label": int(p > 0.4), "event_day": day,
                  "logged_at": f"2026-12-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"}
        for i, (record, p, day) in enumerate(zip(records, probability, days, strict=True))
    ])  # fmt: skip
    log.deliver_labels(examples.iloc[: len(examples) * 4 // 5], delivered_at="t")
    return log, len(examples)


def _job(log: PredictionLog, dataset: Dataset) -> PartitionJob:
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    return PartitionJob(
        log.url.render_as_string(hide_password=False), dataset.record_fields(),
        tuple(dataset.key_columns), dataset.target_column, Selection(),
        columns.profiled("event_day"), 2000, 2, 0.1, (7, 0),
    )  # fmt: skip


def test_two_dask_workers_give_the_profile_of_one_process(
    logged: tuple[PredictionLog, int],
    dataset: Dataset,
    params: Params,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="loopline.monitoring.reading")
    log, rows = logged
    times = lambda: log.span(Selection())  # noqa: E731 - what the monitor passes
    job = _job(log, dataset)
    local = params.monitor.model_copy(update={"engine": "local"})
    dask = params.monitor.model_copy(update={"engine": "dask", "dask_workers": 2})
    on_dask = read_partitions(job, times, dask)  # a LocalCluster of 2 processes: 2 parts
    in_one = read_partitions(job, times, local)  # this process, the batch whole
    same_parts = read_partitions(job, times, local, parts=2)  # this process, Dask's 2 parts
    assert on_dask is not None
    assert in_one is not None
    assert same_parts is not None
    assert "reading the batch on dask: 2 workers" in caplog.messages
    assert on_dask.profile.as_dict() == same_parts.profile.as_dict()  # to the last bit
    whole, merged = in_one.profile, on_dask.profile
    assert merged.rows == whole.rows == rows
    assert merged.versions == whole.versions
    assert merged.days == whole.days
    assert merged.labeled.served == whole.labeled.served
    assert merged.labeled.rows == rows * 4 // 5
    np.testing.assert_array_equal(merged.labeled.positives, whole.labeled.positives)
    for name, sketch in whole.fields.items():  # counts exact; float sums to rounding
        ours, theirs = sketch.as_dict(), merged.fields[name].as_dict()
        np.testing.assert_allclose(theirs.pop("sums", []), ours.pop("sums", []), rtol=1e-12)
        assert theirs.pop("squares", 0) == pytest.approx(ours.pop("squares", 0), rel=1e-12)
        assert theirs == ours, name
    assert on_dask.repeats == in_one.repeats
    assert len(on_dask.sample) == pytest.approx(rows * 0.1, rel=0.2)


def test_arrival_ranges_split_a_selection_without_overlap(
    logged: tuple[PredictionLog, int],
) -> None:
    log, rows = logged
    span = log.span(Selection())
    parts = split(Selection(first_day="2013-01-01"), span.first_logged, span.last_logged, 3)
    assert len(parts) == 3
    assert sum(log.span(part).rows for part in parts) == log.span(Selection()).rows == rows
    assert parts[0].after is None
    assert parts[-1].until is None
    assert all(part.first_day == "2013-01-01" for part in parts)
    assert split(Selection(), "t", "t", 3) == [Selection()]  # not times: one part
    assert split(replace(Selection(), until="x"), None, None, 3) == [Selection(until="x")]
