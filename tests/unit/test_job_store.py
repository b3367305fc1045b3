"""The job store: idempotent submits, one holder per job, each chunk stored once."""

from __future__ import annotations

import threading
import time

import pytest

from loopline.infra.job_store import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    IdempotencyConflictError,
    JobStore,
)


def test_a_retried_submit_with_its_key_returns_the_first_job(store_url: str) -> None:
    store = JobStore(store_url)
    first, created = store.submit(b"records", rows=3, chunk_rows=2, key="order-17")
    again, created_again = store.submit(b"records", rows=3, chunk_rows=2, key="order-17")
    assert created
    assert not created_again
    assert again.job_id == first.job_id
    assert again.state == QUEUED
    other, _ = store.submit(b"records", rows=3, chunk_rows=2)  # no key: a new job each time
    assert other.job_id != first.job_id
    with pytest.raises(IdempotencyConflictError, match=r"order-17.*different body"):
        store.submit(b"other records", rows=3, chunk_rows=2, key="order-17")
    assert len(store.unfinished()) == 2


def test_of_runners_claiming_at_once_one_gets_each_job(store_url: str) -> None:
    store = JobStore(store_url)
    for n in range(3):
        store.submit(f"job {n}".encode(), rows=1, chunk_rows=1)
    claimed: list[str] = []

    def runner(name: str) -> None:
        while (job := JobStore(store_url).claim(name, lease_s=60)) is not None:
            claimed.append(job.job_id)

    threads = [threading.Thread(target=runner, args=(f"r{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(job.job_id for job in store.unfinished())
    assert len(claimed) == 3
    assert {job.state for job in store.unfinished()} == {RUNNING}


def test_a_lapsed_lease_hands_the_job_over_and_the_old_holder_stores_nothing(
    store_url: str,
) -> None:
    store = JobStore(store_url)
    job, _ = store.submit(b"input", rows=4, chunk_rows=2)
    assert store.claim("dead", lease_s=0.2).job_id == job.job_id
    assert store.store_chunk(job.job_id, "dead", 0, b"chunk 0", rows=2, lease_s=0.2)
    assert store.claim("next", lease_s=60) is None  # the lease still holds
    time.sleep(0.3)
    resumed = store.claim("next", lease_s=60)
    assert resumed.job_id == job.job_id
    assert resumed.attempts == 2
    assert resumed.rows_done == 2
    assert store.stored_chunks(job.job_id) == {0}  # it resumes at chunk 1
    assert not store.store_chunk(job.job_id, "dead", 1, b"late", rows=2, lease_s=60)
    assert store.store_chunk(job.job_id, "next", 1, b"chunk 1", rows=2, lease_s=60)
    assert not store.finish(job.job_id, "dead")
    assert store.finish(job.job_id, "next")
    done = store.get(job.job_id)
    assert (done.state, done.rows_done, done.finished_at is not None) == (DONE, 4, True)
    assert list(store.result_chunks(job.job_id)) == [b"chunk 0", b"chunk 1"]
    assert "owner" not in done.public()
    assert "lease_until" not in done.public()
    assert store.claim("next", lease_s=60) is None


def test_a_failed_job_keeps_its_reason_and_is_not_claimed_again(store_url: str) -> None:
    store = JobStore(store_url)
    job, _ = store.submit(b"input", rows=1, chunk_rows=1)
    store.claim("r", lease_s=60)
    assert store.finish(job.job_id, "r", reason="required columns with null values: ['month']")
    failed = store.get(job.job_id)
    assert failed.state == FAILED
    assert "month" in failed.reason
    assert store.claim("r", lease_s=0) is None
    assert store.get("no-such-job") is None
