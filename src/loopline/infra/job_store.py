"""Asynchronous prediction jobs: their state, input and results, in Loopline's own store.

A job is a set of records submitted at once (`POST /jobs`) and scored later by a runner
(the score-jobs flow, `loopline.serving.jobs`). Everything about it lives here, in the
same kind of store as the prediction log (`jobs.store`: a SQLite file, or the team's
PostgreSQL), so a restarted service, a killed runner or a second API worker loses nothing:

* `jobs`: one row per job: its id, idempotency key (unique), the input's digest, state
  (queued, running, done, failed), rows, rows done, the reason of a failure, the version
  that scores it, timestamps, the runner holding it and until when (its lease);
* `job_inputs`: the submitted records, as Parquet bytes;
* `job_results`: the scored rows, as Parquet bytes, one row per chunk of the input.

Exactly once: a runner takes a job by a compare-and-set on its state and lease (`claim`),
renews the lease with every chunk it stores (`store_chunk`, refused once another runner
holds the job), and a chunk's result is keyed by (job, chunk), so a chunk scored twice
(its runner died between scoring and storing) is stored once. A job whose runner died can
be claimed again when the lease lapses, and resumes at its first chunk not yet stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from loopline.core.errors import LooplineError
from loopline.infra.database import create_engine, cross_process_lock, database_url

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
REASON_CHARS = 1000


class IdempotencyConflictError(LooplineError):
    """An idempotency key already used for a different body."""


@dataclass(frozen=True)
class Job:
    """What a job's status says (`GET /jobs/{id}`)."""

    job_id: str
    state: str
    rows: int
    rows_done: int
    chunk_rows: int
    reason: str | None
    model_version: str | None
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    owner: str | None
    lease_until: float | None

    @property
    def claimable(self) -> bool:
        """Queued, or held by a runner whose lease has lapsed (it died or hung)."""
        lapsed = self.lease_until is not None and self.lease_until < time.time()
        return self.state == QUEUED or (self.state == RUNNING and lapsed)

    def public(self) -> dict[str, Any]:
        """The status a client sees (the lease is the runners' business)."""
        shown = asdict(self)
        for private in ("owner", "lease_until"):
            shown.pop(private)
        return shown


