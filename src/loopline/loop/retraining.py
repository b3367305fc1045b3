"""Retraining: learn from the newest labels by running the pipeline again, elsewhere.

What a retrain learns from is the time axis's plan (`TimeAxis.plan_retrain`): by days, the
date windows moved to the newest labeled day (test on the last `test_days`, validate on
the `valid_days` before, train on everything earlier: an expanding window, nothing after
the labels); by arrival, the newest `test_arrivals` labeled arrivals as the test split and
the older ones with the first split as train and valid. Either way the plan is a set of
params overrides, and the pipeline runs again under them without touching the checkout:

* where DVC tracks the dataset, as a DVC experiment in a temporary workspace
  (`dvc exp run --temp -S ...`): `dvc exp show` lists every retrain with its windows and
  metrics;
* otherwise, dvc.yaml's stage commands in order under a params file written to a scratch
  folder: the stage outputs go there.

The shared state (the MLflow store, the ledger, the model cards) is the checkout's, by
absolute paths, so the retrain's runs and its register stage's decision land where the
service and the monitor look; the decision is exactly the one a manual run would make.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

from loopline.core import tags
from loopline.core.errors import LooplineError
from loopline.core.params import PARAMS_ENV
from loopline.data.time_axis import RetrainPlan, ScratchFile
from loopline.infra.dvc import run_experiment, run_stages
from loopline.infra.environment import tool_environment
from loopline.registry.versions import CHALLENGER
from loopline.training.tracking import PARENT_RUN_ENV, lineage_tags
from loopline.workspace import Workspace

INPUTS = ("data", "data_dvc")  # the paths a retrain reads; every other path is an output


def plan(workspace: Workspace, labeled_until: str = "") -> RetrainPlan:
    """What a retrain for labels up to `labeled_until` ("": the newest) would learn."""
    registry = workspace.registry
    judged = registry.tag(registry.alias_version(CHALLENGER), tags.window("test"))
    return workspace.axis.plan_retrain(
        workspace.params, workspace.prediction_log, labeled_until, judged, workspace.examples
    )


def retrain_tags(
    workspace: Workspace, planned: RetrainPlan, reason: str, decision_id: str
) -> dict[str, str]:
    """The retrain run's tags: lineage, why it ran, and what it learns from."""
    decision = workspace.monitor_state.decision(decision_id) if decision_id else None
    numbers = (decision or {}).get("detail", {}).get("numbers", "")
    return lineage_tags(workspace) | {
        tags.RETRAIN_REASON: reason[:4000],
        tags.RETRAIN_DECISION_ID: decision_id,
        tags.RETRAIN_DECISION: str(numbers)[:4000],
        tags.RETRAIN_WINDOWS: planned.windows,
    }


def _materialized(overrides: Mapping[str, Any], scratch: Path) -> dict[str, Any]:
    """`overrides` with each `ScratchFile` written to `scratch` and replaced by its path."""

    def value(item: Any) -> Any:
        if isinstance(item, ScratchFile):
            path = scratch / item.name
            item.frame.to_parquet(path, index=False)
            return str(path)
        if isinstance(item, Mapping):
            return {key: value(inner) for key, inner in item.items()}
        return item

    return {key: value(item) for key, item in overrides.items()}


def reproduce(
    workspace: Workspace, name: str, planned: RetrainPlan, parent_run_id: str, timeout_s: float
) -> dict[str, str]:
    """Run the pipeline under the plan's overrides (see the module docstring).

    Its runs nest under `parent_run_id`, which its register stage tags with the outcome:
    the registered version, the action taken and the champion after it.
    """
    env = tool_environment(**{PARENT_RUN_ENV: parent_run_id})
    with tempfile.TemporaryDirectory(prefix=f"loopline-{name}-") as folder:
        scratch = Path(folder)
        overrides = _materialized(planned.overrides, scratch) | workspace.shared_state()
        if workspace.dvc_tracked:
            run_experiment(name, overrides, workspace.root, env, timeout_s)
        else:
            outputs = {
                f"paths.{key}": str(scratch / key)
                for key in workspace.params.paths.model_dump()
                if key not in INPUTS
            }
            params_file = workspace.write_params(scratch / "params.yaml", overrides | outputs)
            run_stages(workspace.root, env | {PARAMS_ENV: str(params_file)}, timeout_s)
    return registered_outcome(name, parent_run_id)


def registered_outcome(name: str, parent_run_id: str) -> dict[str, str]:
    """What the retrain's register stage tagged on its parent run."""
    found = mlflow.get_run(parent_run_id).data.tags
    if not set(tags.RETRAIN_OUTCOME.values()) <= set(found):
        raise LooplineError(f"experiment {name} finished without a registration decision")
    return {key: found[tag] for key, tag in tags.RETRAIN_OUTCOME.items()}
