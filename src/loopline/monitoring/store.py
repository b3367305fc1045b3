"""The monitor's memory: every batch's numbers and every decision, in SQLite."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from loopline.monitoring.decision import BatchOutcome, Decision


class MonitorStore:
    """Batches (keyed by id, re-measuring replaces) and decisions (append-only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, "
                "last_day TEXT NOT NULL, outcome TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS decisions (decision_id TEXT PRIMARY KEY, "
                "batch_id TEXT NOT NULL, last_day TEXT NOT NULL, decided_at TEXT NOT NULL, "
                "trigger INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL)"
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # one transaction, committed or rolled back
                yield db
        finally:
            db.close()

    def save_batch(self, outcome: BatchOutcome) -> None:
        """Store (or replace) a batch's outcome."""
        payload = json.dumps(outcome.as_dict(), default=str)
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?)",
                (outcome.batch_id, outcome.last_day.isoformat(), payload),
            )

    def history(self, limit: int) -> list[BatchOutcome]:
        """The last `limit` batches by data time, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT outcome FROM batches ORDER BY last_day DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_outcome(json.loads(row[0])) for row in reversed(rows)]

    def save_decision(self, decision: Decision, last_day: dt.date) -> str:
        """Append a decision; returns its id."""
        decision_id = uuid.uuid4().hex
        detail = json.dumps({"flagged": decision.flagged, "numbers": decision.numbers}, default=str)
        with self._connect() as db:
            db.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (decision_id, decision.batch_id, last_day.isoformat(),
                 dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 int(decision.trigger), decision.reason, detail),
            )  # fmt: skip
        return decision_id

    def last_trigger_day(self) -> dt.date | None:
        """Data date of the latest batch that triggered a retrain."""
        with self._connect() as db:
            row = db.execute("SELECT MAX(last_day) FROM decisions WHERE trigger = 1").fetchone()
        return dt.date.fromisoformat(row[0]) if row and row[0] else None

    def decisions(self) -> list[dict]:
        """Every decision, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT decision_id, batch_id, last_day, decided_at, trigger, reason, detail "
                "FROM decisions ORDER BY decided_at, last_day"
            ).fetchall()
        keys = ("decision_id", "batch_id", "last_day", "decided_at", "trigger", "reason", "detail")
        return [dict(zip(keys, row, strict=True)) | {"detail": json.loads(row[6])} for row in rows]


def _outcome(data: dict) -> BatchOutcome:
    data = dict(data)
    data.pop("quality_drop", None)
    for key in ("first_day", "last_day"):
        data[key] = dt.date.fromisoformat(data[key])
    return BatchOutcome(**data)