def _job(row: sa.RowMapping) -> Job:
    """A jobs-table row as the status it reports."""
    return Job(**{name: row[name] for name in Job.__dataclass_fields__})


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class JobStore:
    """The jobs, their inputs and results (one database; SQLite or PostgreSQL)."""

    def __init__(self, location: URL | str | Path) -> None:
        self.url = database_url(location)
        metadata = sa.MetaData()
        self.jobs = sa.Table(
            "jobs", metadata,
            sa.Column("job_id", sa.Text, primary_key=True),
            sa.Column("idempotency_key", sa.Text, unique=True),
            sa.Column("digest", sa.Text, nullable=False),
            sa.Column("state", sa.Text, nullable=False, index=True),
            sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("rows_done", sa.BigInteger, nullable=False),
            sa.Column("chunk_rows", sa.BigInteger, nullable=False),  # fixed for every attempt
            sa.Column("reason", sa.Text),
            sa.Column("model_version", sa.Text),
            sa.Column("submitted_at", sa.Text, nullable=False),
            sa.Column("started_at", sa.Text),
            sa.Column("finished_at", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("owner", sa.Text),
            sa.Column("lease_until", sa.Float),
        )  # fmt: skip
        self.inputs = sa.Table(
            "job_inputs", metadata,
            sa.Column("job_id", sa.Text, primary_key=True),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )  # fmt: skip
        self.results = sa.Table(
            "job_results", metadata,
            sa.Column("job_id", sa.Text, primary_key=True),
            sa.Column("chunk", sa.Integer, primary_key=True),
            sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )  # fmt: skip
        self._lock = threading.Lock()
        self.engine = create_engine(self.url)
        with self._transaction() as db:
            metadata.create_all(db)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One write transaction, under this process's lock and the cross-process one."""
        with self._lock, cross_process_lock(self.url), self.engine.begin() as db:
            yield db

    def __str__(self) -> str:
        return self.url.render_as_string()

    # -- clients: submit, ask, download ---------------------------------------------------------

    def submit(
        self, data: bytes, rows: int, chunk_rows: int, key: str | None = None
    ) -> tuple[Job, bool]:
        """Store a new queued job (Parquet `data` of `rows` records); (the job, created).

        It is scored `chunk_rows` at a time, on every attempt.

        With an idempotency `key` already used for the same bytes, the first job is
        returned (created False): a retried submit is safe. The same key with other bytes
        raises IdempotencyConflictError.
        """
        digest = hashlib.sha256(data).hexdigest()
        if key is not None and (known := self._by_key(key, digest)) is not None:
            return known, False
        job_id = uuid.uuid4().hex
        row = {
            "job_id": job_id, "idempotency_key": key, "digest": digest, "state": QUEUED,
            "rows": rows, "rows_done": 0, "chunk_rows": chunk_rows, "submitted_at": _now(),
            "attempts": 0,
        }  # fmt: skip
        try:
            with self._transaction() as db:
                db.execute(self.jobs.insert().values(row))
                db.execute(self.inputs.insert().values(job_id=job_id, data=data))
        except sa.exc.IntegrityError:  # the same key submitted at the same moment elsewhere
            known = self._by_key(key, digest) if key is not None else None
            if known is None:
                raise
            return known, False
        return self._get(job_id), True

    def _rows(self, where: sa.ColumnElement[bool]) -> Sequence[sa.RowMapping]:
        """The jobs table's rows matching `where`, oldest first."""
        query = sa.select(self.jobs).where(where).order_by(self.jobs.c.submitted_at)
        with self.engine.connect() as db:
            return db.execute(query).mappings().all()

    def _by_key(self, key: str, digest: str) -> Job | None:
        found = self._rows(self.jobs.c.idempotency_key == key)
        if not found:
            return None
        if found[0]["digest"] != digest:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was used for job {found[0]['job_id']} with a "
                "different body; use a new key for new records"
            )
        return _job(found[0])

    def get(self, job_id: str) -> Job | None:
        """The job's status, or None for an unknown id."""
        found = self._rows(self.jobs.c.job_id == job_id)
        return _job(found[0]) if found else None

    def _get(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise LooplineError(f"job {job_id} is not in {self}")
        return job

    def result_chunks(self, job_id: str) -> Iterator[bytes]:
        """A done job's result, chunk by chunk in input order (Parquet bytes each)."""
        query = sa.select(self.results.c.data).where(self.results.c.job_id == job_id)
        with self.engine.connect() as db:
            for (data,) in db.execute(query.order_by(self.results.c.chunk)):
                yield data

    def unfinished(self) -> list[Job]:
        """Jobs queued or running, oldest first."""
        return [_job(row) for row in self._rows(self.jobs.c.state.in_([QUEUED, RUNNING]))]

    # -- runners: claim, work, finish -----------------------------------------------------------

    def claim(self, owner: str, lease_s: float) -> Job | None:
        """Take the oldest claimable job for `owner` until `lease_s` from now; None if none.

        A compare-and-set: of several runners asking at once, one gets each job.
        """
        for job in self.unfinished():
            if not job.claimable:
                continue
            jobs = self.jobs.c
            held = sa.and_(jobs.state == RUNNING, jobs.lease_until < time.time())
            taken = (
                sa.update(self.jobs)
                .where(jobs.job_id == job.job_id, sa.or_(jobs.state == QUEUED, held))
                .values(
                    state=RUNNING,
                    owner=owner,
                    lease_until=time.time() + lease_s,
                    attempts=jobs.attempts + 1,
                    started_at=sa.func.coalesce(jobs.started_at, _now()),
                )
            )
            with self._transaction() as db:
                won = db.execute(taken).rowcount == 1
            if won:
                return self._get(job.job_id)
        return None

    def _held(self, job_id: str, owner: str) -> sa.ColumnElement[bool]:
        jobs = self.jobs.c
        return sa.and_(jobs.job_id == job_id, jobs.owner == owner, jobs.state == RUNNING)

    def input(self, job_id: str) -> bytes:
        """The job's submitted records (Parquet bytes)."""
        with self.engine.connect() as db:
            data = db.scalar(sa.select(self.inputs.c.data).where(self.inputs.c.job_id == job_id))
        if data is None:
            raise LooplineError(f"job {job_id} has no stored input in {self}")
        return data

    def pin_version(self, job_id: str, owner: str, version: str) -> bool:
        """Record the version that scores the job (kept across attempts); False if not held."""
        statement = (
            sa.update(self.jobs).where(self._held(job_id, owner)).values(model_version=version)
        )
        with self._transaction() as db:
            return db.execute(statement).rowcount == 1

    def stored_chunks(self, job_id: str) -> set[int]:
        """The chunks of the job whose results are stored."""
        query = sa.select(self.results.c.chunk).where(self.results.c.job_id == job_id)
        with self.engine.connect() as db:
            return set(db.scalars(query))

    def store_chunk(
        self, job_id: str, owner: str, chunk: int, data: bytes, *, rows: int, lease_s: float
    ) -> bool:
        """Store one chunk's result and renew the lease, in one transaction.

        False (nothing stored) when `owner` no longer holds the job.
        """
        jobs = self.jobs.c
        renew = (
            sa.update(self.jobs)
            .where(self._held(job_id, owner))
            .values(rows_done=jobs.rows_done + rows, lease_until=time.time() + lease_s)
        )
        with self._transaction() as db:
            if db.execute(renew).rowcount != 1:
                return False
            db.execute(
                self.results.insert().values(job_id=job_id, chunk=chunk, rows=rows, data=data)
            )
        return True

    def finish(self, job_id: str, owner: str, reason: str | None = None) -> bool:
        """End the job: done, or failed with `reason`; False when `owner` does not hold it."""
        state = DONE if reason is None else FAILED
        statement = (
            sa.update(self.jobs)
            .where(self._held(job_id, owner))
            .values(
                state=state,
                reason=reason and reason[:REASON_CHARS],
                finished_at=_now(),
                owner=None,
                lease_until=None,
            )
        )
        with self._transaction() as db:
            return db.execute(statement).rowcount == 1
