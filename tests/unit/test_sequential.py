"""The always-valid comparison: honest under peeking, and its verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sequential import ALPHA, CHALLENGERS, trial
from loopline.promotion.sequential import compare, running

TRIALS = 100  # bench/sequential.py runs 1,000


def _share(rule: str, challenger: str) -> float:
    outcomes = [trial(seed, CHALLENGERS[challenger]) for seed in range(TRIALS)]
    return sum(outcome[rule] is not None for outcome in outcomes) / TRIALS


def test_looking_after_every_batch_promotes_an_equal_or_worse_challenger_rarely() -> None:
    """100 seeded trials of 20,000 labels, a look every 250: the sequence promotes an
    equal challenger in at most alpha of them and a worse one never, while a fixed 95%
    interval looked at as often promotes the equal one in far more."""
    assert _share("sequence promoted", "equal") <= ALPHA
    assert _share("sequence promoted", "worse") <= ALPHA
    assert _share("peeking promoted", "equal") > 2 * ALPHA


def test_a_better_challenger_is_promoted_in_most_trials() -> None:
    assert _share("sequence promoted", "better") >= 0.8


def test_the_interval_holds_the_running_mean_and_narrows() -> None:
    d = np.random.default_rng(7).normal(0.0, 1.0, 4000)
    seq = running(d, 0.05, planned=1000)
    assert np.isinf(seq.high[0])  # one observation: no spread yet
    assert (seq.low[1:] < seq.mean[1:]).all()
    assert (seq.mean[1:] < seq.high[1:]).all()
    width = seq.high - seq.low
    assert width[3999] < width[999] < width[99]


def test_verdicts_wait_for_the_minimum_number_of_pairs() -> None:
    rng = np.random.default_rng(3)
    better = rng.normal(-0.2, 0.5, 2000)
    assert compare(better[:50], 0.05, planned=500, min_pairs=100).verdict == "undecided"
    decided = compare(better, 0.05, planned=500, min_pairs=100)
    assert decided.verdict == "better"
    assert decided.high < 0
    assert decided.pairs == 2000
    assert compare(-better, 0.05, planned=500, min_pairs=100).verdict == "worse"
    assert compare(np.array([]), 0.05, planned=500, min_pairs=100).verdict == "undecided"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha must be between 0 and 1"),
        ({"planned": 0}, "planned must be a positive number"),
        ({"min_pairs": 1}, "min_pairs must be at least 2"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict, message: str) -> None:
    settings = {"alpha": 0.05, "planned": 500, "min_pairs": 100} | kwargs
    with pytest.raises(ValueError, match=message):
        compare(np.zeros(10), **settings)


def test_a_difference_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="finite numbers"):
        running(np.array([0.1, np.nan]), 0.05, planned=500)
