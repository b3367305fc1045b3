"""monitor flow: measure the latest batch of production traffic and decide on a retrain.

Runs on the monitor deployment's schedule (or from `loopline replay`). The batch is one
week of flights (by scheduled date) from the prediction log; its drift and quality go to
the monitor's store, the Evidently dashboard and an HTML report. If the retrain rule fires,
a `loopline.retrain.requested` event is emitted: the retrain deployment's trigger (an
automation on the Prefect server) starts the retrain flow with the event's payload.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from loopline.config import Params, load_params
from loopline.datasets import get_dataset
from loopline.monitoring.dashboard import open_project
from loopline.monitoring.decision import decide
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.job import Measured, measure_batch
from loopline.monitoring.store import MonitorStore
from loopline.orchestration import run_stage, runs_in_progress
from loopline.registry import Registry
from loopline.serving.prediction_log import open_prediction_log
from loopline.tracking import configure_mlflow

RETRAIN_EVENT = "loopline.retrain.requested"


@task
def measure(params: Params, root: Path, first_day: dt.date, last_day: dt.date) -> Measured:
    """Drift and quality of the batch; its snapshot goes on the dashboard."""
    dataset = get_dataset(params.dataset.name)
    registry = Registry.rooted(params.registry, root)
    measured = measure_batch(
        dataset=dataset, params=params, registry=registry,
        log_store=open_prediction_log(params, root), first_day=first_day, last_day=last_day,
        root=root,
    )  # fmt: skip
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    workspace, project = open_project(
        params.monitor.workspace, root, params.monitor.project, columns, dataset.wording
    )
    workspace.add_run(project.id, measured.snapshot)
    return measured


@flow(name="monitor", flow_run_name="monitor-{last_day}")
def monitor(
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Measure the batch first_day..last_day (default: the last 7 logged days) and decide."""
    logger = get_run_logger()
    root = params_path.resolve().parent
    params = load_params(params_path)
    get_dataset(params.dataset.name).require_time("the monitor flow")
    configure_mlflow(params.mlflow, root=root)
    log_store = open_prediction_log(params, root)
    last_day = last_day or log_store.latest_event_day()
    first_day = first_day or last_day - dt.timedelta(days=6)
    measured = measure(params, root, first_day, last_day)
    store = MonitorStore(params.monitor.state, root)
    store.save_batch(measured.outcome)
    decision = decide(
        store.history(params.monitor.n), params.monitor, store.last_trigger_day(),
        retrain_running=bool(runs_in_progress("retrain")),
    )  # fmt: skip
    decision_id = store.save_decision(decision, measured.outcome.last_day)
    logger.info(
        "batch %s: %s -> %s",
        measured.outcome.batch_id,
        decision.reason,
        "RETRAIN" if decision.trigger else "no retrain",
    )
    labeled_until = log_store.latest_labeled_day()
    if decision.trigger:
        emit_event(
            event=RETRAIN_EVENT,
            resource={"prefect.resource.id": f"loopline.model.{params.registry.model_name}"},
            payload={"decision_id": decision_id, "reason": decision.reason,
                     "labeled_until": str(labeled_until)},
        )  # fmt: skip
    return {
        "decision_id": decision_id, "trigger": decision.trigger, "reason": decision.reason,
        "flagged_because": measured.outcome.reasons(params.monitor),
        "incidents": measured.outcome.incidents,
        "labeled_until": str(labeled_until), "report": str(measured.report_path),
        "outcome": measured.outcome.as_dict(),
    }  # fmt: skip


if __name__ == "__main__":
    run_stage(monitor)
