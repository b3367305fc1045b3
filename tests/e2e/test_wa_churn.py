"""The second dataset end to end, on a slice: wa_churn through the whole DAG as the README
runs it (`loopline run --params params.wa_churn.yaml`), then through the loop by arrival
(no time column): the left-out customers arrive sorted by tenure, longest first (a shift
scenario), the monitor cuts batches by arrival time, drift asks for a retrain, and the
retrain is judged on the newest labeled arrivals. Then the service's schema and answers."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.core import tags
from loopline.core.io import read_json
from loopline.core.params import Params, load_params
from loopline.data.datasets import get_dataset
from loopline.data.time_axis import ReplayOptions
from loopline.infra import processes
from loopline.infra.processes import Processes
from loopline.loop.replay import Replay
from loopline.loop.report import write_report
from loopline.monitoring.records import BatchOutcome
from loopline.registry.versions import CHALLENGER, CHAMPION, Registry
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace
from pipelines.monitor import monitor
from pipelines.retrain import retrain
from tests.conftest import (
    churn_params_dict,
    churn_slice,
    make_project,
    prefect_server_for,
    run_in_project,
)
from tests.integration.conftest import bento_server

pytestmark = pytest.mark.slow

PARAMS = "params.wa_churn.yaml"
FAMILIES = ("logistic", "hist_gb", "xgboost", "lightgbm", "mlp")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own Prefect server: its loop must not see another test's retrain.

    On the session's server, a retrain that the loop test's automation started after its
    runner stopped stays in progress, and the monitor here rightly holds every trigger.
    """
    yield from prefect_server_for(tmp_path_factory.mktemp("churn-prefect"))


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
    return Workspace.load(project / PARAMS).registry


def _newest_judged_arrival(workspace: Workspace) -> str | None:
    """The newest arrival the latest registered version was judged on."""
    registry = workspace.registry
    test_window = registry.tag(registry.alias_version(CHALLENGER), tags.window("test"))
    return workspace.axis.judged_until(test_window)


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


ARRIVALS_PER_BATCH = 175  # the slice leaves 705 customers out: 4 batches and 5 left over


@pytest.fixture(scope="module")
def loop(
    project: Path, params: Params, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """The replay by arrival with the service and the deployments up; then a retrain asked
    again for labels the first retrain already judged on."""
    tmp = tmp_path_factory.mktemp("churn-loop")
    params_file = project / PARAMS
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: prefect_api}),
            bento_server(params_file, tmp) as url,
            Processes() as running,
        ):
            running.start(
                processes.deployment_runner(params_file, prefect_api, tmp / "deployments.log")
            )
            workspace = Workspace.load(params_file)
            options = ReplayOptions(
                step=str(ARRIVALS_PER_BATCH), arrive_by="tenure", descending=True
            )
            story = Replay(workspace, url, prefect_api, monitor).play(options)
            judged = _newest_judged_arrival(Workspace.load(params_file))
            again = retrain(labeled_until=judged, reason="manual", params_path=params_file)
    finally:
        EventsWorker.drain_all(timeout=30)  # as in test_loop: leave no worker bound here
        APILogWorker.drain_all(timeout=30)
    return {"story": story, "again": again, "judged": judged, "tmp": tmp}


def test_drift_in_arrivals_asks_for_a_retrain_judged_on_the_newest_arrivals(
    project: Path, params: Params, loop: dict
) -> None:
    first, second, third, fourth, leftover = loop["story"]["periods"]
    assert [p["rows"] for p in loop["story"]["periods"]] == [175, 175, 175, 175, 5]
    assert first["flagged_because"][0].startswith("traffic drift"), first
    assert "tenure" in first["drifted_columns"]
    assert not first["triggered"]  # k = 2: one flagged batch is a blip
    assert second["triggered"], second
    retrain = second["retrain"]
    assert retrain["state"] == "COMPLETED", retrain
    assert retrain["registered_version"] == "2"
    decision = next(e for e in _registry(project, params).ledger.entries() if e["version"] == "2")
    assert decision["faced"] == "1"
    assert decision["action"] in {"promote", "reject"}
    tags = _registry(project, params).client.get_model_version("loopline-churn", "2").tags
    span = tags["loopline.test_window"].removeprefix("arrivals ")  # first..last arrival
    assert decision["window"] == f"newest labeled arrivals {span}, 300 rows"
    assert span.split("..")[1] == loop["judged"]
    assert any(c.startswith("PASS window") for c in decision["checks"]), decision["checks"]
    for since, period in ((1, third), (2, fourth)):  # cooldown_batches = 3
        assert not period["triggered"], period
        if period["flagged_because"]:  # with the second, k of n: only the cooldown holds it
            assert period["decision"].startswith(
                f"cooldown: last retrain was asked {since} batches ago (< 3)"
            ), period
    assert not leftover["triggered"]  # 5 rows: too few to judge, were its data sound
    measured = Workspace.load(project / PARAMS).monitor_state.history(limit=100)
    rows = sum(BatchOutcome.from_dict(b).rows for b in measured)
    assert rows == 705  # by arrival: every customer measured once
    served = "2" if retrain["promoted"] else "1"
    assert third["served_versions"] == {served: 175}  # a promotion is served at once


def test_the_retrain_learned_from_the_older_arrivals_and_the_first_split(
    project: Path, params: Params, loop: dict
) -> None:
    Workspace.load(project / PARAMS).configure_tracking()
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`loopline.retrain.outcome` != ''"
    )
    assert len(runs) == 1
    windows = runs.iloc[0]["tags.loopline.retrain.windows"]
    # 2,817 of the first split plus the 50 oldest arrivals; the 300 newest are the test
    assert "test the newest 300 labeled arrivals" in windows, windows
    train, valid = (
        int(n.replace(",", "")) for n in re.findall(r"(?:train|valid) ([\d,]+)", windows)
    )
    assert train + valid == 1761 + 528 + 528 + 50
    assert "traffic drift" in runs.iloc[0]["tags.loopline.retrain.reason"]


def test_a_retrain_asked_again_for_the_same_labels_says_why_it_does_not_run(loop: dict) -> None:
    assert loop["again"] == {
        "retrained": False,
        "reason": f"no labeled arrivals after {loop['judged']}, the newest a version was judged on",
    }


def test_the_replay_report_names_the_arrival_order(loop: dict) -> None:
    paths = write_report(loop["story"], loop["tmp"] / "report")
    html = paths["html"].read_text()
    assert "705 customers by tenure descending, 175 per batch" in html
    assert paths["png"].stat().st_size > 10_000


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
    registry = _registry(project, params)  # the loop above may have promoted a retrain
    champion = registry.alias_version(CHAMPION)
    offline = load_version(registry, champion).scorer.score_frame(test.head(50))
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
