"""Asynchronous prediction jobs: what `POST /jobs` stores and what the score-jobs flow runs.

A client with many records (up to `jobs.max_records`) submits them once, as JSON like
`/predict` or as a Parquet upload, and gets a job id at once; the job waits in the job
store (`loopline.infra.job_store`) until a runner takes it. The runner is the
`score-jobs` Prefect flow (`pipelines/jobs.py`): the service asks the Prefect server for a
run of its deployment at every submit and when it starts with jobs left unfinished, and
the deployment also runs every `jobs.sweep_minutes`, so a job outlives the service, the
runner and the Prefect server going down. In team mode the work pool's workers run it.

A run scores each job in chunks of `jobs.chunk_rows` with the compiled scorer of the
version pinned at its first attempt (the champion then): each chunk's rows go to the
prediction log like a synchronous request's (prediction id `job-<job>-<row>`, written
once even when a chunk is scored again) and then its result to the job store; see the
store's docstring for why every result is delivered exactly once.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopline.core.errors import DataContractError, LooplineError
from loopline.data import columns as cols
from loopline.infra.job_store import Job, JobStore
from loopline.registry.versions import CHAMPION
from loopline.scoring.batch import check_nulls, check_schema
from loopline.scoring.registered import LoadedModel, load_version
from loopline.serving.schema import required_fields
from loopline.workspace import Workspace

JOBS_FLOW, JOBS_DEPLOYMENT = "score-jobs", "loopline-jobs"
PARQUET_TYPES = frozenset({"application/vnd.apache.parquet", "application/x-parquet"})
ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(),
               "datetime": pa.string()}  # fmt: skip
RESULT_COLUMNS = ("prediction_id", "probability", "label", "model_name", "model_version")
log = logging.getLogger(__name__)


# -- submitting ---------------------------------------------------------------------------------


def encode_records(records: Sequence[Mapping[str, Any]], fields: Mapping[str, str]) -> bytes:
    """Validated JSON records as the Parquet bytes a job stores (the contract's types)."""
    schema = pa.schema([(name, ARROW_TYPES[dtype]) for name, dtype in fields.items()])
    return _parquet(pa.Table.from_pylist(list(records), schema=schema))


def check_upload(data: bytes, fields: Mapping[str, str], required: set[str], limit: int) -> int:
    """The rows of an uploaded Parquet file, after the checks that need no scoring.

    DataContractError naming what is wrong: not Parquet, a required column absent, null
    or of the wrong type, no rows, more than `limit` rows.
    """
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowException, OSError) as error:
        raise DataContractError(f"the body is not a Parquet file ({error})") from None
    check_schema(parquet.schema_arrow, fields, required)
    rows = parquet.metadata.num_rows
    if rows == 0:
        raise DataContractError("the Parquet file holds no rows")
    if rows > limit:
        raise DataContractError(f"{rows:,} rows: a job takes at most {limit:,}")
    check_nulls(parquet.read(columns=sorted(required)), required)
    return rows


def result_parquet(store: JobStore, job_id: str) -> bytes:
    """A done job's result as one Parquet file: its input rows, in order, with their scores."""
    tables = [pq.read_table(io.BytesIO(chunk)) for chunk in store.result_chunks(job_id)]
    return _parquet(pa.concat_tables(tables))


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class RunRequester:
    """Asks the Prefect server for a score-jobs run, at most once per job per `every_s`.

    A server that cannot be reached, or has no score-jobs deployment, is logged once (until
    a request succeeds): the job stays queued for the next run (a sweep, a restart). Blocks
    for up to a few seconds: call it from a thread (`asyncio.to_thread`).
    """

    def __init__(self, api_url: str | None, every_s: float) -> None:
        self.api_url = api_url
        self.every_s = every_s
        self.asked: dict[str, float] = {}
        self.failing = False
        self._lock = threading.Lock()

    def request(self, reason: str, job_id: str = "") -> bool:
        """Request a run (for `job_id`, or for whatever is unfinished); True if created."""
        with self._lock:
            now = time.monotonic()
            if job_id and now - self.asked.get(job_id, -self.every_s) < self.every_s:
                return False
            self.asked = {j: t for j, t in self.asked.items() if now - t < self.every_s}
            self.asked[job_id] = now
        if not self.api_url:
            return self._failed("no Prefect server is set (prefect.api_url or PREFECT_API_URL)")
        try:
            self._create_run(reason, job_id)
        except (httpx.HTTPError, LooplineError) as error:
            return self._failed(str(error).splitlines()[0])
        if self.failing:
            log.warning("score-jobs runs requested again at %s", self.api_url)
        self.failing = False
        return True

    def _create_run(self, reason: str, job_id: str) -> None:
        with httpx.Client(base_url=self.api_url, timeout=5) as client:
            found = client.get(f"/deployments/name/{JOBS_FLOW}/{JOBS_DEPLOYMENT}")
            if found.status_code == 404:
                raise LooplineError(
                    f"the Prefect server has no {JOBS_FLOW}/{JOBS_DEPLOYMENT} deployment "
                    "(start `loopline deploy`, or team mode)"
                )
            found.raise_for_status()
            created = client.post(
                f"/deployments/{found.json()['id']}/create_flow_run",
                json={"parameters": {"job_id": job_id}, "tags": [f"job-{reason}"]},
            )
            created.raise_for_status()

    def _failed(self, why: str) -> bool:
        if not self.failing:
            log.warning("cannot request a score-jobs run (%s): jobs wait queued for the "
                        "next run; logged once until a request succeeds", why)  # fmt: skip
        self.failing = True
        return False


