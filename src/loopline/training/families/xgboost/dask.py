"""XGBoost on a Dask cluster (`train.xgboost.engine: dask`).

The training rows are split into one partition per worker; each worker builds histograms
on its share and XGBoost's collective sums them (Rabit over the cluster), so the trees are
those of one big fit, not an ensemble of small ones. With `train.xgboost.scheduler` unset,
a `LocalCluster` of `dask_workers` single-threaded processes is started for the fit; with
an address (a Dask cluster on Kubernetes, or any `dask scheduler`), the fit runs there.

The fitted booster comes back as a plain `XGBClassifier`, so compiling, registering and
serving do not know which engine trained it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost
import xgboost.dask

from loopline.training.families.xgboost.params import XGBoostParams

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(params: XGBoostParams) -> Iterator[object]:
    """A client of the configured scheduler, or of a local cluster for the block."""
    from distributed import Client, LocalCluster  # noqa: PLC0415

    if params.scheduler:
        with Client(params.scheduler) as client:
            yield client
        return
    with (
        LocalCluster(n_workers=params.dask_workers, threads_per_worker=1, processes=True,
                     dashboard_address=None, silence_logs=logging.WARNING) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        yield client


def _partitioned(x: pd.DataFrame, y: object, parts: int) -> tuple[object, object]:
    """Features and labels as Dask collections cut at the same rows (`parts` shares)."""
    import dask.dataframe as dd  # noqa: PLC0415

    labels = pd.Series(np.asarray(y), index=x.index, name="label")
    return (dd.from_pandas(x, npartitions=parts, sort=False),
            dd.from_pandas(labels, npartitions=parts, sort=False))  # fmt: skip


def fit_on_dask(
    settings: dict,
    params: XGBoostParams,
    train: tuple[pd.DataFrame, object],
    valid: tuple[pd.DataFrame, object],
) -> xgboost.XGBClassifier:
    """Fit `settings` on the cluster with early stopping on `valid`; a local classifier."""
    with dask_client(params) as client:
        workers = len(client.scheduler_info()["workers"])  # type: ignore[attr-defined]
        model = xgboost.dask.DaskXGBClassifier(**settings)
        model.client = client
        x, y = _partitioned(*train, workers)
        vx, vy = _partitioned(*valid, workers)
        model.fit(x, y, eval_set=[(vx, vy)], verbose=False)
        log.info("xgboost on dask: %d workers, best tree %d", workers, model.best_iteration + 1)
        with tempfile.TemporaryDirectory() as scratch:  # the sklearn wrapper's own format
            saved = Path(scratch) / "model.json"
            model.save_model(saved)
            local = xgboost.XGBClassifier()
            local.load_model(saved)
    return local
