"""Fixtures for the live service: a registry with two versions, and `bentoml serve`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from loopline.core.params import Params, load_params
from loopline.data.datasets.base import Dataset
from loopline.infra.orchestration import free_port
from loopline.infra.services import bento_service
from loopline.registry.versions import TEST_METRIC_TAG, Registry
from loopline.training.feature_sets import load_feature_sets
from loopline.training.tracking import configure_mlflow, lineage_tags
from loopline.training.train import train_family
from tests.builders import log_compiled
from tests.conftest import fast_params_dict


@dataclass(frozen=True)
class ServingWorld:
    """A project folder whose registry holds v1 (champion, logistic) and v2 (xgboost)."""

    root: Path
    params: Params
    test_records: pd.DataFrame

    def registry(self) -> Registry:
        configure_mlflow(self.params.mlflow, root=self.root)
        return Registry.rooted(self.params.registry, self.root)

    def write_params(self, name: str, **serve: object) -> Path:
        """A params file in `root` with serve settings changed."""
        raw = yaml.safe_load((self.root / "params.yaml").read_text())
        raw["serve"].update(serve)
        path = self.root / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path


@pytest.fixture(scope="session")
def serving_world(
    tmp_path_factory: pytest.TempPathFactory,
    small_features_dir: Path,
    fast_params: Params,
    dataset: Dataset,
) -> ServingWorld:
    root = tmp_path_factory.mktemp("serving")
    raw = fast_params_dict()
    raw["serve"].update({
        "poll_seconds": 1, "prediction_log": "predictions.sqlite", "max_body_bytes": 200_000,
        "max_records_per_request": 100,
    })  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(root / "params.yaml")
    configure_mlflow(params.mlflow, root=root)
    world = ServingWorld(
        root, params, pd.read_parquet(small_features_dir / "examples" / "test.parquet")
    )
    registry = world.registry()
    data = load_feature_sets(small_features_dir)
    examples = pd.read_parquet(small_features_dir / "examples" / "valid.parquet")
    for family in ("logistic", "xgboost"):
        trained = train_family(family, data, fast_params.train, seed=fast_params.seed)
        logged = log_compiled(
            family, family, trained.estimator, data=data, dataset=dataset, examples=examples,
            root=root, threshold=trained.threshold,
        )  # fmt: skip
        test = world.test_records
        tags = lineage_tags(params, ["seed", "dataset", "featurize", "train"], root) | {
            "loopline.family": family,  # as the register stage tags a version
            f"{TEST_METRIC_TAG}roc_auc": str(
                roc_auc_score(test["late"], logged.scorer.score_frame(test)["probability"])
            ),
        }
        version = registry.register(logged.uri, logged.run_id, tags)
        if family == "logistic":
            registry.force_promote(version, "test setup")
    return world


@contextlib.contextmanager
def bento_server(params_file: Path, tmp: Path, **env: str) -> Iterator[str]:
    """`bentoml serve` of the project's service on a free loopback port, until the block ends."""
    port = free_port()
    with bento_service(
        params_file, "127.0.0.1", port, tmp / f"bentoml-{port}.log",
        BENTOML_HOME=str(tmp / "bentoml"), **env,
    ) as url:  # fmt: skip
        yield url
