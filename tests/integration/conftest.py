"""Fixtures for the live service: a registry with two versions, and `bentoml serve`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from loopline.core import tags
from loopline.core.params import Params
from loopline.data.datasets.base import Dataset
from loopline.infra import processes
from loopline.infra.processes import Processes, free_port
from loopline.registry.versions import Registry
from loopline.training.families import family_params
from loopline.training.feature_sets import load_feature_sets
from loopline.training.tracking import lineage_tags
from loopline.training.train import train_family
from loopline.workspace import Workspace
from tests.builders import log_compiled
from tests.conftest import fast_params_dict


@dataclass(frozen=True)
class ServingWorld:
    """A project folder whose registry holds v1 (champion, logistic) and v2 (xgboost)."""

    root: Path
    params: Params
    test_records: pd.DataFrame

    def workspace(self) -> Workspace:
        """A fresh workspace of the world's params file (its stores opened anew)."""
        return Workspace.load(self.root / "params.yaml")

    def registry(self) -> Registry:
        return self.workspace().registry

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
    workspace = Workspace.load(root / "params.yaml")
    world = ServingWorld(
        root, workspace.params, pd.read_parquet(small_features_dir / "examples" / "test.parquet")
    )
    registry = workspace.registry
    data = load_feature_sets(small_features_dir)
    examples = pd.read_parquet(small_features_dir / "examples" / "valid.parquet")
    for family in ("logistic", "xgboost"):
        section = family_params(fast_params, family)
        trained = train_family(family, data, section, seed=fast_params.seed)
        logged = log_compiled(
            family, family, trained.estimator, data=data, dataset=dataset, examples=examples,
            root=root, threshold=trained.threshold,
        )  # fmt: skip
        test = world.test_records
        version_tags = lineage_tags(workspace, ["seed", "dataset", "featurize", "train"]) | {
            tags.FAMILY: family,  # as the register stage tags a version
            f"{tags.TEST_METRIC}roc_auc": str(
                roc_auc_score(test["late"], logged.scorer.score_frame(test)["probability"])
            ),
        }
        version = registry.register(logged.uri, logged.run_id, version_tags)
        if family == "logistic":
            registry.force_promote(version, "test setup")
    return world


@contextlib.contextmanager
def bento_server(
    params_file: Path, tmp: Path, python: Path | None = None, **env: str
) -> Iterator[str]:
    """`bentoml serve` of the project's service on a free loopback port, until the block ends.

    `python`: another environment's interpreter to serve with (this one's by default).
    """
    port = free_port()
    service = processes.bentoml_service(
        params_file, "127.0.0.1", port, tmp / f"bentoml-{port}.log",
        BENTOML_HOME=str(tmp / "bentoml"), **env,
    )  # fmt: skip
    if python is not None:
        service = dataclasses.replace(service, command=[str(python), *service.command[1:]])
    with Processes() as running:
        yield running.start(service)
