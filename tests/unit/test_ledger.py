"""The promotion ledger: a JSON-lines file, or a table (SQLite or PostgreSQL URL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.infra.ledger import Ledger, TableLedger, open_ledger
from tests.conftest import fresh_database


@pytest.fixture(params=["file", "sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "registry/ledger.jsonl")  # the Workspace made it absolute
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    url = fresh_database(request.getfixturevalue("postgres"))
    return url.render_as_string(hide_password=False)


def test_entries_come_back_in_append_order_from_any_opener(
    ledger_location: str, tmp_path: Path
) -> None:
    ledger = open_ledger(ledger_location)
    assert ledger.entries() == []
    for version in ("2", "3", "1"):
        ledger.append({"version": version, "action": "promote", "checks": ["PASS x"]})
    again = open_ledger(ledger_location)  # another process sees the same
    assert [e["version"] for e in again.entries()] == ["2", "3", "1"]
    assert again.entries()[0]["checks"] == ["PASS x"]


def test_a_path_is_a_file_and_a_url_is_a_table(tmp_path: Path) -> None:
    assert isinstance(open_ledger("registry/ledger.jsonl"), Ledger)
    assert isinstance(open_ledger(tmp_path / "ledger.jsonl"), Ledger)
    assert isinstance(open_ledger(f"sqlite:///{tmp_path / 'l.sqlite'}"), TableLedger)
