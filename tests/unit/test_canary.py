"""A canary's arms: drawn by a salted hash of the record's key, stable, and of the right size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.errors import LooplineError
from loopline.data import columns as cols
from loopline.registry.canary import Canary, buckets

KEY = ("carrier", "flight", "day")
FIELDS = {"carrier": "string", "flight": "int", "day": "int"}


def _records(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    carriers = np.array(["UA", "AA", "B6", "DL", "EV"])
    return [
        {"carrier": str(rng.choice(carriers)), "flight": int(flight), "day": int(day)}
        for flight, day in zip(
            rng.integers(1, 9999, count), rng.integers(1, 31, count), strict=True
        )
    ]


def _canary(version: str = "7", share: float = 0.25) -> Canary:
    return Canary(version, "3", 0, share, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00")


def test_a_records_arm_depends_on_its_key_alone() -> None:
    records = _records(500)
    columns = cols.from_records(records, FIELDS)
    canary = _canary()
    first = canary.answers(columns, KEY)
    # the same records again, one at a time, in reverse, with other fields beside the key
    wider = {**FIELDS, "dep_delay": "float"}
    one_by_one = [
        canary.answers(cols.from_records([{**r, "dep_delay": 3.0}], wider), KEY)[0]
        for r in reversed(records)
    ]
    assert first.tolist() == one_by_one[::-1]
    # read from a frame (NumPy int64 columns): the same buckets as from JSON records
    frame = cols.from_frame(pd.DataFrame(records), FIELDS)
    np.testing.assert_array_equal(buckets(frame, KEY, "7"), buckets(columns, KEY, "7"))


def test_the_canary_answers_its_share_and_keeps_its_records_as_the_share_grows() -> None:
    columns = cols.from_records(_records(20_000), FIELDS)
    small, large = _canary(share=0.05), _canary(share=0.5)
    at_5, at_50 = small.answers(columns, KEY), large.answers(columns, KEY)
    assert abs(at_5.mean() - 0.05) < 0.01
    assert abs(at_50.mean() - 0.5) < 0.02
    assert not (at_5 & ~at_50).any()  # every record in the 5% arm stays in at 50%
    assert not _canary(share=0.0).answers(columns, KEY).any()
    assert _canary(share=1.0).answers(columns, KEY).all()


def test_each_canary_draws_its_own_population() -> None:
    columns = cols.from_records(_records(20_000), FIELDS)
    one = _canary("7", 0.5).answers(columns, KEY)
    other = _canary("8", 0.5).answers(columns, KEY)
    both = (one & other).mean()
    assert abs(both - 0.25) < 0.02  # independent draws: 0.5 x 0.5, not 0.5


def test_the_registry_tag_round_trips_and_a_damaged_one_is_named() -> None:
    canary = _canary()
    assert Canary.from_json(canary.to_json()) == canary
    moved = canary.at_step(1, 0.5, "2026-01-02T00:00:00+00:00")
    assert (moved.step, moved.share, moved.started_at) == (1, 0.5, canary.started_at)
    with pytest.raises(LooplineError, match="canary tag is not readable"):
        Canary.from_json('{"version": "7"}')
    with pytest.raises(LooplineError, match="not in"):
        Canary.from_json(canary.to_json().replace('"share": 0.25', '"share": 1.5'))


def test_a_dataset_without_key_fields_cannot_split_traffic() -> None:
    with pytest.raises(LooplineError, match="key fields"):
        buckets({"x": np.array([1, 2])}, (), "7")
