"""Reading a batch from the prediction log: once, in chunks, in one process or over Dask.

A batch is cut into partitions by arrival time (its `logged_at` range split evenly) and
each partition is read in chunks of `monitor.chunk_rows` rows into what the monitor
keeps: a profile, a seeded sample (each row kept with the same chance, for the report)
and the hashes of its keys. With `monitor.engine: local` the partitions are read here,
one after another; with `dask`, each is read by a worker of the cluster at
`monitor.scheduler` (or of a `LocalCluster` of `monitor.dask_workers` processes), which
opens the log itself, and the client merges the parts in partition order. Profiles add,
so the result is the same on any number of workers (tests/integration/test_monitor_dask.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.params import MonitorParams
from loopline.data.time_axis import Batch
from loopline.infra.prediction_log import PredictionLog, Selection, Span
from loopline.monitoring import traffic
from loopline.monitoring.profile import Profile, ProfiledColumns, merge_all, profile_frame
from loopline.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRead:
    """What one pass over a batch keeps: its profile, a sample, its key repeats."""

    profile: Profile
    sample: pd.DataFrame  # at most `monitor.report_rows` rows, seeded: the report's
    repeats: traffic.Repeats


@dataclass(frozen=True)
class PartRead:
    """One partition's profile, sample and key hashes."""

    profile: Profile | None  # None: the partition held no row
    sample: pd.DataFrame
    hashes: np.ndarray


@dataclass(frozen=True)
class PartitionJob:
    """Everything a process needs to read one partition (picklable: it travels to workers)."""

    log_url: str
    record_fields: Mapping[str, str]
    key_columns: tuple[str, ...]
    target: str
    selection: Selection
    columns: ProfiledColumns
    chunk_rows: int
    readers: int  # windows read at once (a SQLite log)
    keep: float  # each row's chance of joining the sample
    seed: tuple[int, int]  # the run's seed and the partition's index

    def run(self) -> PartRead:
        """Read the partition chunk by chunk (its own connection to the log)."""
        log_ = PredictionLog(self.log_url, self.record_fields, self.key_columns, self.target)
        wanted = list(dict.fromkeys([*self.columns.columns(), *self.key_columns]))
        rng = np.random.default_rng(self.seed)
        profiles, samples, hashes = [], [], []
        try:
            for chunk in log_.read_chunks(self.selection, wanted, self.chunk_rows, self.readers):
                profiles.append(profile_frame(chunk, self.columns))
                samples.append(chunk[rng.random(len(chunk)) < self.keep])
                hashes.append(traffic.key_hashes(chunk, self.key_columns))
        finally:
            log_.engine.dispose()
        return PartRead(
            merge_all(profiles) if profiles else None,
            pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
            np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
        )


def read_batch(
    workspace: Workspace, batch: Batch, columns: ProfiledColumns, parts: int | None = None
) -> BatchRead:
    """Read the batch once, as `monitor.engine` says (`parts`: partitions; None: one per worker)."""
    monitor, params, dataset = workspace.params.monitor, workspace.params, workspace.dataset
    log_ = workspace.prediction_log
    job = PartitionJob(
        log_.url.render_as_string(hide_password=False), dataset.record_fields(),
        tuple(dataset.key_columns), dataset.target_column, batch.selection, columns,
        monitor.chunk_rows, monitor.readers, min(1.0, monitor.report_rows / max(batch.rows, 1)),
        (params.seed, 0),
    )  # fmt: skip
    read = read_partitions(job, lambda: log_.span(batch.selection), monitor, parts)
    if read is None:
        raise LooplineError(f"batch {batch.batch_id}: nothing to read in the prediction log")
    return read


def read_partitions(
    job: PartitionJob, span: Callable[[], Span], monitor: MonitorParams, parts: int | None = None
) -> BatchRead | None:
    """`job`'s selection split by arrival time (`span`: when its first and last arrived).

    Read and merged; None when it holds no row. The sample is capped at
    `monitor.report_rows` rows. One part needs no span (its arrival times are read only
    to split).
    """
    seed = job.seed[0]
    with _runner(monitor) as (run, workers):
        selections = [job.selection]
        if (parts or workers) > 1:
            logged = span()
            selections = split(job.selection, logged.first_logged, logged.last_logged,
                               parts or workers)  # fmt: skip
        read = run([replace(job, selection=s, seed=(seed, i)) for i, s in enumerate(selections)])
    found = [part.profile for part in read if part.profile is not None]
    if not found:
        return None
    sample = pd.concat([part.sample for part in read], ignore_index=True)
    if len(sample) > monitor.report_rows:
        sample = sample.sample(n=monitor.report_rows, random_state=seed).sort_index()
    return BatchRead(merge_all(found), sample, traffic.Repeats.of(p.hashes for p in read))


@contextlib.contextmanager
def _runner(monitor: MonitorParams) -> Iterator[tuple]:
    """How partitions are read, and by how many workers: here, or on a Dask cluster."""
    if monitor.engine == "local":
        yield (lambda jobs: [job.run() for job in jobs]), 1
        return
    from distributed import Client, LocalCluster  # noqa: PLC0415 - only on a cluster

    with contextlib.ExitStack() as stack:
        if monitor.scheduler:
            client = stack.enter_context(Client(monitor.scheduler))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=monitor.dask_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.WARNING,
            ))  # fmt: skip
            client = stack.enter_context(Client(cluster))
        workers = max(1, len(client.scheduler_info()["workers"]))

        def run(jobs: list[PartitionJob]) -> list[PartRead]:
            futures = client.map(PartitionJob.run, jobs, pure=False)
            return client.gather(futures)

        log.info("reading the batch on dask: %d workers", workers)
        yield run, workers


def split(selection: Selection, first: str | None, last: str | None, parts: int) -> list[Selection]:
    """`selection` cut into up to `parts` consecutive ranges of arrival time.

    Every prediction falls in exactly one part. A log whose times are not ISO (or a
    selection of one instant) stays one part.
    """
    if parts <= 1 or first is None or last is None or first == last:
        return [selection]
    try:
        start, end = dt.datetime.fromisoformat(first), dt.datetime.fromisoformat(last)
    except ValueError:
        return [selection]
    step = (end - start) / parts
    cuts = [(start + step * i).isoformat(timespec="microseconds") for i in range(1, parts)]
    bounds = [selection.after, *cuts, selection.until]
    return [replace(selection, after=low, until=high) for low, high in itertools.pairwise(bounds)]
