"""The monitor's memory: every batch's numbers and every decision (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from loopline.infra.database import create_engine, database_url, upsert
from loopline.monitoring.decision import BatchOutcome, Decision

METADATA = sa.MetaData()
BATCHES = sa.Table(
    "batches", METADATA,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("last_day", sa.Text, nullable=False),  # where it ends: a day, or an arrival time
    sa.Column("outcome", sa.Text, nullable=False),  # BatchOutcome as JSON
)  # fmt: skip
DECISIONS = sa.Table(
    "decisions", METADATA,
    sa.Column("decision_id", sa.Text, primary_key=True),
    sa.Column("batch_id", sa.Text, nullable=False),
    sa.Column("last_day", sa.Text, nullable=False),  # where its batch ends (as in batches)
    sa.Column("decided_at", sa.Text, nullable=False),
    sa.Column("trigger", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # flagged batches and numbers as JSON
)  # fmt: skip


class MonitorStore:
    """Batches (keyed by id, re-measuring replaces) and decisions (append-only).

    `location` is `monitor.state`: a SQLite file (relative to `root`), or a database URL
    (`loopline.infra.database`).
    """

    def __init__(self, location: URL | str | Path, root: Path = Path()) -> None:
        self.url = database_url(location, root)
        self.engine = create_engine(self.url)
        with self.engine.begin() as db:
            METADATA.create_all(db)

    def save_batch(self, outcome: BatchOutcome) -> None:
        """Store (or replace) a batch's outcome."""
        row = {"batch_id": outcome.batch_id, "last_day": outcome.ends_at,
               "outcome": json.dumps(outcome.as_dict(), default=str)}  # fmt: skip
        with self.engine.begin() as db:
            upsert(db, BATCHES, [row])

    def history(self, limit: int) -> list[BatchOutcome]:
        """The last `limit` batches by data time, oldest first."""
        query = sa.select(BATCHES.c.outcome).order_by(BATCHES.c.last_day.desc()).limit(limit)
        with self.engine.connect() as db:
            rows = db.scalars(query).all()
        return [_outcome(json.loads(row)) for row in reversed(rows)]

    def save_decision(self, decision: Decision, ends_at: str) -> str:
        """Append a decision on the batch ending at `ends_at` (`BatchOutcome.ends_at`); its id."""
        decision_id = uuid.uuid4().hex
        detail = json.dumps({"flagged": decision.flagged, "numbers": decision.numbers}, default=str)
        with self.engine.begin() as db:
            db.execute(
                DECISIONS.insert(),
                {"decision_id": decision_id, "batch_id": decision.batch_id,
                 "last_day": ends_at,
                 "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "trigger": int(decision.trigger), "reason": decision.reason, "detail": detail},
            )  # fmt: skip
        return decision_id

    def last_trigger_day(self) -> dt.date | None:
        """Data date of the latest batch that triggered a retrain (batches by event day)."""
        query = sa.select(sa.func.max(DECISIONS.c.last_day)).where(DECISIONS.c.trigger == 1)
        with self.engine.connect() as db:
            day = db.scalar(query)
        return dt.date.fromisoformat(day) if day else None

    def batches_since_trigger(self) -> int | None:
        """Batches stored after the latest one that triggered a retrain (None: none did)."""
        triggered = sa.select(sa.func.max(DECISIONS.c.last_day)).where(DECISIONS.c.trigger == 1)
        with self.engine.connect() as db:
            last = db.scalar(triggered)
            if last is None:
                return None
            later = sa.select(sa.func.count()).where(BATCHES.c.last_day > last)
            return int(db.scalar(later))

    def cursor(self) -> str | None:
        """The newest arrival time measured so far: the next batch by arrival starts after it."""
        query = sa.select(BATCHES.c.outcome).order_by(BATCHES.c.last_day.desc()).limit(1)
        with self.engine.connect() as db:
            newest = db.scalar(query)
        return json.loads(newest).get("last_arrival") if newest else None

    def decisions(self) -> list[dict]:
        """Every decision, oldest first."""
        query = sa.select(DECISIONS).order_by(DECISIONS.c.decided_at, DECISIONS.c.last_day)
        with self.engine.connect() as db:
            rows = db.execute(query).mappings().all()
        return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def _outcome(data: dict) -> BatchOutcome:
    data = dict(data)
    data.pop("quality_drop", None)
    for key in ("first_day", "last_day"):
        data[key] = dt.date.fromisoformat(data[key])
    return BatchOutcome(**data)
