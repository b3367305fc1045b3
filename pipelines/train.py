"""train stage: one model family per run (`python -m pipelines.train xgboost`).

Trains on the training split, picks the decision threshold on the validation split,
compiles the scorer (checked against the trained estimator), and tracks everything in
MLflow: params, lineage tags, validation metrics, timings, the compiled scorer's measured
parity, per-epoch curves (MLP), and the model itself (raw records in, probability out),
tagged with the scorer's digest.

What DVC hashes is deterministic, so a rerun of the same code, data and params leaves
dvc.lock unchanged: the compiled scorer in `paths.models/<family>/scorer/` and the
validation metrics in `metrics/train/<family>.json`. Timings and the parity gap go to
MLflow and to `logs/timings/` (not tracked); the register stage finds the MLflow run by
the scorer's digest.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from loopline.core import tags
from loopline.core.io import write_json
from loopline.core.seeds import seed_everything
from loopline.infra.prefect import run_stage
from loopline.scoring.pyfunc import log_model
from loopline.scoring.scorer import SCORER_DIR, scorer_digest
from loopline.training.families import TrainContext, families, family_params
from loopline.training.feature_sets import load_feature_sets
from loopline.training.tracking import PARENT_RUN_ENV, TIMINGS_DIR, lineage_tags
from loopline.training.train import TrainedFamily, is_timing, train_family
from loopline.workspace import Workspace


@task(task_run_name="fit-{family}", cache_policy=NO_CACHE)
def fit(family: str, workspace: Workspace, run_id: str) -> tuple[TrainedFamily, float]:
    """Train the family and compile its scorer; the parity gap the export measured."""
    params = workspace.params
    data = load_feature_sets(params.paths.features)
    env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    context = TrainContext(seed=params.seed, features=workspace.layout, env=env)
    trained = train_family(
        family, data, family_params(params, family), seed=params.seed, context=context
    )
    compiled = trained.compile(data, params.paths.models / family / SCORER_DIR)
    return trained, float(compiled.parity_gap or 0.0)


@task(task_run_name="log-{family}", cache_policy=NO_CACHE)
def record(
    family: str, trained: TrainedFamily, parity_gap: float, workspace: Workspace, run_id: str
) -> None:
    """Log metrics, timings and the compiled scorer to MLflow; write the stage metrics."""
    params = workspace.params
    measured = trained.stats | {"scorer_parity_max_abs_difference": parity_gap}
    mlflow.log_metrics({f"valid_{k}": v for k, v in trained.valid_metrics.items()} | measured)
    example = pd.read_parquet(workspace.layout.examples("valid"))
    scorer_dir = params.paths.models / family / SCORER_DIR
    info = log_model(scorer_dir, workspace.dataset.contract, example)
    mlflow.set_tags({tags.MODEL_URI: info.model_uri, tags.SCORER_DIGEST: scorer_digest(scorer_dir)})
    timings = {k: v for k, v in measured.items() if is_timing(k)} | {
        "scorer_parity_max_abs_difference": parity_gap,
    }
    write_json(timings | {"mlflow_run_id": run_id}, TIMINGS_DIR / f"train-{family}.json")
    write_json(
        {"valid": trained.valid_metrics}
        | {k: v for k, v in trained.stats.items() if not is_timing(k)},
        params.paths.metrics / "train" / f"{family}.json",
    )


@flow(name="train", flow_run_name="train-{family}")
def train(family: str, params_path: Path | None = None) -> None:
    """Train, validate and track one model family."""
    workspace = Workspace.load(params_path)
    params = workspace.params
    seed_everything(params.seed)
    workspace.configure_tracking()
    settings = family_params(params, family).model_dump(mode="json")
    run_tags = lineage_tags(workspace) | {tags.FAMILY: family}
    if parent := os.environ.get(PARENT_RUN_ENV):
        run_tags["mlflow.parentRunId"] = parent  # nest under the retrain that asked for this run
    with mlflow.start_run(run_name=family, tags=run_tags) as run:
        mlflow.log_params({"seed": params.seed, "family": family, **settings})
        trained, parity_gap = fit(family, workspace, run.info.run_id)
        record(family, trained, parity_gap, workspace, run.info.run_id)


def main() -> None:
    """`python -m pipelines.train FAMILY`."""
    names = sorted(families())
    if len(sys.argv) != 2 or sys.argv[1] not in names:
        raise SystemExit(f"usage: python -m pipelines.train {{{','.join(names)}}}")
    run_stage(functools.partial(train, sys.argv[1]))


if __name__ == "__main__":
    main()
