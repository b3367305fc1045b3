"""Training a model family: fit, pick the validation threshold, wrap as a LooplineModel.

The classic families train in-process. The MLP trains under `torchrun` (one process per
GPU, or N gloo processes on CPU) running `loopline.models.mlp_train`; only its rank 0
writes a checkpoint, which is then wrapped like any other estimator.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from loopline.config import MLPParams, TrainParams
from loopline.errors import LooplineError
from loopline.evaluation import choose_threshold, classification_metrics
from loopline.models import hist_gb, logistic, xgb
from loopline.models.base import FeatureSets, LooplineModel, assemble
from loopline.models.mlp import MLPClassifier, MLPShape

log = logging.getLogger(__name__)

CLASSIC: dict[str, Callable] = {
    "logistic": logistic.train,
    "hist_gb": hist_gb.train,
    "xgboost": xgb.train,
}
FAMILIES = (*CLASSIC, "mlp")


@dataclass(frozen=True)
class TrainedFamily:
    """A trained candidate with what its training measured."""

    model: LooplineModel
    valid_metrics: dict[str, float]
    stats: dict[str, float]


def torchrun_command(features_dir: Path, out_dir: Path, params: MLPParams, seed: int) -> list[str]:
    """The torchrun invocation for `params` (standalone rendezvous on a single node)."""
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={params.nproc_per_node}",
    ]
    if params.nnodes == 1:
        launcher.append("--standalone")  # picks a free local port: no clash between runs
    else:
        launcher += [
            f"--nnodes={params.nnodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={params.rdzv_endpoint}",
        ]
    script = [
        "-m",
        "loopline.models.mlp_train",
        "--features",
        str(features_dir),
        "--out",
        str(out_dir),
    ]
    return [*launcher, *script, "--params", params.model_dump_json(), "--seed", str(seed)]


def train_mlp(
    features_dir: Path, out_dir: Path, params: MLPParams, seed: int, env: Mapping[str, str]
) -> tuple[MLPClassifier, dict]:
    """Run DDP training under torchrun; return the estimator and its checkpoint's metadata."""
    command = torchrun_command(features_dir, out_dir, params, seed)
    log.info("launching: %s", " ".join(command[:8]) + " ...")
    result = subprocess.run(command, env={**os.environ, **env}, check=False)
    checkpoint_path = out_dir / "checkpoint.pt"
    if result.returncode != 0 or not checkpoint_path.is_file():
        raise LooplineError(f"torchrun exited with {result.returncode}; see the log above")
    checkpoint = torch.load(checkpoint_path, weights_only=False)  # our own file, just written
    shape = MLPShape(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["shape"].items()}
    )
    estimator = MLPClassifier(shape, checkpoint["state"], logit_offset=checkpoint["logit_offset"])
    meta = {k: checkpoint[k] for k in ("best_epoch", "epochs_run", "history", "throughput")}
    return estimator, meta


def train_family(
    family: str,
    data: FeatureSets,
    params: TrainParams,
    *,
    seed: int,
    record_columns: list[str],
    mlp_run: Callable[[MLPParams], tuple[MLPClassifier, dict]] | None = None,
) -> TrainedFamily:
    """Train one family and finish it: validation threshold, metrics, LooplineModel.

    `mlp_run` launches the distributed MLP training (injected so the flow controls the
    subprocess, its output folder and the MLflow run it reports to).
    """
    if family not in FAMILIES:
        raise LooplineError(f"unknown model family {family!r}; choose one of {FAMILIES}")
    started = time.perf_counter()
    extra: dict = {}
    if family == "mlp":
        if mlp_run is None:
            raise LooplineError("the mlp family needs a torchrun launcher")
        estimator, extra = mlp_run(params.mlp)
    else:
        estimator = CLASSIC[family](data, getattr(params, family), seed)
    seconds = time.perf_counter() - started
    valid_proba = estimator.predict_proba(data.x["valid"])[:, 1]
    threshold = choose_threshold(data.y["valid"], valid_proba)
    valid_metrics = classification_metrics(data.y["valid"], valid_proba, threshold)
    rows = len(data.y["train"])
    stats = {
        "train_seconds": round(seconds, 3),
        "train_rows_per_s": round(rows / seconds, 1),
        "train_rows": rows,
    }
    info = {"family": family, **{k: v for k, v in extra.items() if k != "history"}}
    model = assemble(
        family,
        data.featurizer,
        estimator,
        threshold=threshold,
        record_columns=record_columns,
        info=info,
    )
    log.info(
        "%s: valid roc_auc %.4f pr_auc %.4f in %.1f s",
        family,
        valid_metrics["roc_auc"],
        valid_metrics["pr_auc"],
        seconds,
    )
    return TrainedFamily(model=model, valid_metrics=valid_metrics, stats=stats | _throughput(extra))


def _throughput(extra: dict) -> dict:
    return {
        f"ddp_{k}": v for k, v in extra.get("throughput", {}).items() if isinstance(v, int | float)
    }
