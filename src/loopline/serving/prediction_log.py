"""The prediction log: every prediction the service makes, durably, in SQLite.

One row per scored record: identifiers, time, model name and version, probability, label,
the shadow (challenger) score when shadow mode is on, and every record field as its own
column (columns generated from the data contract). Rows of one request are written in one
transaction with `synchronous=FULL` in WAL mode: after a crash, a request's rows are
either all there or not at all, and nothing written before is lost. Monitoring reads it
with `read_predictions`. Labels arrive later, into their own table (`labels`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from loopline.contract import DataContract

SQL_TYPES = {"int": "INTEGER", "float": "REAL", "string": "TEXT", "datetime": "TEXT"}
META_COLUMNS = {
    "prediction_id": "TEXT PRIMARY KEY",
    "request_id": "TEXT NOT NULL",
    "logged_at": "TEXT NOT NULL",
    "model_name": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "probability": "REAL NOT NULL",
    "label": "INTEGER NOT NULL",
    "shadow_version": "TEXT",
    "shadow_probability": "REAL",
}


class PredictionLog:
    """Append-only store of predictions (one SQLite file; safe across threads)."""

    def __init__(self, path: Path, contract: DataContract) -> None:
        self.path = path
        self.record_columns = [f.name for f in contract.record_fields()]
        columns = {**META_COLUMNS}
        columns |= {f.name: SQL_TYPES[f.dtype] for f in contract.record_fields()}
        self._columns = list(columns)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            ddl = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
            db.execute(f"CREATE TABLE IF NOT EXISTS predictions ({ddl})")
            db.execute("CREATE INDEX IF NOT EXISTS predictions_logged_at ON predictions(logged_at)")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    def append(self, rows: Sequence[dict]) -> None:
        """Write `rows` (dicts with the meta and record columns) in one transaction."""
        if not rows:
            return
        names = ", ".join(f'"{c}"' for c in self._columns)
        marks = ", ".join("?" for _ in self._columns)
        values = [tuple(row.get(c) for c in self._columns) for row in rows]
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(f"INSERT INTO predictions ({names}) VALUES ({marks})", values)  # noqa: S608 - names come from the contract
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        """Number of logged predictions."""
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


def read_predictions(path: Path, since: str | None = None) -> pd.DataFrame:
    """Logged predictions (optionally those logged at or after `since`, ISO time)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        if since is None:
            return pd.read_sql_query("SELECT * FROM predictions ORDER BY logged_at", db)
        query = "SELECT * FROM predictions WHERE logged_at >= ? ORDER BY logged_at"
        return pd.read_sql_query(query, db, params=(since,))
