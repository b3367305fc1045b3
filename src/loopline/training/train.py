"""Training a model family: fit, pick the validation threshold, compile the scorer.

The classic families train in-process. The MLP trains under `torchrun` (one process per
GPU, or N gloo processes on CPU) running `loopline.training.families.mlp.ddp`; only its rank 0
writes a checkpoint, which is then wrapped like any other estimator. Every family ends
as a compiled scorer (`loopline.scoring`), checked against the trained estimator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.params import MLPParams, TrainParams
from loopline.scoring.scorer import CompiledScorer, compile_scorer
from loopline.training.families import hist_gb, logistic
from loopline.training.families import xgboost as xgb
from loopline.training.families.mlp.network import MLPClassifier
from loopline.training.feature_sets import FeatureSets
from loopline.training.metrics import choose_threshold, classification_metrics

log = logging.getLogger(__name__)

CLASSIC: dict[str, Callable] = {
    "logistic": logistic.train,
    "hist_gb": hist_gb.train,
    "xgboost": xgb.train,
}
FAMILIES = (*CLASSIC, "mlp")
STABLE_INFO = ("best_epoch", "epochs_run")  # what training reports that a rerun repeats


@dataclass(frozen=True)
class TrainedFamily:
    """A trained candidate with what its training measured."""

    family: str
    estimator: Any
    threshold: float
    valid_metrics: dict[str, float]
    stats: dict[str, float]
    info: dict

    def compile(self, data: FeatureSets, out: Path) -> CompiledScorer:
        """Write the compiled scorer to `out`, checked against the estimator on validation."""
        return compile_scorer(
            out, family=self.family, tables=data.tables, estimator=self.estimator,
            threshold=self.threshold, check_features=data.x["valid"], info=self.info,
        )  # fmt: skip


def train_family(
    family: str,
    data: FeatureSets,
    params: TrainParams,
    *,
    seed: int,
    mlp_run: Callable[[MLPParams], tuple[MLPClassifier, dict]] | None = None,
) -> TrainedFamily:
    """Train one family and finish it: validation threshold and metrics.

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
    stats = {  # timings vary run to run: MLflow keeps them, DVC-tracked metrics do not
        "train_seconds": round(seconds, 3),
        "train_rows_per_s": round(rows / seconds, 1),
        "train_rows": rows,
    }
    info = {"family": family, **{k: v for k, v in extra.items() if k in STABLE_INFO}}
    log.info(
        "%s: valid roc_auc %.4f pr_auc %.4f in %.1f s",
        family,
        valid_metrics["roc_auc"],
        valid_metrics["pr_auc"],
        seconds,
    )
    return TrainedFamily(
        family=family, estimator=estimator, threshold=float(threshold),
        valid_metrics=valid_metrics, stats=stats | _throughput(extra), info=info,
    )  # fmt: skip


def is_timing(stat: str) -> bool:
    """Whether a training stat is a measured time or rate (it varies between reruns)."""
    return stat.endswith(("_seconds", "_per_s", "_fraction"))


def _throughput(extra: dict) -> dict:
    return {
        f"ddp_{k}": v for k, v in extra.get("throughput", {}).items() if isinstance(v, int | float)
    }
