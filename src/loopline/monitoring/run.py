"""One monitoring step, start to end: cut the next batch, measure it, decide, record.

The Prefect flow `pipelines/monitor.py` runs these steps in order (as tasks it can show)
and, when the decision is to retrain, emits the event the retrain deployment listens for.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from loopline.core.params import MonitorParams
from loopline.data.time_axis import Batch
from loopline.monitoring.dashboard import open_project
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.measure import Measured, measure_batch
from loopline.monitoring.records import BatchOutcome, Decision, flag_dict
from loopline.monitoring.rule import decide
from loopline.workspace import Workspace

log = logging.getLogger(__name__)


def next_batch(
    workspace: Workspace, first_day: dt.date | None = None, last_day: dt.date | None = None
) -> Batch | None:
    """The batch to measure now (None: nothing new arrived); see the time axis."""
    return workspace.axis.batch(
        workspace.prediction_log, workspace.monitor_state, first_day, last_day
    )


def measure_and_show(workspace: Workspace, batch: Batch) -> Measured:
    """Measure the batch and put its snapshot on the drift dashboard."""
    measured = measure_batch(workspace, batch)
    dataset, monitor = workspace.dataset, workspace.params.monitor
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    dashboard, project = open_project(
        str(monitor.workspace), monitor.project, columns, dataset.wording
    )
    dashboard.add_run(project.id, measured.snapshot)
    return measured


@dataclass(frozen=True)
class Judged:
    """A measured batch, the rule's decision on it, and the decision's id in the state."""

    measured: Measured
    decision: Decision
    decision_id: str
    labeled_until: str | None


def judge(workspace: Workspace, batch: Batch, measured: Measured, retrain_running: bool) -> Judged:
    """Store the batch, apply the retrain rule to the recent ones, store the decision."""
    state, monitor = workspace.monitor_state, workspace.params.monitor
    limit = workspace.axis.cooldown_limit(monitor)
    state.save_batch(measured.outcome, measured.profile.as_dict())
    cooldown = workspace.axis.cooldown(state, batch, limit)
    history = [BatchOutcome.from_dict(row) for row in state.history(monitor.n)]
    running = workspace.registry.canary()
    canary = f"v{running.version} at {running.share:.0%} of traffic" if running else None
    decision = decide(history, monitor, cooldown, retrain_running=retrain_running, canary=canary)
    decision_id = state.save_decision(decision, measured.outcome.ends_at)
    log.info(
        "batch %s: %s -> %s", measured.outcome.batch_id, decision.reason,
        "RETRAIN" if decision.trigger else "no retrain",
    )  # fmt: skip
    labeled_until = workspace.axis.labeled_until(workspace.prediction_log)
    return Judged(measured, decision, decision_id, labeled_until)


def outcome_fields(outcome: BatchOutcome, monitor: MonitorParams) -> dict[str, Any]:
    """A batch's outcome as a monitor run returns it: its fields and the limits it crossed.

    The limits come twice: as fields (`flags`, what code reads) and in words (for people).
    """
    return {
        "outcome": outcome.as_dict(),
        "flags": [flag_dict(flag) for flag in outcome.flags(monitor)],
        "flagged_because": outcome.reasons(monitor),
    }


def summary(workspace: Workspace, judged: Judged) -> dict[str, Any]:
    """What a monitor run returns: the decision and the batch, in fields and in words."""
    outcome, monitor = judged.measured.outcome, workspace.params.monitor
    return {
        "measured": True, "decision_id": judged.decision_id,
        "trigger": judged.decision.trigger, "reason": judged.decision.reason,
        "held_by": judged.decision.held_by, **outcome_fields(outcome, monitor),
        "incidents": [str(incident) for incident in outcome.incidents],
        "labeled_until": str(judged.labeled_until), "report": str(judged.measured.report_path),
    }  # fmt: skip


def nothing_to_measure(workspace: Workspace) -> dict[str, Any]:
    """What a monitor run returns when no prediction arrived since the last batch."""
    after = workspace.monitor_state.newest_end()
    quiet = f"nothing logged after {after or 'the start'}: no batch to measure"
    log.info(quiet)
    return {"measured": False, "trigger": False, "reason": quiet}
