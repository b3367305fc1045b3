"""Judging a canary on a real prediction log (SQLite and PostgreSQL): guardrails trip at
once, the test waits for matured days, and each verdict leads to the action the rule says."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from loopline.cli.registry import canary_lines
from loopline.core.params import CanaryParams, load_params
from loopline.data.datasets import get_dataset
from loopline.infra.prediction_log import PredictionLog
from loopline.promotion.canary import look, matured_pairs, record_loss
from loopline.registry.canary import Canary
from tests.conftest import ROOT

DATASET = get_dataset("nycflights13")
KEY = DATASET.key_columns
START = "2026-03-01T00:00:00+00:00"
NOW = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


@pytest.fixture
def params() -> CanaryParams:
    """The project's canary settings, with a smaller test for small logs."""
    found = load_params(ROOT / "params.yaml").canary
    return found.model_copy(
        update={"min_pairs": 300, "planned_pairs": 2000, "min_step_records": 50}
    )


@pytest.fixture
def log(store_url: str) -> PredictionLog:
    """A real prediction log, on SQLite and on PostgreSQL."""
    return PredictionLog(store_url, DATASET.record_fields(), KEY, "late")


def _canary(step: int = 0, share: float = 0.05) -> Canary:
    return Canary("8", "7", step, share, START, START)


def _traffic(
    log: PredictionLog, canary: Canary, *, days: int = 4, per_day: int = 1000,
    canary_noise: float = 0.8, seed: int = 0, failing: float = 0.0, canary_ms: float = 0.3,
    label_days: int | None = None, canary_bias: float = 0.0,
) -> None:  # fmt: skip
    """Flights scored by both models (the canary answering its share), then labeled.

    The truth is Bernoulli(sigmoid(logit)); the champion sees the logit with noise 0.8,
    the canary with `canary_noise` (smaller: better), shifted by `canary_bias`. `failing`:
    the share of requests where the canary failed; only the first `label_days` get labels.
    """
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for d in range(days):
        flights = pd.DataFrame({
            "year": 2013, "month": 7, "day": d + 1, "carrier": "UA",
            "flight": np.arange(per_day) + 1, "origin": "EWR", "sched_dep_time": 900,
        })  # fmt: skip
        by_canary = canary.answers({k: flights[k].to_numpy() for k in KEY}, KEY)
        logit = rng.normal(-1.2, 1.2, per_day)
        late = rng.random(per_day) < 1 / (1 + np.exp(-logit))
        champion = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.8, per_day))))
        challenger = 1 / (1 + np.exp(-(logit + canary_bias + rng.normal(0, canary_noise, per_day))))
        for i, flight in enumerate(flights.to_dict("records")):
            failed = rng.random() < failing
            request = f"d{d}-r{i}"
            answered = by_canary[i] and not failed
            other = canary.champion
            mine, theirs = (
                (challenger[i], champion[i]) if answered else (champion[i], challenger[i])
            )
            rows.append({
                **flight, "prediction_id": f"{request}-0", "request_id": request,
                "logged_at": f"2026-03-01T{d:02d}:{i // 60 % 60:02d}:{i % 60:02d}.5+00:00",
                "event_day": f"2013-07-{d + 1:02d}", "model_name": "m",
                "model_version": canary.version if answered else canary.champion,
                "probability": mine, "label": int(mine > 0.5),
                "arm": "canary" if answered else "champion",
                "shadow_version": None if failed else (other if answered else canary.version),
                "shadow_probability": None if failed else theirs,
                "shadow_label": None if failed else int(theirs > 0.5),
                "champion_ms": 0.3, "challenger_ms": canary_ms,
                "challenger_error": "RuntimeError: boom" if failed else None,
            })  # fmt: skip
        if label_days is None or d < label_days:
            labels.append(flights.assign(late=late.astype(int)))
    log.append(rows)
    if labels:
        log.deliver_labels(pd.concat(labels), "2026-03-02T00:00:00+00:00")


def test_a_better_canary_steps_through_its_shares_and_is_promoted_after_the_last(
    log: PredictionLog, params: CanaryParams
) -> None:
    _traffic(log, _canary(), canary_noise=0.3)
    first = look(log, _canary(), params, KEY, NOW)
    assert first.action == "step"
    assert first.share == params.steps[1]
    assert first.evidence["verdict"] == "better"
    assert first.evidence["pairs"] == 4000
    auc = first.evidence["roc_auc"]
    assert auc["canary"] > auc["champion"]


