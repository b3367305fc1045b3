"""The promotion rule, check by check, on synthetic predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.params import load_params
from loopline.data.datasets import get_dataset
from loopline.data.time_axis import ByDays
from loopline.promotion.rule import Evidence, decide, no_fresh_window
from tests.conftest import ROOT

RNG = np.random.default_rng(3)
N = 3000
LABELS = (RNG.random(N) < 0.3).astype(int)
SIGNAL = LABELS - 0.3


def _model(strength: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 0.2, N)
    return np.clip(0.3 + strength * SIGNAL + noise, 0.001, 0.999)


STRONG, WEAK = _model(0.5, 1), _model(0.15, 2)
SLICES = pd.DataFrame({"carrier": np.where(np.arange(N) % 2 == 0, "AA", "UA")})
ALL_PARAMS = load_params(ROOT / "params.yaml")
PARAMS = ALL_PARAMS.registry.model_copy(
    update={
        "floors": {"roc_auc": 0.6},
        "margin": 0.002,
        "bootstrap_samples": 100,
        "slice_min_rows": 300,
    }
)


def _evidence(challenger: np.ndarray, champion: np.ndarray | None, **overrides: float) -> Evidence:
    values = {"latency_ms_per_1000": 20.0, "size_mb": 1.0} | overrides
    return Evidence(LABELS, challenger, champion, SLICES, **values)


def _check(result, name: str) -> bool:
    return next(c for c in result.checks if c.name == name).passed


def test_first_model_passes_when_it_clears_the_floors() -> None:
    result = decide(_evidence(STRONG, None), PARAMS, seed=0)
    assert result.passed
    assert result.champion is None


def test_a_better_challenger_is_promoted_with_its_interval_reported() -> None:
    result = decide(_evidence(STRONG, WEAK), PARAMS, seed=0)
    assert result.passed
    assert result.difference["low"] > 0
    assert "interval" in next(c.detail for c in result.checks if c.name == "beats champion")


def test_a_worse_challenger_is_rejected() -> None:
    result = decide(_evidence(WEAK, STRONG), PARAMS, seed=0)
    assert not result.passed
    assert not _check(result, "beats champion")


def test_an_equal_challenger_does_not_clear_the_margin() -> None:
    result = decide(_evidence(STRONG, STRONG), PARAMS, seed=0)
    assert not _check(result, "beats champion")


def test_a_floor_failure_blocks_even_the_first_model() -> None:
    result = decide(_evidence(np.clip(RNG.random(N), 0.01, 0.99), None), PARAMS, seed=0)
    assert not result.passed
    assert not _check(result, "floors")


def test_a_regressing_slice_blocks_an_overall_better_challenger() -> None:
    """Better on average, but much worse for one carrier: rejected."""
    uneven = STRONG.copy()
    ua = SLICES["carrier"].to_numpy() == "UA"
    uneven[ua] = np.clip(0.3 + 0.02 * SIGNAL[ua] + RNG.normal(0, 0.2, ua.sum()), 0.001, 0.999)
    champion = np.where(ua, STRONG, WEAK)
    params = PARAMS.model_copy(update={"margin": -1.0})  # isolate the slice check
    result = decide(_evidence(uneven, champion), params, seed=0)
    assert not _check(result, "slices")
    assert result.slices[0]["slice"] == "carrier=UA"


@pytest.mark.parametrize(
    ("overrides", "check"),
    [({"latency_ms_per_1000": 900.0}, "latency"), ({"size_mb": 500.0}, "size")],
)
def test_budgets_are_enforced(overrides: dict, check: str) -> None:
    result = decide(_evidence(STRONG, WEAK, **overrides), PARAMS, seed=0)
    assert not result.passed
    assert not _check(result, check)


def test_reasons_list_failures_first() -> None:
    result = decide(_evidence(WEAK, STRONG), PARAMS, seed=0)
    assert result.reasons()[0].startswith("FAIL")


def test_the_pr_auc_floor_is_a_lift_over_the_late_rate_not_a_fixed_value() -> None:
    """A rare-positive window lowers every model's PR-AUC: judged against the late rate."""
    rare = (RNG.random(N) < 0.1).astype(int)
    good = np.clip(0.1 + 0.12 * (rare - 0.1) + RNG.normal(0, 0.15, N), 0.001, 0.999)
    evidence = Evidence(rare, good, None, SLICES, latency_ms_per_1000=20.0, size_mb=1.0)
    result = decide(evidence, PARAMS, seed=0)
    assert result.challenger["pr_auc"] < 0.5  # would fail a fixed floor of 0.5
    assert _check(result, "floors")
    noise = np.clip(RNG.random(N), 0.001, 0.999)
    weak = decide(
        Evidence(rare, noise, None, SLICES, 20.0, 1.0),
        PARAMS.model_copy(update={"floors": {}}),
        seed=0,
    )
    assert not _check(weak, "floors")
    assert "pr_auc_lift" in next(c.detail for c in weak.checks if c.name == "floors")


def test_the_gate_window_drops_days_either_model_was_fitted_or_chosen_on() -> None:
    days = pd.Series(pd.date_range("2013-06-01", "2013-06-30", freq="D"))
    test = pd.DataFrame({"scheduled_departure": days})
    axis = ByDays(get_dataset(ALL_PARAMS.dataset.name))
    assert axis.time_column == "scheduled_departure"
    challenger_valid = "2013-05-01..2013-05-31"  # the versions' valid-window tags
    whole, described = axis.gate_window(test, ALL_PARAMS, challenger_valid, None)
    assert len(whole) == 30
    assert described == "2013-06-01..2013-06-30, 30 rows"
    # a champion validated up to June 20 (a later retrain) has seen those days
    cut, described = axis.gate_window(test, ALL_PARAMS, challenger_valid, "2013-06-07..2013-06-20")
    assert described == "2013-06-21..2013-06-30, 10 rows"
    assert cut["scheduled_departure"].min() == pd.Timestamp("2013-06-21")
    none, described = axis.gate_window(test, ALL_PARAMS, challenger_valid, "2013-07-01..2013-07-14")
    assert none.empty
    assert described.startswith("none: both models were fitted or chosen on days up to 2013-07-14")


def test_without_a_fresh_window_nothing_is_promoted() -> None:
    gate = no_fresh_window("none: ...", 1000)
    assert not gate.passed
    assert gate.window == "none: ..."  # the ledger keeps it beside the checks
    assert gate.reasons() == [
        "FAIL window: none: ... (at least 1000 rows with both classes needed)"
    ]
