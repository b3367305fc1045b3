"""The promotion ledger: every registry decision, append-only, in a file or a table.

A JSON-lines file by default (`registry.ledger` is a path); in team mode a table of the
shared database (a database URL), so every machine appends to one ledger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from loopline.infra.database import create_engine, database_url


class Ledger:
    """Append-only JSON lines in a file; each append is fsync'd under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: dict[str, Any]) -> None:
        """Add one entry at the end (whole lines: writers on this machine queue on a flock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self.path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[dict[str, Any]]:
        """All entries, oldest first (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
        return entries


LEDGER_TABLE = sa.Table(
    "ledger", sa.MetaData(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # append order
    sa.Column("entry", sa.Text, nullable=False),  # the decision as JSON
)  # fmt: skip


class TableLedger:
    """The ledger as rows of a database table: one ledger for every machine (team mode)."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url)
        LEDGER_TABLE.metadata.create_all(self.engine)

    def append(self, entry: dict[str, Any]) -> None:
        """Add one entry, committed before this returns."""
        with self.engine.begin() as db:
            db.execute(LEDGER_TABLE.insert(), {"entry": json.dumps(entry, sort_keys=True,
                                                                   default=str)})  # fmt: skip

    def entries(self) -> list[dict[str, Any]]:
        """All entries, oldest first."""
        with self.engine.connect() as db:
            rows = db.scalars(sa.select(LEDGER_TABLE.c.entry).order_by(LEDGER_TABLE.c.seq))
            return [json.loads(row) for row in rows]


def open_ledger(location: str | Path) -> Ledger | TableLedger:
    """`registry.ledger`: a JSON-lines file, or a database URL."""
    if "://" in str(location):
        return TableLedger(database_url(location))
    return Ledger(Path(location))
