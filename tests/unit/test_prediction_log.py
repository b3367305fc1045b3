"""The prediction log: typed columns from the contract, whole requests or nothing."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from loopline.data.datasets import get_dataset
from loopline.infra.database import arrow_reader
from loopline.infra.prediction_log import (
    LogUnavailableError,
    PredictionLog,
    Selection,
    read_predictions,
)
from tests.conftest import database_away, fresh_database

DATASET = get_dataset("nycflights13")
FIELDS = DATASET.record_fields()  # the contract's record fields and their types


def _row(i: int, request: str) -> dict:
    return {
        "prediction_id": f"{request}-{i}", "request_id": request,
        "logged_at": f"2026-01-01T00:00:{i % 60:02d}+00:00", "model_name": "m",
        "model_version": "1", "probability": 0.25, "label": 0, "carrier": "UA", "year": 2013,
    }  # fmt: skip


def test_rows_round_trip_with_contract_columns(store_url: str) -> None:
    log = PredictionLog(store_url, FIELDS)
    log.append([_row(i, "r1") for i in range(3)])
    frame = read_predictions(store_url)
    assert len(frame) == 3
    assert {"probability", "carrier", "temp", "shadow_probability"} <= set(frame.columns)
    assert frame["carrier"].tolist() == ["UA"] * 3
    assert frame["year"].tolist() == [2013] * 3
    assert read_predictions(store_url, since="2026-01-01T00:00:02").shape[0] == 1


def test_labels_join_their_predictions_and_a_newer_label_replaces_an_older(
    store_url: str,
) -> None:
    keys = list(DATASET.key_columns)
    log = PredictionLog(store_url, FIELDS, keys, "late")
    record = pd.DataFrame({
        "year": 2013, "month": 1, "day": [1, 2, 3], "carrier": "UA", "flight": [10, 11, 12],
        "origin": "EWR", "sched_dep_time": 900,
    })  # fmt: skip
    log.append([
        _row(i, "r") | row | {"event_day": f"2013-01-0{row['day']}"}
        for i, row in enumerate(record.to_dict("records"))
    ])  # fmt: skip
    assert log.latest_labeled_day() is None
    labels = record[keys].assign(late=[1, 0, 1]).iloc[:2]
    assert log.deliver_labels(labels, "t1") == 2
    log.deliver_labels(labels.assign(late=[0, 1]).iloc[:1], "t2")  # a correction
    batch = log.read(Selection(first_day="2013-01-01", last_day="2013-01-03"))
    assert batch["late"].tolist()[:2] == [0, 0]
    assert pd.isna(batch["late"].iloc[2])  # not arrived yet
    assert log.latest_labeled_day().isoformat() == "2013-01-02"
    assert log.latest_event_day().isoformat() == "2013-01-03"


def test_a_batch_reads_in_bounded_chunks_the_same_rows_and_labels_as_whole(
    store_url: str,
) -> None:
    """Chunks of at most 1,000 rows; a field NULL in its first 1,500 rows still typed."""
    keys = list(DATASET.key_columns)
    log = PredictionLog(store_url, FIELDS, keys, "late")
    rows = [
        _row(i, "r") | {"year": 2013, "month": 1, "day": 1 + i % 3, "flight": i, "origin": "EWR",
                        "sched_dep_time": 900, "event_day": f"2013-01-0{1 + i % 3}",
                        "wind_gust": None if i < 1500 else 20.5 + i % 7}
        for i in range(3000)
    ]  # fmt: skip
    log.append(rows)
    labels = pd.DataFrame(rows[:2000])[keys].assign(late=[i % 2 for i in range(2000)])
    log.deliver_labels(labels, "t")
    selection = Selection(first_day="2013-01-02", last_day="2013-01-03")
    chunks = list(log.read_chunks(selection, ["flight", "carrier", "wind_gust"], 1000))
    assert all(len(chunk) <= 1000 for chunk in chunks)
    read = pd.concat(chunks, ignore_index=True).sort_values("flight", ignore_index=True)
    whole = log.read(selection).sort_values("flight", ignore_index=True)
    assert log.span(selection).rows == len(read) == len(whole) == 2000
    assert list(read.columns) == ["flight", "carrier", "wind_gust", "late"]
    assert read["flight"].tolist() == whole["flight"].tolist()
    assert read["carrier"].tolist() == ["UA"] * 2000
    pd.testing.assert_series_equal(read["wind_gust"], whole["wind_gust"].astype(float))
    pd.testing.assert_series_equal(read["late"], whole["late"].astype(float))
    assert read["late"].isna().sum() == 2000 - sum(1 for i in range(2000) if i % 3)
    assert list(log.read_chunks(Selection(first_day="2014-01-01"), ["flight"], 1000)) == []
    # three windows read at once (threads on SQLite) come back the same, in the same order
    at_once = log.read_chunks(selection, ["flight", "carrier", "wind_gust"], 1000, readers=3)
    for one, three in itertools.zip_longest(chunks, at_once):
        pd.testing.assert_frame_equal(one, three)


def test_readers_opening_a_log_at_once_wait_for_each_other(tmp_path: Path) -> None:
    """Two readers' first queries on a WAL file nobody has open take turns, never fail.

    The first to read rebuilds the file's index and holds it meanwhile: without a busy
    timeout the other got "database is locked" in about 1 of 14 tries (once in CI).
    """
    url = sa.engine.make_url(f"sqlite:///{tmp_path / 'log.sqlite'}")
    for _ in range(100):
        for leftover in tmp_path.glob("log.sqlite*"):
            leftover.unlink()
        with sqlite3.connect(url.database) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE t (x)")
            db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])
        db.close()  # the last connection gone: the next reader rebuilds the index
        assert _first_reads_at_once(url) == [999, 999]


def _first_reads_at_once(url: URL) -> list[int | str]:
    """Two readers' first queries, run together: rows found, or the error's text."""
    results: list[int | str] = []

    def read(connection: Any) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT x FROM t WHERE rowid < 1000")
                results.append(cursor.fetch_arrow_table().num_rows)
        except Exception as error:
            results.append(str(error))

    with arrow_reader(url) as one, arrow_reader(url) as two:
        threads = [threading.Thread(target=read, args=(c,)) for c in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return results


def test_a_failed_request_writes_none_of_its_rows(store_url: str) -> None:
    log = PredictionLog(store_url, FIELDS)
    log.append([_row(0, "ok")])
    duplicate = [_row(1, "bad"), _row(0, "ok")]  # second row violates the primary key
    with pytest.raises(sa.exc.IntegrityError):
        log.append(duplicate)
    assert log.count() == 1
    assert not log.outage.down  # a bad request is its own failure, not the store's


def test_writers_queue_on_the_shared_lock_file_and_go_on_when_it_is_released(
    tmp_path: Path,
) -> None:
    """Another process holding `<log>.lock` makes a commit wait, not fail or skip the lock."""
    log = PredictionLog(tmp_path / "p.sqlite", FIELDS)
    committed = threading.Event()
    with Path(f"{log.url.database}.lock").open("a") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        threading.Thread(target=lambda: (log.append([_row(0, "r")]), committed.set())).start()
        assert not committed.wait(0.5)  # waiting for the lock
        assert log.count() == 0
    assert committed.wait(5)  # released (file closed): the commit goes through at once
    assert log.count() == 1


WRITER = """
import sys
from loopline.data.datasets import get_dataset
from loopline.infra.prediction_log import PredictionLog
log = PredictionLog(sys.argv[1], get_dataset("nycflights13").record_fields(),
                    durability=sys.argv[2])