def test_after_the_last_step_a_better_canary_is_promoted(
    log: PredictionLog, params: CanaryParams
) -> None:
    last = _canary(step=len(params.steps) - 1, share=params.steps[-1])
    _traffic(log, last, canary_noise=0.3)
    assert look(log, last, params, KEY, NOW).action == "promote"


def test_an_equal_canary_holds_then_leaves_when_its_time_is_up(
    log: PredictionLog, params: CanaryParams
) -> None:
    last = _canary(step=len(params.steps) - 1, share=params.steps[-1])
    _traffic(log, last, canary_noise=0.8, seed=3)
    judged = look(log, last, params, KEY, NOW)
    assert judged.action == "hold", judged.reason
    assert judged.evidence["interval"][0] < 0 < judged.evidence["interval"][1]
    late = NOW + dt.timedelta(days=params.max_days)
    assert look(log, last, params, KEY, late).action == "rollback"
    few = params.model_copy(update={"max_pairs": 4000})
    assert "no decision after 4000 pairs" in look(log, last, few, KEY, NOW).reason


def test_a_worse_canary_is_rolled_back(log: PredictionLog, params: CanaryParams) -> None:
    _traffic(log, _canary(), canary_noise=1.6)
    judged = look(log, _canary(), params, KEY, NOW)
    assert judged.action == "rollback"
    assert judged.reason.startswith("worse than the champion")


def test_only_matured_days_count_and_in_order(log: PredictionLog) -> None:
    """Day 3 of 4 has no labels yet: days 1-2 count; day 4's labels wait behind day 3."""
    canary = _canary()
    _traffic(log, canary, label_days=2)
    rows = log.read_answered(START, ["7", "8"])
    tail = rows[rows["event_day"] == "2013-07-04"]
    log.deliver_labels(tail[list(KEY)].assign(late=0), "2026-03-02T01:00:00+00:00")
    matured = matured_pairs(log.read_answered(START, ["7", "8"]), canary, KEY, "late")
    assert (matured.matured_until, matured.waiting_from) == ("2013-07-02", "2013-07-03")
    assert len(matured.pairs) == 2000
    assert matured.pairs["cohort"].is_monotonic_increasing


@pytest.mark.parametrize(
    ("traffic", "tripped"),
    [
        ({"failing": 0.05}, "errors: "),
        ({"canary_ms": 400.0}, "errors: "),  # every scoring a timeout
        ({"canary_ms": 20.0}, "latency: p99 scoring 20.0 ms"),
        ({"canary_bias": 2.5}, "positive rate: "),
    ],
)
def test_a_guardrail_rolls_a_canary_back_without_labels(
    log: PredictionLog, params: CanaryParams, traffic: dict, tripped: str
) -> None:
    _traffic(log, _canary(), days=1, label_days=0, **traffic)
    judged = look(log, _canary(), params, KEY, NOW)
    assert judged.action == "rollback"
    assert judged.reason.startswith("guardrail: ")
    assert tripped in judged.reason
    assert judged.evidence["pairs"] == 0


def test_a_share_routed_unlike_the_plan_trips_the_sample_ratio_check(
    log: PredictionLog, params: CanaryParams
) -> None:
    """Traffic split at 5%, judged as if the step were at 25% (a worker that missed a step)."""
    _traffic(log, _canary(share=0.05), days=2, label_days=0)
    judged = look(log, _canary(share=0.25), params, KEY, NOW)
    assert judged.action == "rollback"
    assert "sample ratio: " in judged.reason
    clean = look(log, _canary(share=0.05), params, KEY, NOW)
    assert clean.action == "step", clean.reason
    assert clean.evidence["guardrails"]["trips"] == []


def test_the_losses_are_the_textbook_ones() -> None:
    p, y = np.array([0.9, 0.2]), np.array([1.0, 0.0])
    np.testing.assert_allclose(record_loss(p, y, "log_loss"), [-np.log(0.9), -np.log(0.8)])
    np.testing.assert_allclose(record_loss(p, y, "brier"), [0.01, 0.04])


def test_registry_status_tells_a_looks_decision_test_and_guardrails(
    log: PredictionLog, params: CanaryParams
) -> None:
    _traffic(log, _canary(), canary_noise=0.3)
    judged = look(log, _canary(), params, KEY, NOW)
    entry = {"time": "t", "action": "canary-step", "reason": judged.reason, **judged.evidence}
    decision, test, guarded = canary_lines(entry)
    assert decision.startswith("last look t: canary-step: step 1: 25% of traffic")
    assert "4000 labeled pairs (matured until 2013-07-04)" in test
    assert ": better;" in test
    assert guarded.startswith("guardrails on 4000 requests")
    assert canary_lines(None) == []