# -- running ------------------------------------------------------------------------------------


def runner_name() -> str:
    """A name unique to this runner: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def run_jobs(workspace: Workspace, owner: str, logger: logging.Logger = log) -> list[Job]:
    """Run every claimable job, oldest first, until none is left; the jobs it ended."""
    store, lease_s = workspace.job_store, workspace.params.jobs.lease_s
    ended = []
    while (job := store.claim(owner, lease_s)) is not None:
        logger.info("job %s: %d rows, attempt %d", job.job_id, job.rows, job.attempts)
        ended.append(run_job(workspace, job, owner, logger))
    return ended


def run_job(workspace: Workspace, job: Job, owner: str, logger: logging.Logger = log) -> Job:
    """Score a claimed job chunk by chunk from its first chunk not stored; its final status.

    Bad records end it failed with the reason; losing the lease (this runner was presumed
    dead) ends this attempt and leaves the job to its new holder.
    """
    store, settings = workspace.job_store, workspace.params.jobs
    try:
        model = _pinned_model(workspace, job, owner)
        source = pq.ParquetFile(io.BytesIO(store.input(job.job_id)))
        fields = workspace.dataset.record_fields()
        required = required_fields(workspace.dataset.contract)
        check_schema(source.schema_arrow, fields, required)
        stored = store.stored_chunks(job.job_id)
        first_row = 0
        for chunk, batch in enumerate(source.iter_batches(batch_size=job.chunk_rows)):
            rows = batch.num_rows
            if chunk not in stored:
                check_nulls(batch, required)  # checked at submit too; this guards the store
                result = _score_chunk(workspace, model, job.job_id, batch, first_row)
                if not store.store_chunk(
                    job.job_id, owner, chunk, result, rows=rows, lease_s=settings.lease_s
                ):
                    logger.warning("job %s: lease lost at chunk %d; left to its new runner",
                                   job.job_id, chunk)  # fmt: skip
                    return store.get(job.job_id) or job
            first_row += rows
        store.finish(job.job_id, owner)
    except LooplineError as error:
        logger.error("job %s failed: %s", job.job_id, error)
        store.finish(job.job_id, owner, reason=str(error))
    ended = store.get(job.job_id) or job
    logger.info("job %s %s: %d of %d rows", job.job_id, ended.state, ended.rows_done, job.rows)
    return ended


def _pinned_model(workspace: Workspace, job: Job, owner: str) -> LoadedModel:
    """The version that scores the job: the one pinned before, else the champion now."""
    registry = workspace.registry
    version = job.model_version or registry.alias_version(CHAMPION)
    if version is None:
        raise LooplineError(f"{registry.name} has no champion to score the job with")
    if job.model_version is None:
        workspace.job_store.pin_version(job.job_id, owner, version)
    return load_version(registry, version, alias="" if job.model_version else CHAMPION)


def _score_chunk(
    workspace: Workspace, model: LoadedModel, job_id: str, batch: pa.RecordBatch, first_row: int
) -> bytes:
    """Score one chunk, log its rows as predictions (once), and return its result bytes."""
    table = pa.Table.from_batches([batch])
    columns = cols.from_arrow(table, model.scorer.record_fields)
    probability = model.scorer.probabilities(columns)
    labels = model.scorer.labels(probability)
    rows = table.num_rows
    ids = [f"job-{job_id}-{first_row + i}" for i in range(rows)]
    logged_at = dt.datetime.now(dt.UTC).isoformat()
    days = workspace.axis.event_days(cols.from_arrow(table, workspace.dataset.record_fields()))
    predictions = [
        {**record, "prediction_id": pid, "request_id": f"job-{job_id}", "logged_at": logged_at,
         "event_day": day, "model_name": model.name, "model_version": model.version,
         "probability": p, "label": label}
        for record, pid, day, p, label in zip(
            table.to_pylist(), ids, days, probability.tolist(), labels.tolist(), strict=True)
    ]  # fmt: skip
    workspace.prediction_log.append_new(predictions)
    scored = table
    for name, values in zip(RESULT_COLUMNS, (
        ids, probability, labels, np.full(rows, model.name), np.full(rows, model.version),
    ), strict=True):  # fmt: skip
        scored = scored.append_column(name, pa.array(values))
    return _parquet(scored)
