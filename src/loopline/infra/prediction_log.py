"""The prediction log: every prediction the service makes, durably (SQLite or PostgreSQL).

One row per scored record: identifiers, time, model name and version, probability, label,
its arm and the score of the model beside it when a canary or shadow runs (with each
model's scoring time, `loopline.serving.champion`), and every record field as its own
column (name -> contract dtype, as `Dataset.record_fields()` gives them). The store is
`serve.prediction_log`: a SQLite file by default, a PostgreSQL URL in team mode
(`loopline.infra.database`).

Writes use group commit: the requests waiting to be stored are written in one
transaction, and each learns its rows are stored only after that commit. So many requests
share one commit, no request is answered before its rows are stored, and after a crash a
request's rows are either all there or not at all, with nothing written before lost. Two
places commit a group. `submit` (threads; and `store` where a commit waits on a disk or
a network) queues a request's rows for one writer thread and returns a future. `store`
from the service's event loop, on a SQLite log that needs no fsync, commits in the loop
itself: every request of one turn of the loop joins the transaction run at the start of
the next turn, with no thread hand-off (in the serving bench the writer thread's
wake-ups and GIL contention cost more CPU than the commit itself; bench/README.md).

Stored means what `durability` says (`serve.log_durability`): "process", a commit
survives any process being killed; "power", it is also on the disk, surviving power loss
(SQLite: `loopline.infra.database`; PostgreSQL commits are the server's and durable
either way). `commit_delay_ms` (like PostgreSQL's `commit_delay`) holds a commit back a
little so that more requests join it: fewer commits under load, a little more latency each.

Several processes (the service's API workers, label delivery) write one log; on SQLite
they take turns through `cross_process_lock`.

Labels (the true outcome) arrive later, into their own table keyed by the example's key
fields; `read` and `read_chunks` join them onto a `Selection` of predictions (a range of
event days, or of arrival times for a dataset without time).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL

from loopline.core.errors import LooplineError
from loopline.infra.database import (
    add_missing_columns,
    arrow_reader,
    create_engine,
    cross_process_lock,
    database_url,
    insert_new,
    is_sqlite,
    upsert,
)
from loopline.infra.outage import Outage

log = logging.getLogger(__name__)

# What an unreachable or failing store raises (connection lost or refused, disk full):
# an outage. Anything else (an integrity error) is the request's own failure.
OUTAGE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError)
PROBE_S = 1.0  # during an outage, how often the writer checks whether the store is back
# One group commit: each request's row values and what to tell it (a thread's or the loop's).
Group = list[tuple[list[tuple], Future | asyncio.Future]]
SQL_TYPES = {"int": sa.BigInteger, "float": sa.Float, "string": sa.Text, "datetime": sa.Text}


_READ_TYPES = {sa.BigInteger: sa.Float, sa.Integer: sa.Float, sa.Float: sa.Float}


@dataclass(frozen=True)
class Selection:
    """Which logged predictions a batch holds.

    Examples of a range of event days (ISO dates, inclusive), or what was logged in a
    range of arrival times (a dataset without time: after `after`, exclusive, None from
    the first; up to `until`, inclusive), so consecutive batches that pass the previous
    `until` as `after` see every prediction exactly once.
    """

    first_day: str | None = None
    last_day: str | None = None
    after: str | None = None
    until: str | None = None

    def where(self, predictions: sa.Table) -> list[sa.ColumnElement[bool]]:
        """The conditions on the predictions table."""
        day, logged_at = predictions.c.event_day, predictions.c.logged_at
        bounds = [
            (self.first_day, day.__ge__), (self.last_day, day.__le__),
            (self.after, logged_at.__gt__), (self.until, logged_at.__le__),
        ]  # fmt: skip
        return [compare(bound) for bound, compare in bounds if bound is not None]


@dataclass(frozen=True)
class Span:
    """How many predictions a selection holds and when its first and last were logged."""

    rows: int
    first_logged: str | None
    last_logged: str | None


class LogUnavailableError(LooplineError):
    """The store refused a commit (a database outage): the request was not logged."""


def _meta_columns() -> list[sa.Column]:
    return [
        sa.Column("prediction_id", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("logged_at", sa.Text, nullable=False, index=True),
        sa.Column("event_day", sa.Text, index=True),  # the example's own date (ISO)
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("arm", sa.Text),  # champion, or canary: which model's arm answered
        sa.Column("shadow_version", sa.Text),  # the other model scored, never answered
        sa.Column("shadow_probability", sa.Float),
        sa.Column("shadow_label", sa.Integer),
        sa.Column("champion_ms", sa.Float),  # each model's scoring time for the request
        sa.Column("challenger_ms", sa.Float),
        sa.Column("challenger_error", sa.Text),  # why the challenger gave no score
    ]


class PredictionLog:
    """Append-only store of predictions and their later labels (one database)."""

    def __init__(
        self,
        location: URL | str | Path,
        record_fields: Mapping[str, str],
        key_columns: Sequence[str] = (),
        target_column: str = "label_true",
        *,
        commit_delay_ms: float = 0.0,
        durability: Literal["process", "power"] = "power",
    ) -> None:
        self.url = database_url(location)
        self.commit_delay_s = commit_delay_ms / 1000
        self.key_columns = list(key_columns)
        self.target_column = target_column
        metadata = sa.MetaData()
        fields = {name: SQL_TYPES[dtype] for name, dtype in record_fields.items()}
        self.predictions = sa.Table(
            "predictions", metadata, *_meta_columns(),
            *(sa.Column(name, kind) for name, kind in fields.items()),
        )  # fmt: skip
        self.labels = sa.Table(
            "labels", metadata,
            *(sa.Column(k, fields[k], primary_key=True) for k in self.key_columns),
            sa.Column(target_column, sa.Integer, nullable=False),
            sa.Column("delivered_at", sa.Text, nullable=False),
        )  # fmt: skip
        self._lock = threading.Lock()
        self._queue: Group = []  # for the writer thread
        self._in_loop: Group = []  # for the event loop's next commit
        self._probing = False  # the event loop's outage probe is scheduled
        self._queued = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self.engine = create_engine(self.url, power_safe=durability == "power")
        # A commit that is only a write to SQLite's WAL (no fsync) is cheap enough to run in
        # the event loop; one that waits for a disk or a server goes to the writer thread.
        self.commits_in_loop = self.engine.dialect.name == "sqlite" and durability == "process"
        self.outage = Outage(f"prediction log {self}", log)
        self._columns = self.predictions.columns.keys()
        self._insert = _insert_statement(self.engine.dialect, self.predictions)
        tables = [self.predictions, self.labels] if self.key_columns else [self.predictions]
        with self._transaction() as db:
            metadata.create_all(db, tables=tables)
            add_missing_columns(db, self.predictions)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One write transaction, under this process's lock and the cross-process one."""
        with self._lock, cross_process_lock(self.url), self.engine.begin() as db:
            yield db

    def append(self, rows: Sequence[dict]) -> None:
        """Write `rows` (dicts with the meta and record columns) durably; wait for it."""
        self.submit(rows).result()

    def append_new(self, rows: Sequence[dict]) -> None:
        """Write the rows whose prediction id is not stored yet, now, in one transaction.

        For work that may run twice (a prediction job's chunk scored again after its
        runner died): the rows stored the first time stay, none is logged twice.
        """
        with self._transaction() as db:
            insert_new(db, self.predictions, [{c: row.get(c) for c in self._columns}
                                              for row in rows])  # fmt: skip

    def submit(self, rows: Sequence[dict]) -> Future:
        """Queue `rows` for the next group commit; the future resolves once they are stored.

        Await it from async code with `asyncio.wrap_future`. A failed commit sets a
        LogUnavailableError (its reason in one line) on the future of every request in
        that group; the outage is logged once, when it starts and when it ends (`outage`).
        """
        done: Future = Future()
        values = self._values(rows)
        with self._queued:
            if self._closing:
                raise LooplineError(f"prediction log {self} is closed")
            self._queue.append((values, done))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_groups, name="prediction-log-writer", daemon=True
                )
                self._writer.start()
            self._queued.notify()
        return done

    async def store(self, rows: Sequence[dict]) -> None:
        """From the event loop: return once `rows` are stored (group commit).

        Raises LogUnavailableError, like `submit`'s future, when the store is down. With
        `commits_in_loop`, the first request of a turn schedules the commit (after
        `commit_delay_ms`, or at the next turn) and every request queued by then joins it;
        otherwise the rows go to the writer thread.
        """
        if not self.commits_in_loop:
            await asyncio.wrap_future(self.submit(rows))
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._in_loop.append((self._values(rows), done))
        if len(self._in_loop) == 1:  # the group's first request: its commit is not scheduled
            loop.call_later(self.commit_delay_s, self._commit_in_loop, loop)
        await done

    def _commit_in_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._in_loop = self._in_loop, []
        self._commit(group)
        if self.outage.down and not self._probing:  # no request may come to end it: probe
            self._probing = True
            loop.call_later(PROBE_S, self._probe_in_loop, loop)

    def _probe_in_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """During an outage, every `PROBE_S` until the store is back (or a commit ends it)."""
        if self.outage.down:
            self._probe()
        self._probing = self.outage.down
        if self._probing:
            loop.call_later(PROBE_S, self._probe_in_loop, loop)

    def _values(self, rows: Sequence[dict]) -> list[tuple]:
        """Each row as the insert's parameters, in the table's column order."""
        return [tuple(map(row.get, self._columns)) for row in rows]

    def _next_group(self) -> Group:
        """What is queued, once there is something (or the log closes).

        During an outage it returns an empty group every `PROBE_S`: the writer then
        probes the store, so the outage can end while no request arrives.
        """
        with self._queued:
            while not self._queue and not self._closing:
                if not self.outage.down:
                    self._queued.wait()
                elif not self._queued.wait(PROBE_S):
                    return []
            if self.commit_delay_s and not self._closing:
                self._queued.wait(self.commit_delay_s)  # let more requests join
            group, self._queue = self._queue, []
            return group

    def _write_groups(self) -> None:
        """The writer thread: commit whatever is queued, as one transaction, until closed."""
        while True:
            group = self._next_group()
            if group:
                self._commit(group)
            elif self._closing:
                return  # closing, nothing left
            else:
                self._probe()

    def _commit(self, group: Group) -> None:
        """Write a group in one transaction, then tell each of its requests how it went."""
        try:
            with self._transaction() as db:
                db.exec_driver_sql(self._insert, [v for rows, _ in group for v in rows])
        except OUTAGE_ERRORS as error:  # the store is down: each request learns why
            unavailable = LogUnavailableError(
                f"prediction log unavailable: {self.outage.failed(error, len(group))}"
            )
            _tell(group, unavailable)
        except Exception as error:  # a bad row (a duplicate id): a bug, not an outage
            log.exception("prediction log commit of %d requests failed", len(group))
            _tell(group, error)
        else:
            self.outage.succeeded()
            _tell(group, None)

    def _probe(self) -> None:
        """During an outage, check with a cheap query whether the store is back."""
        try:
            with self.engine.connect() as db:
                db.exec_driver_sql("SELECT 1")
        except Exception as error:  # still down: counted, not logged again
            self.outage.failed(error, requests=0)
        else:
            self.outage.succeeded()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._queued:
            self._closing = True
            self._queued.notify()
        if self._writer is not None:
            self._writer.join(timeout=30)
        self.engine.dispose()

    def __str__(self) -> str:
        return self.url.render_as_string()  # the password, if any, shown as ***

    def deliver_labels(self, labels: pd.DataFrame, delivered_at: str) -> int:
        """Store true outcomes (key columns + target) in one transaction; newer ones win."""
        columns = [*self.key_columns, self.target_column]
        rows = [
            {**dict(zip(columns, row, strict=True)), "delivered_at": delivered_at}
            for row in labels[columns].itertuples(index=False, name=None)
        ]
        with self._transaction() as db:
            upsert(db, self.labels, rows)
        return len(rows)

    def _labeled(self, join: str = "left") -> sa.Select:
        """Predictions joined to their labels by the key columns (outer or inner join)."""
        p, lab = self.predictions, self.labels
        on = sa.and_(*(p.c[k] == lab.c[k] for k in self.key_columns))
        joined = p.join(lab, on, isouter=join == "left")
        return sa.select(p, lab.c[self.target_column]).select_from(joined)

    def read(self, selection: Selection) -> pd.DataFrame:
        """The selected predictions with their labels, whole, oldest first.

        The target column is NaN where the label has not arrived yet. For a batch of any
        size, `read_chunks` reads the columns it needs in bounded chunks.
        """
        query = self._labeled().where(*selection.where(self.predictions))
        with self.engine.connect() as db:
            return pd.read_sql_query(query.order_by(self.predictions.c.logged_at), db)

    def span(self, selection: Selection) -> Span:
        """How many predictions are selected, and when the first and last were logged."""
        p = self.predictions
        query = sa.select(sa.func.count(), sa.func.min(p.c.logged_at), sa.func.max(p.c.logged_at))
        with self.engine.connect() as db:
            rows, first, last = db.execute(query.where(*selection.where(p))).one()
        return Span(int(rows), first, last)

    def read_chunks(
        self, selection: Selection, columns: Sequence[str], chunk_rows: int, readers: int = 1
    ) -> Iterator[pd.DataFrame]:
        """The selected predictions' `columns` (and the target), at most `chunk_rows` at a time.

        Memory stays bounded whatever the batch's size. On SQLite the chunks are ranges of
        the table's rowid, read as Arrow columns by the ADBC driver (no Python object per
        value), by `readers` threads at once, each with its own connection: the driver
        runs the query outside the GIL, so the next windows are read while the caller
        works on this one, and the chunks still come in order. On PostgreSQL they stream
        from a server-side cursor. Each chunk's columns are typed by the table: numbers as
        float64 (NaN for NULL), text as objects.
        """
        p, target = self.predictions, self.target_column
        picked = [sa.cast(p.c[name], _READ_TYPES.get(type(p.c[name].type), sa.Text)).label(name)
                  for name in columns]  # fmt: skip
        label = self._labeled().selected_columns[target] if self.key_columns else sa.null()
        query = self._labeled().with_only_columns(*picked, sa.cast(label, sa.Float).label(target))
        query = query.where(*selection.where(p))
        if is_sqlite(self.url):
            # the selection's first and last rowid bound the windows: an index on its column
            # answers that, without the labels' join
            rowid = sa.literal_column(f"{p.name}.rowid")
            bounds = sa.select(sa.func.min(rowid), sa.func.max(rowid)).select_from(p)
            bounds = bounds.where(*selection.where(p))
            yield from _sqlite_chunks(
                self.engine, self.url, query, bounds, chunk_rows, readers=readers
            )
            return
        with self.engine.connect().execution_options(stream_results=True) as db:
            yield from (c for c in pd.read_sql_query(query, db, chunksize=chunk_rows) if len(c))

    def read_answered(self, since: str, versions: Sequence[str]) -> pd.DataFrame:
        """Predictions logged at or after `since` (ISO) answered by one of `versions`.

        With their labels (NaN where not arrived yet), oldest first: what a canary's
        judgement reads (`loopline.promotion.canary`).
        """
        p = self.predictions
        query = (
            self._labeled()
            .where(p.c.logged_at >= since, p.c.model_version.in_(list(versions)))
            .order_by(p.c.logged_at, p.c.prediction_id)
        )
        with self.engine.connect() as db:
            return pd.read_sql_query(query, db)

    def latest_event_day(self) -> dt.date:
        """The newest example date in the log (raises if the log is empty)."""
        with self.engine.connect() as db:
            day = db.scalar(sa.select(sa.func.max(self.predictions.c.event_day)))
        if day is None:
            raise LooplineError(f"{self} holds no predictions yet")
        return dt.date.fromisoformat(day)

    def latest_labeled_day(self) -> dt.date | None:
        """The newest example date whose label has arrived, or None."""
        labeled = self._labeled(join="inner").subquery()
        with self.engine.connect() as db:
            day = db.scalar(sa.select(sa.func.max(labeled.c.event_day)))
        return dt.date.fromisoformat(day) if day else None

    def latest_logged_at(self) -> str | None:
        """When the newest prediction was logged (ISO), or None for an empty log."""
        with self.engine.connect() as db:
            return db.scalar(sa.select(sa.func.max(self.predictions.c.logged_at)))

    def logged_span(self) -> tuple[str, str] | None:
        """When the oldest and the newest predictions were logged (ISO), or None if empty."""
        logged_at = self.predictions.c.logged_at
        with self.engine.connect() as db:
            oldest, newest = db.execute(
                sa.select(sa.func.min(logged_at), sa.func.max(logged_at))
            ).one()
        return None if newest is None else (oldest, newest)

    def labeled_arrivals(self, until: str) -> pd.DataFrame:
        """Key columns and first arrival time (`logged_at`) of every labeled example.

        One row per key, for the predictions logged up to `until` whose label has arrived,
        oldest arrival first (the records of one request share a time: then by key, so the
        order is always the same): what a retrain of a dataset without time learns from.
        """
        labeled = self._labeled(join="inner").where(self.predictions.c.logged_at <= until)
        rows = labeled.subquery()
        query = (
            sa.select(*(rows.c[k] for k in self.key_columns),
                      sa.func.min(rows.c.logged_at).label("logged_at"))
            .group_by(*(rows.c[k] for k in self.key_columns))
            .order_by("logged_at", *(rows.c[k] for k in self.key_columns))
        )  # fmt: skip
        with self.engine.connect() as db:
            return pd.read_sql_query(query, db)

    def latest_labeled_arrival(self) -> str | None:
        """When the newest prediction whose label has arrived was logged (ISO), or None."""
        labeled = self._labeled(join="inner").subquery()
        with self.engine.connect() as db:
            return db.scalar(sa.select(sa.func.max(labeled.c.logged_at)))

    def count(self, selection: Selection | None = None) -> int:
        """Number of logged predictions (of `selection`: an index alone answers it)."""
        p = self.predictions
        query = sa.select(sa.func.count()).select_from(p)
        if selection is not None:
            query = query.where(*selection.where(p))
        with self.engine.connect() as db:
            return int(db.scalar(query))


