"""The monitor's state: the same behaviour on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from loopline.infra.monitor_state import MonitorState
from loopline.monitoring.profile import Profile, ProfiledColumns, merge_all, profile_frame
from loopline.monitoring.records import BatchOutcome, Decision


def _batch(week: int, drift: float = 0.0, version: str = "1") -> BatchOutcome:
    first = dt.date(2013, 7, 1) + dt.timedelta(weeks=week)
    return BatchOutcome(
        batch_id=f"w{week}", first_day=first, last_day=first + dt.timedelta(days=6), rows=700,
        labeled_rows=700, model_version=version, drift_share=drift, drifted_columns=[],
        reported_drifted_columns=[], mean_probability=0.3, quality=0.7, baseline=0.72,
        metrics={"roc_auc": 0.7}, incidents=[],
    )  # fmt: skip


def test_batches_are_kept_by_data_time_and_a_remeasured_batch_replaces_its_row(
    store_url: str,
) -> None:
    store = MonitorState(store_url)
    for week in (2, 0, 1):  # measured out of order
        store.save_batch(_batch(week))
    store.save_batch(_batch(1, drift=0.5))  # the same batch measured again
    stored = MonitorState(store_url).history(limit=2)  # a second process sees the same
    history = [BatchOutcome.from_dict(b) for b in stored]
    assert [b.batch_id for b in history] == ["w1", "w2"]
    assert history[0].drift_share == 0.5
    assert history[0] == _batch(1, drift=0.5)


def test_decisions_append_and_the_latest_trigger_day_is_found(store_url: str) -> None:
    store = MonitorState(store_url)
    assert store.last_trigger_end() is None
    first = store.save_decision(Decision(True, "drift", "w0", ["w0"], {"k": 1}), "2013-07-07")
    store.save_decision(Decision(False, "cooldown", "w1", [], {}), "2013-07-14")
    assert dt.date.fromisoformat(store.last_trigger_end()) == dt.date(2013, 7, 7)
    decisions = store.decisions()
    assert [d["reason"] for d in decisions] == ["drift", "cooldown"]
    assert decisions[0]["decision_id"] == first
    assert decisions[0]["detail"] == {"flagged": ["w0"], "numbers": {"k": 1}}


def test_batches_by_arrival_keep_a_cursor_and_count_batches_since_a_trigger(
    store_url: str,
) -> None:
    store = MonitorState(store_url)
    assert store.newest_end() is None
    assert store.batches_since_trigger() is None
    ends = [f"2026-11-28T10:0{minute}:00.5+00:00" for minute in range(4)]
    arrivals = [
        BatchOutcome(**{**_batch(i).__dict__, "batch_id": f"a{i}", "last_arrival": end})
        for i, end in enumerate(ends)
    ]
    store.save_batch(arrivals[0])
    store.save_decision(Decision(True, "drift", "a0", ["a0"], {}), arrivals[0].ends_at)
    assert store.batches_since_trigger() == 0
    for outcome in arrivals[1:]:
        store.save_batch(outcome)
    assert store.batches_since_trigger() == 3
    assert store.newest_end() == ends[-1]  # the next batch starts after the newest arrival
    assert BatchOutcome.from_dict(store.history(limit=1)[0]) == arrivals[-1]


def _profile(rows: int, version: str) -> Profile:
    frame = pd.DataFrame({
        "carrier": ["UA", "AA"] * (rows // 2), "distance": np.arange(rows, dtype=float),
        "probability": 0.25, "label": 0, "late": [0, 1] * (rows // 2), "model_version": version,
    })  # fmt: skip
    return profile_frame(frame, ProfiledColumns(("distance",), ("carrier",), "late", day=None))


def test_profiles_are_stored_with_their_batch_and_a_period_is_their_merge(
    store_url: str,
) -> None:
    store = MonitorState(store_url)
    for week, version in ((0, "1"), (1, "1"), (2, "2")):
        store.save_batch(
            _batch(week, version=version), _profile(100 * (week + 1), version).as_dict()
        )
    store.save_batch(_batch(1), _profile(40, "1").as_dict())  # measured again: replaced
    weeks = MonitorState(store_url).profiles()
    assert [p["rows"] for p in weeks] == [100, 40, 300]
    end_of_first = _batch(0).ends_at
    later = merge_all(Profile.from_dict(p) for p in store.profiles(after=end_of_first))
    assert later.rows == 340
    assert later.fields["carrier"].counts == {"AA": 170, "UA": 170}
    assert [p["rows"] for p in store.profiles(version="2")] == [300]
    assert store.profiles(until="2013-06-30") == []
