"""Benchmark: training throughput of every model family, from 10% to 100% of the data.

For each fraction of the training window (a seeded random subset; validation unchanged)
every family is trained exactly as the train stage does it, in one session. Throughput is
training rows per second of fit time (for the MLP: rows processed per second over all
epochs, from its own timer, under torchrun). The MLP is also trained with 1 and 2 DDP
processes on the full data to compare speed and quality.
Run from the project root after `make run`:  .venv/bin/python bench/train_throughput.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.training.families import families, family_params
from loopline.training.families.mlp.launch import train_mlp
from loopline.training.feature_sets import load_feature_sets
from loopline.training.train import train_family
from loopline.workspace import FeaturizeLayout, Workspace

FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def subset_features(
    source: FeaturizeLayout, fraction: float, seed: int, destination: FeaturizeLayout
) -> None:
    """A copy of the featurize outputs with only `fraction` of the training rows."""
    destination.features("train").parent.mkdir(parents=True)
    train = pd.read_parquet(source.features("train"))
    keep = np.random.default_rng(seed).random(len(train)) < fraction
    train[keep].reset_index(drop=True).to_parquet(destination.features("train"))
    for split in ("valid", "test"):
        shutil.copy(source.features(split), destination.features(split))
    shutil.copy(source.featurizer, destination.featurizer)


def main() -> None:
    """Print a JSON table of rows/s per family and fraction, plus the DDP comparison."""
    workspace = Workspace.load()
    params = workspace.params
    classic = [name for name, family in families().items() if not family.distributed]
    mlp = family_params(params, "mlp")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for fraction in FRACTIONS:
            folder = Path(scratch) / f"f{fraction}"
            subset_features(workspace.layout, fraction, params.seed, FeaturizeLayout(folder))
            data = load_feature_sets(folder)
            for family in classic:
                section = family_params(params, family)
                started = time.perf_counter()
                train_family(family, data, section, seed=params.seed)
                seconds = time.perf_counter() - started
                rows.append(
                    {
                        "family": family,
                        "fraction": fraction,
                        "train_rows": len(data.y["train"]),
                        "fit_s": round(seconds, 2),
                        "rows_per_s": round(len(data.y["train"]) / seconds),
                    }
                )
            estimator, meta = train_mlp(folder, folder / "mlp", mlp, params.seed, env={})
            t = meta["throughput"]
            rows.append(
                {
                    "family": "mlp",
                    "fraction": fraction,
                    "train_rows": len(data.y["train"]),
                    "fit_s": round(t["train_seconds"], 2),
                    "rows_per_s": round(t["train_rows_per_s"]),
                    "epochs": meta["epochs_run"],
                }
            )
        ddp = []
        features = workspace.layout.folder
        data = load_feature_sets(features)
        for processes in (1, 2):
            settings = mlp.model_copy(update={"nproc_per_node": processes})
            out = Path(scratch) / f"ddp{processes}"
            estimator, meta = train_mlp(features, out, settings, params.seed, env={})
            metrics = {s: data.scores(estimator, s) for s in ("valid", "test")}
            timing = {k: round(v, 4) for k, v in meta["throughput"].items() if isinstance(v, float)}
            quality = {f"{s}_{m}": metrics[s][m] for s in metrics for m in ("roc_auc", "log_loss")}
            epochs = {"epochs": meta["epochs_run"], "best_epoch": meta["best_epoch"]}
            ddp.append({"processes": processes, **epochs, **timing, **quality})
    print(json.dumps({"throughput": rows, "ddp": ddp, "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
