"""The retrain rule: k of the last n batches, the latest included; cooldown; no duplicates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from loopline.core.params import MonitorParams, load_params
from loopline.data.datasets import get_dataset
from loopline.data.time_axis import EVENT_DAY, Batch, ByDays, Cooldown
from loopline.infra.monitor_state import MonitorState
from loopline.infra.prediction_log import Selection
from loopline.monitoring.records import BatchOutcome, Decision, Incident
from loopline.monitoring.rule import decide
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def rule() -> MonitorParams:
    return load_params(ROOT / "params.yaml").monitor.model_copy(
        update={"k": 2, "n": 3, "cooldown_days": 14, "min_batch_rows": 100,
                "drift_share_limit": 0.15, "quality_drop_limit": 0.03}
    )  # fmt: skip


def batch(
    week: int, drift: float = 0.0, quality: float | None = 0.72, rows: int = 5000
) -> BatchOutcome:
    first = dt.date(2013, 7, 1) + dt.timedelta(weeks=week)
    return BatchOutcome(
        batch_id=f"w{week}", first_day=first, last_day=first + dt.timedelta(days=6), rows=rows,
        labeled_rows=rows, model_version="1", drift_share=drift,
        drifted_columns=["dest"] if drift else [], reported_drifted_columns=[],
        mean_probability=0.3, quality=quality, baseline=0.726,
    )  # fmt: skip


def cooldown_in_days(
    state_file: Path, latest: BatchOutcome, last_trigger_day: dt.date, required: int
) -> Cooldown:
    """The cooldown by days of data after a retrain asked on the batch ending `last_trigger_day`."""
    state = MonitorState(state_file)
    state.save_decision(Decision(True, "drift", "trigger", []), last_trigger_day.isoformat())
    axis = ByDays(get_dataset(load_params(ROOT / "params.yaml").dataset.name))
    current = Batch(Selection(), 0, latest.batch_id, latest.first_day, latest.last_day, EVENT_DAY)
    return axis.cooldown(state, current, required)


def test_a_one_off_blip_does_not_retrain(rule: MonitorParams) -> None:
    history = [batch(0), batch(1), batch(2, quality=0.60)]
    decision = decide(history, rule, None, retrain_running=False)
    assert not decision.trigger
    assert "only 1 of the last 3" in decision.reason


def test_two_of_three_flagged_including_the_latest_retrains(rule: MonitorParams) -> None:
    history = [batch(0, quality=0.65), batch(1), batch(2, drift=0.33)]
    decision = decide(history, rule, None, retrain_running=False)
    assert decision.trigger
    assert decision.flagged == ["w0", "w2"]
    assert "traffic drift in dest" in decision.reason


def test_the_latest_batch_must_itself_be_flagged(rule: MonitorParams) -> None:
    history = [batch(0, quality=0.65), batch(1, quality=0.66), batch(2)]
    assert decide(history, rule, None, retrain_running=False).reason == "latest batch within limits"


def test_no_duplicate_trigger_while_a_retrain_runs(rule: MonitorParams) -> None:
    history = [batch(0, quality=0.65), batch(1, quality=0.66)]
    decision = decide(history, rule, None, retrain_running=True)
    assert not decision.trigger
    assert "already running" in decision.reason


def test_no_trigger_while_a_canary_is_on_live_traffic(rule: MonitorParams) -> None:
    history = [batch(0, quality=0.65), batch(1, quality=0.66)]
    decision = decide(history, rule, None, retrain_running=False, canary="v4 at 25% of traffic")
    assert not decision.trigger
    assert decision.held_by == "canary_running"
    assert decision.reason == (
        "a canary is on live traffic (v4 at 25% of traffic): its looks decide first"
    )
    assert decide(history, rule, None, retrain_running=False).trigger  # the control


def test_cooldown_after_a_trigger(rule: MonitorParams, tmp_path: Path) -> None:
    history = [batch(0, quality=0.65), batch(1, quality=0.66)]
    last_trigger = history[0].last_day
    state = tmp_path / "state.sqlite"
    held = decide(history, rule, cooldown_in_days(state, history[-1], last_trigger, 14), False)
    assert not held.trigger
    assert held.reason == "cooldown: last retrain was asked 7 days of data ago (< 14)"
    later = [batch(2, quality=0.65), batch(3, quality=0.66)]
    assert decide(later, rule, cooldown_in_days(state, later[-1], last_trigger, 14), False).trigger


def test_cooldown_in_batches_for_batches_cut_by_arrival(rule: MonitorParams) -> None:
    history = [batch(0, quality=0.65), batch(1, quality=0.66)]
    held = decide(history, rule, Cooldown(elapsed=1, required=2, unit="batches"), False)
    assert held.reason == "cooldown: last retrain was asked 1 batches ago (< 2)"
    assert decide(history, rule, Cooldown(elapsed=2, required=2, unit="batches"), False).trigger


def test_small_batches_are_never_judged(rule: MonitorParams) -> None:
    history = [batch(0, quality=0.6), batch(1, quality=0.6, rows=50)]
    decision = decide(history, rule, None, retrain_running=False)
    assert not decision.trigger
    assert "too small" in decision.reason


def test_without_labels_only_drift_can_flag(rule: MonitorParams) -> None:
    unlabeled = batch(0, quality=None)
    assert unlabeled.quality_drop is None
    assert unlabeled.reasons(rule) == []
    assert batch(1, drift=0.5, quality=None).reasons(rule)


def test_a_drifted_batch_with_a_data_incident_never_triggers(rule: MonitorParams) -> None:
    """Drift that a broken feed causes must not teach the model the outage."""
    outage = Incident("feed_outage", ("dep_time",), "feed outage")
    broken = BatchOutcome(**{**batch(2, drift=0.5).__dict__, "incidents": [outage]})
    history = [batch(0, drift=0.5), batch(1, drift=0.5), broken]
    decision = decide(history, rule, None, retrain_running=False)
    assert not decision.trigger
    assert decision.reason == "data-quality incident, drift not judged: feed outage"
    assert "w2" not in decision.flagged  # and it does not count toward the next k of n
    assert decide(history[:2], rule, None, retrain_running=False).trigger  # the control
