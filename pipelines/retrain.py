"""retrain flow: move the time windows to the newest labels and reproduce the pipeline.

Started by the retrain deployment: weekly by cron, or by the automation that listens for
the monitor's `loopline.retrain.requested` event (its payload gives the reason and the
decision). The flow records itself as an MLflow run tagged with that decision; the train
runs of the experiment nest under it. The register stage of the experiment decides on
promotion; a running service picks up a new champion by itself.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task

from loopline.config import Params, SplitParams, load_params
from loopline.datasets import get_dataset
from loopline.io import read_json
from loopline.monitoring.store import MonitorStore
from loopline.orchestration import run_stage, tool_environment
from loopline.retraining import moved_split, run_experiment
from loopline.serving.prediction_log import PredictionLog
from loopline.tracking import configure_mlflow, lineage_tags

PARENT_RUN_ENV = "LOOPLINE_PARENT_RUN_ID"


@task(task_run_name="dvc-exp-run-{name}")
def reproduce(
    name: str, split: SplitParams, root: Path, parent_run_id: str, timeout_s: float
) -> str:
    """Run the DVC pipeline as an experiment with the new windows."""
    return run_experiment(
        name, split, root, tool_environment(**{PARENT_RUN_ENV: parent_run_id}), timeout_s
    )


def _decision_detail(params: Params, root: Path, decision_id: str) -> dict:
    if not decision_id:
        return {}
    found = [
        d
        for d in MonitorStore(root / params.monitor.state).decisions()
        if d["decision_id"] == decision_id
    ]
    return found[0] if found else {}


@flow(name="retrain", flow_run_name="retrain-until-{labeled_until}")
def retrain(
    labeled_until: str = "",
    reason: str = "schedule",
    decision_id: str = "",
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Retrain on everything labeled up to `labeled_until` (default: the prediction log's)."""
    logger = get_run_logger()
    root = params_path.resolve().parent
    params = load_params(params_path)
    dataset = get_dataset(params.dataset.name)
    log_store = PredictionLog(
        root / params.serve.prediction_log,
        dataset.contract,
        dataset.key_columns,
        dataset.target_column,
    )
    until = (
        dt.date.fromisoformat(labeled_until)
        if labeled_until not in ("", "None")
        else log_store.latest_labeled_day()
    )
    current = params.featurize.split
    if until is None or until <= current.test.end:
        logger.info("nothing labeled after the current test window (%s): no retrain", current.test)
        return {"retrained": False, "reason": "no new labels"}
    split = moved_split(current, until, params.retrain)
    configure_mlflow(params.mlflow, root=root)
    detail = _decision_detail(params, root, decision_id)
    tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"], root) | {
        "loopline.retrain.reason": reason[:4000],
        "loopline.retrain.decision_id": decision_id,
        "loopline.retrain.decision": str(detail.get("detail", {}).get("numbers", ""))[:4000],
        "loopline.retrain.windows": f"train {split.train}, valid {split.valid}, test {split.test}",
    }
    name = f"retrain-{until}-{uuid.uuid4().hex[:6]}"
    with mlflow.start_run(run_name=name, tags=tags) as run:
        reproduce(name, split, root, run.info.run_id, params.retrain.timeout_minutes * 60)
        outcome = read_json(root / params.paths.registration / "decision.json")
        mlflow.set_tags({
            "loopline.retrain.version": str(outcome["version"]),
            "loopline.retrain.outcome": outcome["action"],
            "loopline.retrain.champion": str(outcome["champion"]),
        })  # fmt: skip
    logger.info(
        "%s: version %s %s (champion %s)",
        name,
        outcome["version"],
        outcome["action"],
        outcome["champion"],
    )
    return {
        "retrained": True, "experiment": name, "windows": str(split.model_dump(mode="json")),
        "version": str(outcome["version"]), "action": outcome["action"],
        "champion": str(outcome["champion"]), "mlflow_run_id": run.info.run_id,
    }  # fmt: skip


if __name__ == "__main__":
    run_stage(retrain)
