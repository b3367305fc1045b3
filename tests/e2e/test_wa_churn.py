"""The second dataset end to end, on a slice: wa_churn through the whole DAG as the README
runs it (`loopline run --params params.wa_churn.yaml`), then served by the same service."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from loopline.config import Params, load_params
from loopline.datasets import get_dataset
from loopline.io import read_json
from loopline.registry import CHAMPION, Registry
from loopline.scoring.registered import load_version
from loopline.tracking import configure_mlflow
from tests.conftest import churn_params_dict, churn_slice, make_project, run_in_project
from tests.integration.conftest import bento_server

pytestmark = pytest.mark.slow

PARAMS = "params.wa_churn.yaml"
FAMILIES = ("logistic", "hist_gb", "xgboost", "mlp")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    tables = churn_slice(get_dataset("wa_churn").materialize())
    project = make_project(tmp_path_factory.mktemp("churn"), tables, churn_params_dict(), PARAMS)
    output = run_in_project(project, prefect_api, "loopline", "run", "--params", PARAMS)
    for stage in ("validate", "featurize", *(f"train {f}" for f in FAMILIES), "evaluate"):
        assert f"pipelines.{stage}  (stage" in output, output[-3000:]
    assert "pipelines.register  (stage register)" in output
    return project


@pytest.fixture(scope="module")
def params(project: Path) -> Params:
    return load_params(project / PARAMS)


def _registry(project: Path, params: Params) -> Registry:
    configure_mlflow(params.mlflow, root=project)
    return Registry.rooted(params.registry, project)


def test_every_family_is_trained_and_scored_on_the_held_out_customers(
    project: Path, params: Params
) -> None:
    results = read_json(project / params.paths.metrics / "evaluate.json")
    assert sorted(results) == sorted(FAMILIES)
    for family, metrics in results.items():
        assert metrics["roc_auc"] > 0.75, (family, metrics)  # churn is well predictable
    splits = read_json(project / params.paths.metrics / "featurize.json")["splits"]
    assert [splits[s]["rows"] for s in ("train", "valid", "test")] == [1761, 528, 528]
    for split in splits.values():  # stratified: the slice's churn rate in every split
        assert split["positive_rate"] == pytest.approx(0.2709, abs=0.0005)
        assert "first_day" not in split  # no time column, no dates


def test_the_winner_is_promoted_with_a_churn_model_card(project: Path, params: Params) -> None:
    registry = _registry(project, params)
    assert registry.alias_version(CHAMPION) == "1"
    decision = registry.ledger.entries()[0]
    assert decision["action"] == "promote"
    assert "held-out test split, 528 rows" in json.dumps(decision)
    card = (project / params.registry.cards / "loopline-churn-v1.md").read_text()
    assert "**Predicts:** churn." in card
    assert "churned rate" in card
    assert "flight" not in card.lower()


def test_the_flights_pipeline_is_left_as_it_was(project: Path) -> None:
    """Another dataset writes only under its own paths: dvc.lock and the tree stay clean."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=project, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert status == ""


@pytest.fixture(scope="module")
def server(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with bento_server(project / PARAMS, tmp_path_factory.mktemp("bento")) as url:
        yield url


def test_the_service_answers_churn_records_with_the_schema_of_their_contract(
    server: str, project: Path, params: Params
) -> None:
    dataset = get_dataset("wa_churn")
    columns = dataset.record_columns()
    test = pd.read_parquet(project / params.paths.features / "examples" / "test.parquet")
    records = json.loads(test[columns].head(50).to_json(orient="records"))
    response = httpx.post(f"{server}/predict", json={"records": records}, timeout=60)
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert {p["model_name"] for p in served} == {"loopline-churn"}
    offline = load_version(_registry(project, params), "1").scorer.score_frame(test.head(50))
    np.testing.assert_allclose([p["probability"] for p in served], offline["probability"])

    schema = httpx.get(f"{server}/metadata").json()["input_schema"]
    assert set(schema["properties"]) == set(columns)
    assert schema["title"] == "CustomerRecord"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contract": "Three year"}, "contract"),  # not an allowed value
        ({"tenure": 400}, "tenure"),  # out of the contract's range
        ({"year": 2013}, "year"),  # a flights field: unknown here
    ],
)
def test_the_service_refuses_records_that_break_the_churn_contract(
    server: str, project: Path, params: Params, change: dict, field: str
) -> None:
    test = pd.read_parquet(project / params.paths.features / "examples" / "test.parquet")
    record = json.loads(test[get_dataset("wa_churn").record_columns()].head(1).to_json(
        orient="records"
    ))[0] | change  # fmt: skip
    response = httpx.post(f"{server}/predict", json={"records": [record]}, timeout=60)
    assert response.status_code == 400
    assert field in json.dumps(response.json()["details"])