print("ready", flush=True)
for request in range(100000):
    log.append([{"prediction_id": f"{request}-{i}", "request_id": str(request),
                 "logged_at": "t", "model_name": "m", "model_version": "1",
                 "probability": 0.5, "label": 1} for i in range(50)])
    print(request, flush=True)  # stored: a service would answer this request now
"""


@pytest.mark.parametrize("durability", ["process", "power"])
def test_a_killed_writer_leaves_only_whole_requests_and_every_stored_one(
    store_url: str, durability: str
) -> None:
    """SIGKILL in the middle of writing: the store opens, every request has all 50 rows,
    and every request whose append had returned is there (either durability setting)."""
    path = store_url
    command = [sys.executable, "-c", WRITER, path, durability]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    reported = [line for line in writer.stdout.read().splitlines() if line.isdigit()]
    frame = read_predictions(path)
    assert len(frame) > 0
    assert (frame.groupby("request_id").size() == 50).all()
    assert reported, "the writer stored nothing before it was killed"
    assert set(map(str, range(int(reported[-1]) + 1))) <= set(frame["request_id"])
    PredictionLog(path, FIELDS).append([_row(0, "after-crash")])  # still writable


def test_process_durability_skips_the_fsync_power_keeps_it(tmp_path: Path) -> None:
    """SQLite's `synchronous`: NORMAL (1) for "process", FULL (2) for "power"."""
    for durability, level in (("process", 1), ("power", 2)):
        log = PredictionLog(tmp_path / f"{durability}.sqlite", FIELDS, durability=durability)
        with log.engine.connect() as db:
            assert db.exec_driver_sql("PRAGMA synchronous").scalar() == level
        log.close()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prediction-log-writer"]


