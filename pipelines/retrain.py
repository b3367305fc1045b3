"""retrain flow: move the time windows to the newest labels and reproduce the pipeline.

Started by the retrain deployment: weekly by cron, or by the automation that listens for
the monitor's `loopline.retrain.requested` event (its payload gives the reason and the
decision). The deployment runs one retrain at a time (a Prefect concurrency limit): a
second trigger waits for the first and then, finding no labels newer than the windows the
first one judged on, ends without retraining and says so. The flow records itself as an
MLflow run tagged with its trigger; the train runs of the experiment nest under it, and
the experiment's register stage tags it with the version and the decision. The
experiment runs in a temporary workspace, so the user's checkout is never touched; a
running service picks up a new champion by itself.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task

from loopline.config import Params, load_params
from loopline.datasets import get_dataset
from loopline.errors import LooplineError
from loopline.monitoring.store import MonitorStore
from loopline.orchestration import run_stage, tool_environment
from loopline.registry import Registry
from loopline.retraining import dvc_overrides, moved_split, run_experiment, shared_state
from loopline.serving.prediction_log import open_prediction_log
from loopline.tracking import (
    PARENT_RUN_ENV,
    RETRAIN_OUTCOME_TAGS,
    configure_mlflow,
    lineage_tags,
)


@task(task_run_name="dvc-exp-run-{name}")
def reproduce(
    name: str, overrides: list[str], root: Path, parent_run_id: str, timeout_s: float
) -> dict[str, str]:
    """Run the DVC pipeline as an experiment; returns what its register stage decided."""
    env = tool_environment(**{PARENT_RUN_ENV: parent_run_id})
    run_experiment(name, overrides, root, env, timeout_s)
    tags = mlflow.get_run(parent_run_id).data.tags
    if not set(RETRAIN_OUTCOME_TAGS.values()) <= set(tags):
        raise LooplineError(f"experiment {name} finished without a registration decision")
    return {key: tags[tag] for key, tag in RETRAIN_OUTCOME_TAGS.items()}


def _decision_detail(params: Params, root: Path, decision_id: str) -> dict:
    if not decision_id:
        return {}
    found = [
        d
        for d in MonitorStore(params.monitor.state, root).decisions()
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
    get_dataset(params.dataset.name).require_time("the retrain flow")
    log_store = open_prediction_log(params, root)
    until = (
        dt.date.fromisoformat(labeled_until)
        if labeled_until not in ("", "None")
        else log_store.latest_labeled_day()
    )
    configure_mlflow(params.mlflow, root=root)
    judged_until = Registry.rooted(params.registry, root).newest_judged_day()
    judged_until = judged_until or params.featurize.split.test.end
    if until is None or until <= judged_until:
        skipped = f"no labels after {judged_until}, the newest day a version was judged on"
        logger.info("%s: no retrain", skipped)
        return {"retrained": False, "reason": skipped}
    split = moved_split(params.featurize.split, until, params.retrain)
    detail = _decision_detail(params, root, decision_id)
    tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"], root) | {
        "loopline.retrain.reason": reason[:4000],
        "loopline.retrain.decision_id": decision_id,
        "loopline.retrain.decision": str(detail.get("detail", {}).get("numbers", ""))[:4000],
        "loopline.retrain.windows": f"train {split.train}, valid {split.valid}, test {split.test}",
    }
    name = f"retrain-{until}-{uuid.uuid4().hex[:6]}"
    overrides = dvc_overrides(split, shared_state(params, root))
    with mlflow.start_run(run_name=name, tags=tags) as run:
        outcome = reproduce(
            name, overrides, root, run.info.run_id, params.retrain.timeout_minutes * 60
        )
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
