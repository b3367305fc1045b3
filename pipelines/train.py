"""train stage: one model family per run (`python -m pipelines.train xgboost`).

Trains on the training window, picks the decision threshold on the validation window,
compiles the scorer (checked against the trained estimator), and tracks everything in
MLflow: params, lineage tags, validation metrics, timings, per-epoch curves (MLP), and the
model itself (raw records in, probability out), tagged with the scorer's digest.

What DVC hashes is deterministic, so a rerun of the same code, data and params leaves
dvc.lock unchanged: the compiled scorer in `paths.models/<family>/scorer/` and the
validation metrics in `metrics/train/<family>.json`. Timings go to MLflow and to
`logs/timings/` (not tracked); the register stage finds the MLflow run by the digest.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, task

from loopline.core.io import write_json
from loopline.core.params import MLPParams, Params, load_params, params_file
from loopline.core.seeds import seed_everything
from loopline.data.datasets import get_dataset
from loopline.infra.orchestration import run_stage
from loopline.scoring.scorer import SCORER_DIR, scorer_digest
from loopline.training.families.mlp.launch import train_mlp
from loopline.training.feature_sets import load_feature_sets
from loopline.training.tracking import (
    MODEL_URI_TAG,
    PARENT_RUN_ENV,
    SCORER_DIGEST_TAG,
    TIMINGS_DIR,
    configure_mlflow,
    lineage_tags,
    log_model,
)
from loopline.training.train import FAMILIES, TrainedFamily, is_timing, train_family


@task(task_run_name="fit-{family}")
def fit(family: str, params: Params, run_id: str) -> TrainedFamily:
    """Train the family (the MLP under torchrun, reporting epochs to this MLflow run)."""
    data = load_feature_sets(params.paths.features)
    env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}

    def mlp_run(mlp_params: MLPParams):  # noqa: ANN202
        with tempfile.TemporaryDirectory(prefix="ddp-") as scratch:  # checkpoints: not outputs
            return train_mlp(params.paths.features, Path(scratch), mlp_params, params.seed, env)

    trained = train_family(family, data, params.train, seed=params.seed, mlp_run=mlp_run)
    trained.compile(data, params.paths.models / family / SCORER_DIR)
    return trained


@task(task_run_name="log-{family}")
def record(family: str, trained: TrainedFamily, params: Params, run_id: str) -> None:
    """Log metrics, timings and the compiled scorer to MLflow; write the stage metrics."""
    dataset = get_dataset(params.dataset.name)
    mlflow.log_metrics({f"valid_{k}": v for k, v in trained.valid_metrics.items()} | trained.stats)
    example = pd.read_parquet(params.paths.features / "examples" / "valid.parquet")
    scorer_dir = params.paths.models / family / SCORER_DIR
    info = log_model(scorer_dir, dataset.contract, example)
    mlflow.set_tags({MODEL_URI_TAG: info.model_uri, SCORER_DIGEST_TAG: scorer_digest(scorer_dir)})
    timings = {k: v for k, v in trained.stats.items() if is_timing(k)}
    write_json(timings | {"mlflow_run_id": run_id}, TIMINGS_DIR / f"train-{family}.json")
    write_json(
        {"valid": trained.valid_metrics}
        | {k: v for k, v in trained.stats.items() if not is_timing(k)},
        params.paths.metrics / "train" / f"{family}.json",
    )


@flow(name="train", flow_run_name="train-{family}")
def train(family: str, params_path: Path | None = None) -> None:
    """Train, validate and track one model family."""
    params = load_params(params_file(params_path))
    seed_everything(params.seed)
    configure_mlflow(params.mlflow)
    family_params = getattr(params.train, family).model_dump(mode="json")
    tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"]) | {
        "loopline.family": family
    }
    if parent := os.environ.get(PARENT_RUN_ENV):
        tags["mlflow.parentRunId"] = parent  # nest under the retrain that asked for this run
    with mlflow.start_run(run_name=family, tags=tags) as run:
        mlflow.log_params({"seed": params.seed, "family": family, **family_params})
        trained = fit(family, params, run.info.run_id)
        record(family, trained, params, run.info.run_id)


def main() -> None:
    """`python -m pipelines.train FAMILY`."""
    if len(sys.argv) != 2 or sys.argv[1] not in FAMILIES:
        raise SystemExit(f"usage: python -m pipelines.train {{{','.join(FAMILIES)}}}")
    run_stage(functools.partial(train, sys.argv[1]))


if __name__ == "__main__":
    main()
