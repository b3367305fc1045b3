"""retrain flow: learn from the newest labels and reproduce the pipeline.

A dataset with a time column moves its date windows to the newest labeled day and runs
the DVC pipeline as an experiment; one without splits by its labeled arrivals (the newest
are the test split) and runs the same stages in a scratch folder (`loopline.loop.retraining`).

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
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task

from loopline.core.errors import LooplineError
from loopline.core.params import Params, load_params
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import read_tables
from loopline.infra.monitor_state import MonitorStore
from loopline.infra.orchestration import run_stage, tool_environment
from loopline.infra.prediction_log import open_prediction_log
from loopline.loop.retraining import (
    SPLIT_COLUMN,
    arrival_split,
    dvc_overrides,
    moved_split,
    retrain_params_file,
    run_experiment,
    run_stages,
    shared_state,
)
from loopline.registry.versions import Registry
from loopline.training.tracking import (
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
    return _registered(name, parent_run_id)


@task(task_run_name="stages-{name}")
def reproduce_by_arrival(
    name: str, params_file: Path, root: Path, parent_run_id: str, timeout_s: float
) -> dict[str, str]:
    """Run dvc.yaml's stages under a retrain's params file; what its register stage decided."""
    env = tool_environment(**{PARENT_RUN_ENV: parent_run_id})
    run_stages(params_file, root, env, timeout_s)
    return _registered(name, parent_run_id)


def _registered(name: str, parent_run_id: str) -> dict[str, str]:
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


@dataclass(frozen=True)
class Plan:
    """What a retrain will learn from, or why it will not run."""

    until: str  # the newest label used: a day, or an arrival time
    skipped: str = ""  # why there is nothing new to learn from ("": retrain)
    windows: str = ""  # the splits, as tagged and reported
    overrides: list[str] = field(default_factory=list)  # by days: DVC's -S settings
    keys: pd.DataFrame | None = None  # by arrival: each key's split
    judged: str = ""  # by arrival: the test arrivals' time span


def plan_by_days(params: Params, root: Path, labeled_until: str) -> Plan:
    """Windows ending at the newest labeled day, unless a version was judged on it already."""
    given = dt.date.fromisoformat(labeled_until) if labeled_until else None
    until = given or open_prediction_log(params, root).latest_labeled_day()
    judged_until = Registry.rooted(params.registry, root).newest_judged_day()
    judged_until = judged_until or params.featurize.split.test.end
    if until is None or until <= judged_until:
        return Plan(str(until), f"no labels after {judged_until}, the newest day a version "
                    "was judged on")  # fmt: skip
    split = moved_split(params.featurize.split, until, params.retrain)
    return Plan(
        str(until), windows=f"train {split.train}, valid {split.valid}, test {split.test}",
        overrides=dvc_overrides(split, shared_state(params, root)),
    )  # fmt: skip


def plan_by_arrival(params: Params, root: Path, labeled_until: str) -> Plan:
    """The newest labeled arrivals as test, the rest train and valid; unless none is new."""
    log_store = open_prediction_log(params, root)
    until = labeled_until or log_store.latest_labeled_arrival()
    if not until:
        return Plan("", "no labeled arrivals yet")
    arrivals = log_store.labeled_arrivals(until)
    judged = Registry.rooted(params.registry, root).newest_judged_arrival()
    if judged and not (arrivals["logged_at"] > judged).any():
        return Plan(until, f"no labeled arrivals after {judged}, the newest a version was "
                    "judged on")  # fmt: skip
    dataset = get_dataset(params.dataset.name)
    tables = read_tables(root / params.paths.data, dataset.contract)
    keys, span = arrival_split(
        dataset.build_examples(tables, params.dataset), arrivals,
        key_columns=dataset.key_columns, target_column=dataset.target_column, params=params,
    )  # fmt: skip
    counts = keys[SPLIT_COLUMN].value_counts()
    windows = (
        f"train {counts['train']:,} and valid {counts['valid']:,} rows (the first split and "
        f"older arrivals), test the newest {counts['test']:,} labeled arrivals {span}"
    )
    return Plan(until, windows=windows, keys=keys, judged=span)


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
    root = params_path.resolve().parent
    params = load_params(params_path)
    configure_mlflow(params.mlflow, root=root)
    labeled_until = "" if labeled_until == "None" else labeled_until
    has_time = get_dataset(params.dataset.name).has_time
    plan = (plan_by_days if has_time else plan_by_arrival)(params, root, labeled_until)
    if plan.skipped:
        logger.info("%s: no retrain", plan.skipped)
        return {"retrained": False, "reason": plan.skipped}
    detail = _decision_detail(params, root, decision_id)
    tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"], root) | {
        "loopline.retrain.reason": reason[:4000],
        "loopline.retrain.decision_id": decision_id,
        "loopline.retrain.decision": str(detail.get("detail", {}).get("numbers", ""))[:4000],
        "loopline.retrain.windows": plan.windows,
    }
    name = f"retrain-{plan.until[:19]}-{uuid.uuid4().hex[:6]}"
    timeout_s = params.retrain.timeout_minutes * 60
    with mlflow.start_run(run_name=name, tags=tags) as run:
        if has_time:
            outcome = reproduce(name, plan.overrides, root, run.info.run_id, timeout_s)
        else:
            with tempfile.TemporaryDirectory(prefix=f"loopline-{name}-") as scratch:
                workspace = Path(scratch)
                keys_file = workspace / "split_keys.parquet"
                plan.keys.to_parquet(keys_file, index=False)
                retrain_file = retrain_params_file(
                    params_path, params, workspace, keys_file, plan.judged
                )
                outcome = reproduce_by_arrival(name, retrain_file, root, run.info.run_id, timeout_s)
    logger.info(
        "%s: version %s %s (champion %s)",
        name,
        outcome["version"],
        outcome["action"],
        outcome["champion"],
    )
    return {
        "retrained": True, "experiment": name, "windows": plan.windows,
        "version": str(outcome["version"]), "action": outcome["action"],
        "champion": str(outcome["champion"]), "mlflow_run_id": run.info.run_id,
    }  # fmt: skip


if __name__ == "__main__":
    run_stage(retrain)
