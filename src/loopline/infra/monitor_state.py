"""The monitor's memory: every batch's numbers and profile, every decision (SQLite or PostgreSQL).

Rows are JSON; `loopline.monitoring.records` and `loopline.monitoring.profile` give them
their types (stored from any record with the fields below; read back as plain mappings).
A batch is keyed by its id (measuring it again replaces its rows) and placed by where it
ends in data time (`ends_at`: its last day, or its newest arrival, as ISO text that
sorts in time order); decisions are appended. A batch's profile is stored with its
outcome, in the same transaction, so a period's profile is a merge of stored ones.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL

from loopline.infra.database import create_engine, database_url, upsert


class StoredBatch(Protocol):
    """What the state keeps of a batch (`loopline.monitoring.records.BatchOutcome`)."""

    batch_id: str
    model_version: str

    @property
    def ends_at(self) -> str: ...  # noqa: D102

    def as_dict(self) -> dict[str, Any]: ...  # noqa: D102


class StoredDecision(Protocol):
    """What the state keeps of a decision (`loopline.monitoring.records.Decision`)."""

    trigger: bool
    reason: str
    batch_id: str

    def detail(self) -> dict[str, Any]: ...  # noqa: D102


METADATA = sa.MetaData()
BATCHES = sa.Table(
    "batches", METADATA,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("last_day", sa.Text, nullable=False),  # where it ends: a day, or an arrival time
    sa.Column("outcome", sa.Text, nullable=False),  # the batch's outcome as JSON
)  # fmt: skip
PROFILES = sa.Table(
    "profiles", METADATA,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("last_day", sa.Text, nullable=False, index=True),  # as in batches
    sa.Column("model_version", sa.Text, nullable=False),  # the version that served most of it
    sa.Column("profile", sa.Text, nullable=False),  # the batch's profile as JSON
)  # fmt: skip
DECISIONS = sa.Table(
    "decisions", METADATA,
    sa.Column("decision_id", sa.Text, primary_key=True),
    sa.Column("batch_id", sa.Text, nullable=False),
    sa.Column("last_day", sa.Text, nullable=False),  # where its batch ends (as in batches)
    sa.Column("decided_at", sa.Text, nullable=False),
    sa.Column("trigger", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # the decision's fields as JSON
)  # fmt: skip


class MonitorState:
    """Batches (keyed by id, re-measuring replaces) and decisions (append-only).

    `location` is `monitor.state`: a SQLite file, or a database URL (`loopline.infra.database`).
    """

    def __init__(self, location: URL | str | Path) -> None:
        self.url = database_url(location)
        self.engine = create_engine(self.url)
        with self.engine.begin() as db:
            METADATA.create_all(db)

    def save_batch(self, outcome: StoredBatch, profile: dict[str, Any] | None = None) -> None:
        """Store (or replace) a batch's outcome, and its profile when given, together."""
        row = {"batch_id": outcome.batch_id, "last_day": outcome.ends_at,
               "outcome": json.dumps(outcome.as_dict(), default=str)}  # fmt: skip
        with self.engine.begin() as db:
            upsert(db, BATCHES, [row])
            if profile is not None:
                upsert(db, PROFILES, [{
                    "batch_id": outcome.batch_id, "last_day": outcome.ends_at,
                    "model_version": outcome.model_version, "profile": json.dumps(profile),
                }])  # fmt: skip

    def profiles(
        self, after: str | None = None, until: str | None = None, version: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored batch profiles, oldest first: those ending after `after` up to `until`.

        (ISO, `after` exclusive, `until` inclusive; None: no bound), of batches served
        mostly by `version` when given.
        """
        query = sa.select(PROFILES.c.profile).order_by(PROFILES.c.last_day)
        if after is not None:
            query = query.where(PROFILES.c.last_day > after)
        if until is not None:
            query = query.where(PROFILES.c.last_day <= until)
        if version is not None:
            query = query.where(PROFILES.c.model_version == version)
        with self.engine.connect() as db:
            return [json.loads(row) for row in db.scalars(query)]

    def history(self, limit: int) -> list[dict[str, Any]]:
        """The outcomes of the last `limit` batches by data time, oldest first."""
        query = sa.select(BATCHES.c.outcome).order_by(BATCHES.c.last_day.desc()).limit(limit)
        with self.engine.connect() as db:
            rows = db.scalars(query).all()
        return [json.loads(row) for row in reversed(rows)]

    def newest_end(self) -> str | None:
        """Where the newest batch ends (`ends_at`), or None before the first."""
        with self.engine.connect() as db:
            return db.scalar(sa.select(sa.func.max(BATCHES.c.last_day)))

    def save_decision(self, decision: StoredDecision, ends_at: str) -> str:
        """Append a decision on the batch ending at `ends_at`; its id."""
        decision_id = uuid.uuid4().hex
        with self.engine.begin() as db:
            db.execute(
                DECISIONS.insert(),
                {"decision_id": decision_id, "batch_id": decision.batch_id, "last_day": ends_at,
                 "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "trigger": int(decision.trigger), "reason": decision.reason,
                 "detail": json.dumps(decision.detail(), default=str)},
            )  # fmt: skip
        return decision_id

    def last_trigger_end(self) -> str | None:
        """Where the latest batch that triggered a retrain ends (`ends_at`), or None."""
        query = sa.select(sa.func.max(DECISIONS.c.last_day)).where(DECISIONS.c.trigger == 1)
        with self.engine.connect() as db:
            return db.scalar(query)

    def batches_since_trigger(self) -> int | None:
        """Batches stored after the latest one that triggered a retrain (None: none did)."""
        last = self.last_trigger_end()
        if last is None:
            return None
        later = sa.select(sa.func.count()).where(BATCHES.c.last_day > last)
        with self.engine.connect() as db:
            return int(db.scalar(later))

    def _decisions(self, query: sa.Select) -> list[dict[str, Any]]:
        """The decisions `query` selects, each with its `detail` parsed."""
        with self.engine.connect() as db:
            rows = db.execute(query).mappings().all()
        return [{**row, "detail": json.loads(row["detail"])} for row in rows]

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision, oldest first, its `detail` parsed."""
        return self._decisions(
            sa.select(DECISIONS).order_by(DECISIONS.c.decided_at, DECISIONS.c.last_day)
        )

    def latest_decision(self) -> dict[str, Any] | None:
        """The newest decision (as `decisions()` gives them), or None before the first."""
        newest = sa.select(DECISIONS).order_by(
            DECISIONS.c.decided_at.desc(), DECISIONS.c.last_day.desc()
        )
        return next(iter(self._decisions(newest.limit(1))), None)

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        """One decision by its id (None if there is no such decision)."""
        by_id = sa.select(DECISIONS).where(DECISIONS.c.decision_id == decision_id)
        return next(iter(self._decisions(by_id)), None)
