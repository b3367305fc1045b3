"""A version's drift reference, when it is logged with it: a sample of its training split.

A dataset placed by days finds a version's training data again from its train-window
tag. One placed by arrival has no window to find it by (a split by fractions or by key),
so the register stage logs a sample of the training split with the version's run, and
the monitor reads it back from there: the same MLflow store that holds the model, local
or a tracking server. Which one a dataset uses is its time axis's choice.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException

from loopline.core.errors import LooplineError
from loopline.registry.versions import Registry

REFERENCE_DIR = "reference"
REFERENCE_FILE = "training_sample.parquet"


def log_reference(client: MlflowClient, run_id: str, sample: pd.DataFrame) -> int:
    """Log a sample of training examples with the run; returns how many rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / REFERENCE_FILE
        sample.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), artifact_path=REFERENCE_DIR)
    return len(sample)


def logged_reference(registry: Registry, version: str) -> pd.DataFrame:
    """The training sample logged with `version`'s run by the register stage."""
    run_id = registry.client.get_model_version(registry.name, version).run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifacts(
                run_id=run_id, artifact_path=f"{REFERENCE_DIR}/{REFERENCE_FILE}", dst_path=tmp
            )
            return pd.read_parquet(path)
    except (MlflowException, OSError) as error:
        raise LooplineError(
            f"version {version} has no {REFERENCE_DIR}/{REFERENCE_FILE} logged with run "
            f"{run_id} (the register stage logs it): no drift reference ({error})"
        ) from None
