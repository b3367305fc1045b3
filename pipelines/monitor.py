"""monitor flow: measure the latest batch of production traffic and decide on a retrain.

Runs on the monitor deployment's schedule (or from `loopline replay`). For a dataset with
a time column the batch is a range of event days from the prediction log (default: the
last 7 logged); for one without, it is everything logged since the previous batch (cut by
arrival time, `logged_at`). Its drift and quality go to the monitor's store, the
Evidently dashboard and an HTML report. If the retrain rule fires,
a `loopline.retrain.requested` event is emitted: the retrain deployment's trigger (an
automation on the Prefect server) starts the retrain flow with the event's payload.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.events import emit_event
from prefect.runtime import flow_run

from loopline.core.errors import LooplineError
from loopline.core.params import Params, load_params, required
from loopline.data.datasets import get_dataset
from loopline.infra.monitor_state import MonitorStore
from loopline.infra.orchestration import run_stage, runs_in_progress
from loopline.infra.prediction_log import open_prediction_log
from loopline.monitoring.dashboard import open_project
from loopline.monitoring.decision import Cooldown, decide
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.job import (
    Batch,
    Measured,
    batch_by_arrival,
    batch_by_event_days,
    measure_batch,
)
from loopline.registry.versions import Registry
from loopline.training.tracking import configure_mlflow

RETRAIN_EVENT = "loopline.retrain.requested"


@task
def measure(params: Params, root: Path, batch: Batch) -> Measured:
    """Drift and quality of the batch; its snapshot goes on the dashboard."""
    dataset = get_dataset(params.dataset.name)
    registry = Registry.rooted(params.registry, root)
    measured = measure_batch(
        dataset=dataset, params=params, registry=registry, batch=batch, root=root
    )
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    workspace, project = open_project(
        params.monitor.workspace, root, params.monitor.project, columns, dataset.wording
    )
    workspace.add_run(project.id, measured.snapshot)
    return measured


def _run_name() -> str:
    """`monitor-<last day>`, or `monitor-latest` for the newest batch (by days or arrival)."""
    return f"monitor-{flow_run.parameters.get('last_day') or 'latest'}"


@flow(name="monitor", flow_run_name=_run_name)
def monitor(
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Measure one batch and decide.

    With a time column: the examples dated first_day..last_day (default: the last 7
    logged days). Without: every prediction logged since the previous batch (the days
    must not be given); if none arrived, nothing is measured.
    """
    logger = get_run_logger()
    root = params_path.resolve().parent
    params = load_params(params_path)
    has_time = get_dataset(params.dataset.name).has_time
    cooldown_limit = (
        required(params.monitor.cooldown_days, "monitor.cooldown_days", "for batches by day")
        if has_time
        else required(
            params.monitor.cooldown_batches, "monitor.cooldown_batches",
            "for batches by arrival (a dataset without a time column)",
        )
    )  # fmt: skip
    configure_mlflow(params.mlflow, root=root)
    log_store = open_prediction_log(params, root)
    store = MonitorStore(params.monitor.state, root)
    if has_time:
        last_day = last_day or log_store.latest_event_day()
        first_day = first_day or last_day - dt.timedelta(days=6)
        batch = batch_by_event_days(log_store, first_day, last_day)
    else:
        if first_day or last_day:
            raise LooplineError(
                f"dataset {params.dataset.name!r} has no time column: its batches are cut by "
                "arrival (everything logged since the last batch), not by days"
            )
        after, until = store.cursor(), log_store.latest_logged_at()
        found = batch_by_arrival(log_store, after, until) if until else None
        if found is None:
            quiet = f"nothing logged after {after or 'the start'}: no batch to measure"
            logger.info(quiet)
            return {"measured": False, "trigger": False, "reason": quiet}
        batch = found
    measured = measure(params, root, batch)
    store.save_batch(measured.outcome)
    cooldown = (
        Cooldown.in_days(measured.outcome, store.last_trigger_day(), cooldown_limit)
        if has_time
        else Cooldown(store.batches_since_trigger(), cooldown_limit, "batches")
    )
    decision = decide(
        store.history(params.monitor.n), params.monitor, cooldown,
        retrain_running=bool(runs_in_progress("retrain")),
    )  # fmt: skip
    decision_id = store.save_decision(decision, measured.outcome.ends_at)
    logger.info(
        "batch %s: %s -> %s",
        measured.outcome.batch_id,
        decision.reason,
        "RETRAIN" if decision.trigger else "no retrain",
    )
    labeled_until = (
        log_store.latest_labeled_day() if has_time else log_store.latest_labeled_arrival()
    )
    if decision.trigger:
        emit_event(
            event=RETRAIN_EVENT,
            resource={"prefect.resource.id": f"loopline.model.{params.registry.model_name}"},
            payload={"decision_id": decision_id, "reason": decision.reason,
                     "labeled_until": str(labeled_until)},
        )  # fmt: skip
    return {
        "measured": True, "decision_id": decision_id, "trigger": decision.trigger,
        "reason": decision.reason,
        "flagged_because": measured.outcome.reasons(params.monitor),
        "incidents": measured.outcome.incidents,
        "labeled_until": str(labeled_until), "report": str(measured.report_path),
        "outcome": measured.outcome.as_dict(),
    }  # fmt: skip


if __name__ == "__main__":
    run_stage(monitor)
