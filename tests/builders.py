"""Building real model versions for tests: an estimator compiled, checked and logged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from loopline.data.datasets.base import Dataset
from loopline.scoring.pyfunc import log_model
from loopline.scoring.scorer import MANIFEST_FILE, CompiledScorer, file_sha256
from loopline.training.compile import compile_scorer
from loopline.training.feature_sets import FeatureSets


@dataclass(frozen=True)
class LoggedModel:
    """A compiled scorer logged to MLflow in its own run."""

    uri: str
    run_id: str
    scorer: CompiledScorer


def log_compiled(
    name: str,
    family: str,
    estimator: object,
    *,
    data: FeatureSets,
    dataset: Dataset,
    examples: pd.DataFrame,
    root: Path,
    threshold: float = 0.5,
) -> LoggedModel:
    """Compile `estimator` (checked on the validation features), log it as run `name`.

    `examples` are raw records; a few become the logged model's input example.
    """
    folder = root / "scorers" / name
    scorer = compile_scorer(
        folder, family=family, tables=data.tables, estimator=estimator, threshold=threshold,
        check_features=data.x["valid"],
    )  # fmt: skip
    with mlflow.start_run(run_name=name) as run:
        info = log_model(folder, dataset.contract, examples)
    return LoggedModel(info.model_uri, run.info.run_id, scorer)


def log_failing_copy(
    model_uri: str, dataset: Dataset, examples: pd.DataFrame, root: Path, name: str = "failing"
) -> tuple[str, str]:
    """A copy of a tree model whose featurizer makes one numeric feature fewer than its
    trees were trained on (an export bug): it loads, its digests check out, and every
    request fails to score (a feature-shape mismatch). Its model URI and run id."""
    source = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(root / name)))
    folder = next(p.parent for p in source.rglob(MANIFEST_FILE))
    featurizer = folder / "featurizer.json"
    spec = json.loads(featurizer.read_text())
    for key in ("numeric_inputs", "clip_low", "clip_high", "means", "medians", "scales"):
        spec[key] = spec[key][:-1]
    featurizer.write_text(json.dumps(spec))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"][featurizer.name] = file_sha256(featurizer)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with mlflow.start_run(run_name=name) as run:
        info = log_model(folder, dataset.contract, examples)
    return info.model_uri, run.info.run_id


class NotCompiled(mlflow.pyfunc.PythonModel):
    """A plain pyfunc: registrable, but no compiled scorer, so the service refuses it."""

    def predict(
        self, context: object, model_input: list[object], params: object = None
    ) -> list[object]:
        return model_input
