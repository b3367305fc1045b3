"""retrain flow: learn from the newest labels and reproduce the pipeline.

Started by the retrain deployment: weekly by cron, or by the automation that listens for
the monitor's `loopline.retrain.requested` event (its payload gives the reason and the
decision). The deployment runs one retrain at a time (a Prefect concurrency limit): a
second trigger waits for the first and then, finding no labels newer than the windows the
first one judged on, ends without retraining and says so. The time axis plans what the
retrain learns from; `loopline.loop.retraining` runs the pipeline again under that plan
in a temporary workspace, so the user's checkout is never touched. The flow records
itself as an MLflow run tagged with its trigger; the pipeline's train runs nest under it,
and its register stage tags it with the version and the decision. A running service
picks up a new champion by itself.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger

from loopline.infra.prefect import run_stage
from loopline.loop.retraining import plan, reproduce, retrain_tags
from loopline.workspace import Workspace


@flow(name="retrain", flow_run_name="retrain-until-{labeled_until}")
def retrain(
    labeled_until: str = "",
    reason: str = "schedule",
    decision_id: str = "",
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Retrain on everything labeled up to `labeled_until` (default: the prediction log's).

    `labeled_until` is a day (a dataset with a time column) or an arrival time (without).
    """
    logger = get_run_logger()
    workspace = Workspace.load(params_path)
    workspace.configure_tracking()
    planned = plan(workspace, "" if labeled_until == "None" else labeled_until)
    if planned.skipped:
        logger.info("%s: no retrain", planned.skipped)
        return {"retrained": False, "reason": planned.skipped}
    name = f"retrain-{planned.until[:19]}-{uuid.uuid4().hex[:6]}"
    timeout_s = workspace.params.retrain.timeout_minutes * 60
    run_tags = retrain_tags(workspace, planned, reason, decision_id)
    with mlflow.start_run(run_name=name, tags=run_tags) as run:
        outcome = reproduce(workspace, name, planned, run.info.run_id, timeout_s)
    logger.info(
        "%s: version %s %s (champion %s)",
        name, outcome["version"], outcome["action"], outcome["champion"],
    )  # fmt: skip
    return {
        "retrained": True, "experiment": name, "windows": planned.windows,
        "version": str(outcome["version"]), "action": outcome["action"],
        "champion": str(outcome["champion"]), "mlflow_run_id": run.info.run_id,
    }  # fmt: skip


if __name__ == "__main__":
    run_stage(retrain)
