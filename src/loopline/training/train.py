"""Training a model family: fit, pick the validation threshold, measure, compile.

Every family trains the same way here, whatever it is (`loopline.training.families`):
fit on the training split, choose the decision threshold that maximises F1 on the
validation split, and report the validation metrics and what the fit cost. The MLP fits
under `torchrun` in processes of its own; the others in this one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.scoring.scorer import CompiledScorer
from loopline.training.compile import compile_scorer
from loopline.training.families import TrainContext, get_family
from loopline.training.feature_sets import FeatureSets
from loopline.training.metrics import choose_threshold, classification_metrics

log = logging.getLogger(__name__)
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
    params: Any,
    *,
    seed: int,
    context: TrainContext | None = None,
) -> TrainedFamily:
    """Train one family with its `params` section and finish it: threshold and metrics.

    `context` carries what a distributed family needs (the feature files, the MLflow run
    its processes report to); the others need only the seed.
    """
    registered = get_family(family)
    started = time.perf_counter()
    fitted = registered.train(data, params, context or TrainContext(seed=seed))
    seconds = time.perf_counter() - started
    valid_proba = fitted.estimator.predict_proba(data.x["valid"])[:, 1]
    threshold = choose_threshold(data.y["valid"], valid_proba)
    valid_metrics = classification_metrics(data.y["valid"], valid_proba, threshold)
    rows = len(data.y["train"])
    stats = {  # timings vary run to run: MLflow keeps them, DVC-tracked metrics do not
        "train_seconds": round(seconds, 3),
        "train_rows_per_s": round(rows / seconds, 1),
        "train_rows": rows,
    }
    info = {"family": family, **{k: v for k, v in fitted.report.items() if k in STABLE_INFO}}
    log.info(
        "%s: valid roc_auc %.4f pr_auc %.4f in %.1f s",
        family, valid_metrics["roc_auc"], valid_metrics["pr_auc"], seconds,
    )  # fmt: skip
    return TrainedFamily(
        family=family, estimator=fitted.estimator, threshold=float(threshold),
        valid_metrics=valid_metrics, stats=stats | _throughput(fitted.report), info=info,
    )  # fmt: skip


def is_timing(stat: str) -> bool:
    """Whether a training stat is a measured time or rate (it varies between reruns)."""
    return stat.endswith(("_seconds", "_per_s", "_fraction"))


def _throughput(report: dict) -> dict:
    return {
        f"ddp_{k}": v for k, v in report.get("throughput", {}).items() if isinstance(v, int | float)
    }
