"""The one way to load a registered model version: its compiled scorer, never its pickle.

A version's MLflow model folder is downloaded as plain files; only the compiled scorer
inside it (`artifacts/scorer/`, see `loopline.scoring.scorer`) is read. MLflow's own
loader is never called, so a version whose files would run code on load (a pickled
python_model, a cloudpickled function) is refused with ScorerError and nothing runs.
The service, the monitor, the replay and the promotion gate all load versions here.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from loopline.core import tags as tag
from loopline.registry.versions import Registry
from loopline.scoring.formats import ScorerError
from loopline.scoring.scorer import CompiledScorer, load_scorer

SCORER_ARTIFACT = "scorer"  # the pyfunc artifact that holds the compiled scorer


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, loaded and ready to score raw records."""

    name: str
    version: str
    alias: str
    scorer: CompiledScorer
    tags: dict[str, str]
    loaded_at: str
    size_mb: float  # the whole MLflow model folder on disk

    def describe(self) -> dict[str, Any]:
        """What /metadata shows about this model."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "family": self.scorer.family,
            "loaded_at": self.loaded_at,
            "training_data_md5": self.tags.get(tag.DATA_MD5),
            "train_window": self.tags.get(tag.window("train")),
            "git_commit": self.tags.get(tag.GIT_COMMIT),
            "test_metrics": {
                key.removeprefix(tag.TEST_METRIC): value
                for key, value in self.tags.items()
                if key.startswith(tag.TEST_METRIC)
            },
        }


def scorer_folder(model_dir: Path) -> Path:
    """Where a downloaded MLflow model keeps its compiled scorer (read from MLmodel, as YAML)."""
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ScorerError("the model has no MLmodel file: it is not an MLflow model")
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function")
    artifacts = (flavor or {}).get("artifacts") or {}
    if SCORER_ARTIFACT not in artifacts:
        raise ScorerError(
            "the model carries no compiled scorer (no 'scorer' artifact): it was not logged "
            "by Loopline's train stage, and its pickled parts will not be loaded"
        )
    return model_dir / artifacts[SCORER_ARTIFACT]["path"]


def load_version(
    registry: Registry, version: str, alias: str = "", threads: int | None = None
) -> LoadedModel:
    """Download a version's files and load its compiled scorer (and tags)."""
    where = f"{registry.name} version {version}"
    with tempfile.TemporaryDirectory(prefix="loopline-model-") as scratch:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=registry.model_uri(version), dst_path=scratch
            )
            tags = dict(registry.client.get_model_version(registry.name, version).tags)
        except MlflowException as error:
            raise ScorerError(f"{where} cannot be fetched: {error.message}") from None
        try:
            scorer = load_scorer(scorer_folder(Path(local)), threads)
        except ScorerError as error:
            raise ScorerError(f"refusing {where}: {error}") from None
        size = sum(p.stat().st_size for p in Path(local).rglob("*") if p.is_file())
    return LoadedModel(
        name=registry.name, version=version, alias=alias, scorer=scorer, tags=tags,
        loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), size_mb=size / 1e6,
    )  # fmt: skip