def test_the_event_loop_commits_a_turns_requests_in_one_transaction_without_a_thread(
    tmp_path: Path,
) -> None:
    """A SQLite log without fsync (durability "process"): 20 requests stored from one turn
    of the event loop share one commit, made in the loop; no writer thread starts."""
    log = PredictionLog(tmp_path / "p.sqlite", FIELDS, durability="process")
    assert log.commits_in_loop
    commits: list[object] = []
    sa.event.listen(log.engine, "commit", commits.append)
    threads_before = len(_writer_threads())

    async def requests() -> None:
        await asyncio.gather(*(log.store([_row(i, f"r{k}") for i in range(3)]) for k in range(20)))
        await log.store([_row(0, "next turn")])

    asyncio.run(requests())
    assert len(commits) == 2  # the 20 together, then the one after them
    assert len(_writer_threads()) == threads_before
    frame = read_predictions(tmp_path / "p.sqlite")
    assert len(frame) == 61
    assert (frame.groupby("request_id").size().drop("next turn") == 3).all()
    log.close()


def test_a_log_that_fsyncs_stores_through_its_writer_thread(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", FIELDS, durability="power")
    assert not log.commits_in_loop  # an fsync would stall the event loop
    threads_before = len(_writer_threads())
    asyncio.run(log.store([_row(0, "r")]))
    assert len(_writer_threads()) == threads_before + 1
    assert read_predictions(tmp_path / "p.sqlite")["request_id"].tolist() == ["r"]
    log.close()


def test_a_failed_commit_in_the_event_loop_refuses_its_requests_and_a_probe_ends_the_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store fails every statement for a while (SQLite's "disk I/O error", raised by
    the driver before each statement): the requests of the failed group get a one-line
    LogUnavailableError; with no request after them, the loop's own probe notices the
    store is back and ends the outage (one line each way); the next request is stored."""
    log = PredictionLog(tmp_path / "p.sqlite", FIELDS, durability="process")
    failing = True

    def fail(*_args: object) -> None:
        if failing:
            raise sqlite3.OperationalError("disk I/O error")

    sa.event.listen(log.engine, "before_cursor_execute", fail)

    async def outage() -> None:
        nonlocal failing
        refused = await asyncio.gather(
            *(log.store([_row(0, f"during-{k}")]) for k in range(3)), return_exceptions=True
        )
        assert all(isinstance(error, LogUnavailableError) for error in refused), refused
        assert all(str(error).startswith("prediction log unavailable: ") for error in refused)
        assert all("\n" not in str(error) for error in refused)
        assert log.outage.down
        failing = False
        deadline = time.monotonic() + 10
        while log.outage.down:
            assert time.monotonic() < deadline, "the outage never ended"
            await asyncio.sleep(0.1)
        await log.store([_row(0, "after")])

    with caplog.at_level(logging.WARNING, logger="loopline.infra.prediction_log"):
        asyncio.run(outage())
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in logged] == ["ERROR", "WARNING"], logged
    assert "(3 requests refused meanwhile)" in logged[1][1]
    assert read_predictions(tmp_path / "p.sqlite")["request_id"].tolist() == ["after"]
    log.close()


def test_a_log_from_an_older_contract_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE predictions ("prediction_id" TEXT PRIMARY KEY, "request_id" TEXT)')
        db.execute("INSERT INTO predictions VALUES ('old', 'r0')")
    log = PredictionLog(path, FIELDS)
    log.append([_row(1, "r1")])
    frame = read_predictions(path)
    assert pd.isna(frame.set_index("prediction_id").loc["old", "probability"])
    assert "event_day" in frame.columns


def test_an_outage_refuses_requests_in_one_line_logs_once_and_recovers(
    postgres: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """The log's PostgreSQL database disappears (connections cut, database renamed) under
    requests: each is refused with a one-line LogUnavailableError, the log says so once
    (no traceback), and when the database is back the writer's probe ends the outage by
    itself, with one line saying how long it lasted."""
    url = fresh_database(postgres)
    name = url.database
    log = PredictionLog(url, FIELDS)
    log.append([_row(0, "before")])
    with caplog.at_level(logging.WARNING, logger="loopline.infra.prediction_log"):
        with database_away(postgres, name):
            for request in range(5):
                with pytest.raises(
                    LogUnavailableError, match=r"^prediction log unavailable: "
                ) as no:
                    log.append([_row(request, f"during-{request}")])
                assert "\n" not in str(no.value)
            assert log.outage.down
        deadline = time.monotonic() + 20
        while log.outage.down:
            assert time.monotonic() < deadline, "the outage never ended"
            time.sleep(0.2)
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(logged) == 2, logged
    assert [level for level, _ in logged] == ["ERROR", "WARNING"]
    assert " is down: OperationalError: " in logged[0][1]
    assert "recovered after" in logged[1][1]
    assert "(5 requests refused meanwhile)" in logged[1][1]
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    log.append([_row(1, "after")])
    assert set(read_predictions(url)["request_id"]) == {"before", "after"}
    log.close()
