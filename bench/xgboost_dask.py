"""Benchmark: XGBoost in one process vs on a Dask cluster, on a training set 10x the real one.

The real training window (109,119 flights) is enlarged to `--scale` times its size by
drawing real rows with replacement (seeded) and adding noise to every numeric feature:
Gaussian, with a standard deviation of 5% of that feature's own spread in the real
window; categorical codes are kept as drawn. Validation stays the real May window.

Each fit runs in a fresh process with the project's XGBoost settings (early stopping on
validation), so peak memory is its own:
* `local`: `train.xgboost.engine: local` (one process, all cores);
* `dask`: `engine: dask` against a LocalCluster of `--workers` single-threaded worker
  processes started here; reported: the fit's wall time (and the cluster's start), the
  RSS of each worker before the fit (its imports) and its peak, and the peak of the
  client process that held the pandas frames.

Run from the project root after `make run`:  .venv/bin/python bench/xgboost_dask.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.scoring.features import FeatureTables
from loopline.training.families import family_params
from loopline.training.feature_sets import load_feature_sets
from loopline.training.train import train_family
from loopline.workspace import FeaturizeLayout, Workspace

NOISE = 0.05  # noise std as a share of each numeric feature's std in the real window


def enlarge(source: FeaturizeLayout, scale: int, seed: int, destination: FeaturizeLayout) -> int:
    """Featurize outputs with the training rows resampled to `scale`x, plus noise."""
    destination.features("train").parent.mkdir(parents=True)
    train = pd.read_parquet(source.features("train"))
    rng = np.random.default_rng(seed)
    big = train.iloc[rng.integers(0, len(train), len(train) * scale)].reset_index(drop=True)
    tables = FeatureTables.read(source.featurizer)
    numeric = [c for c in tables.feature_names if c not in tables.cardinalities]
    for column in numeric:
        spread = float(train[column].std()) or 1.0
        noisy = big[column].to_numpy(dtype="float64") + rng.normal(0, NOISE * spread, len(big))
        big[column] = noisy.astype(big[column].dtype) if big[column].dtype.kind == "f" else noisy
    big.to_parquet(destination.features("train"), index=False)
    for split in ("valid", "test"):
        shutil.copy(source.features(split), destination.features(split))
    shutil.copy(source.featurizer, destination.featurizer)
    return len(big)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    import psutil  # noqa: PLC0415

    return psutil.Process().memory_info().rss / 2**20


def fit(engine: str, features: Path, workers: int) -> dict:
    """One fit in this process; its time, quality and memory."""
    params = Workspace.load().params
    data = load_feature_sets(features)
    settings = family_params(params, "xgboost").model_copy(update={"engine": engine})
    result: dict = {"engine": engine, "train_rows": len(data.y["train"])}
    cluster = None
    if engine == "dask":
        from distributed import Client, LocalCluster  # noqa: PLC0415

        started = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        result["cluster_start_s"] = round(time.perf_counter() - started, 1)
        with Client(cluster) as client:  # what a worker holds before any data: imports
            result["worker_idle_mib"] = sorted(round(v) for v in client.run(_rss_mib).values())
        settings = settings.model_copy(update={"scheduler": cluster.scheduler_address})
    started = time.perf_counter()
    trained = train_family("xgboost", data, settings, seed=params.seed)
    result["fit_s"] = round(time.perf_counter() - started, 1)
    result["valid_roc_auc"] = trained.valid_metrics["roc_auc"]
    result["trees"] = int(trained.estimator.named_steps["classify"].best_iteration) + 1
    result["client_peak_mib"] = round(_peak_mib())
    if cluster is not None:
        with Client(cluster) as client:
            peaks = client.run(_peak_mib)
        result["worker_peak_mib"] = sorted(round(v) for v in peaks.values())
        cluster.close()
    return result


def main() -> None:
    """Enlarge the data, fit with each engine in its own process, print a JSON table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fit", choices=["local", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--features", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit:
        print(json.dumps(fit(args.fit, args.features, args.workers)))
        return
    workspace = Workspace.load()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        rows = enlarge(
            workspace.layout, args.scale, workspace.params.seed, FeaturizeLayout(Path(scratch))
        )
        for engine in ("local", "dask"):
            done = subprocess.run(
                [sys.executable, __file__, "--fit", engine, "--features", scratch,
                 "--workers", str(args.workers)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({"train_rows": rows, "scale": args.scale, "cpus": os.cpu_count(),
                      "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