def _tell(group: Group, error: Exception | None) -> None:
    """Resolve each request's future: stored (None) or why not; a cancelled one is skipped."""
    for _, done in group:
        if done.cancelled():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _sqlite_chunks(
    engine: sa.Engine,
    url: URL,
    query: sa.Select,
    bounds: sa.Select,
    chunk_rows: int,
    *,
    readers: int,
) -> Iterator[pd.DataFrame]:
    """`query` on a SQLite log in windows of `chunk_rows` rowids, each read as Arrow columns.

    `bounds` selects the first and the last rowid the windows cover. `readers` windows are
    read at once, each on its own connection; they are handed back in rowid order.
    """
    rowid = sa.literal_column("predictions.rowid")
    with engine.connect() as db:
        low, high = db.execute(bounds).one()
    if low is None:
        return
    idle: queue.SimpleQueue = queue.SimpleQueue()  # connections no thread is using now

    def window(start: int) -> pd.DataFrame:
        window = query.where(rowid >= start, rowid < start + chunk_rows)
        literal = {"literal_binds": True}  # ADBC takes the statement as text
        connection = idle.get()
        try:
            with connection.cursor() as cursor:
                # the driver types a column by the rows of its first Arrow batch: one batch
                # per window, so a column NULL in its first rows (wind gusts) is typed by
                # those after
                cursor.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(chunk_rows)}
                )
                cursor.execute(str(window.compile(dialect=engine.dialect, compile_kwargs=literal)))
                return cursor.fetch_arrow_table().to_pandas()
        finally:
            idle.put(connection)

    with contextlib.ExitStack() as stack:
        for _ in range(readers):
            idle.put(stack.enter_context(arrow_reader(url)))
        pool = stack.enter_context(ThreadPoolExecutor(readers, thread_name_prefix="log-reader"))
        starts = iter(range(low, high + 1, chunk_rows))
        pending = collections.deque(
            pool.submit(window, s) for s in itertools.islice(starts, readers)
        )
        while pending:
            chunk = pending.popleft().result()
            # the next window starts before this one is handed over: `readers` always reading
            pending.extend(pool.submit(window, s) for s in itertools.islice(starts, 1))
            if len(chunk):
                yield chunk


def _insert_statement(dialect: sa.Dialect, table: sa.Table) -> str:
    """The driver's own INSERT of one row (positional parameters), run with executemany.

    The writer hands the driver plain tuples: SQLAlchemy's per-row parameter processing
    cost more than the insert itself in the serving profile (bench/README.md).
    """
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}[dialect.paramstyle]
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(column.name) for column in table.columns)
    marks = ", ".join([mark] * len(table.columns))
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"  # noqa: S608 - names from our schema


def read_predictions(location: URL | str | Path, since: str | None = None) -> pd.DataFrame:
    """Logged predictions (optionally those logged at or after `since`, ISO time)."""
    url = database_url(location)
    query = "SELECT * FROM predictions"
    if since is not None:
        query += " WHERE logged_at >= :since"
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return pd.read_sql_query(sa.text(f"{query} ORDER BY logged_at"), db,
                                     params={"since": since})  # fmt: skip
    finally:
        engine.dispose()
