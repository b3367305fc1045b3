"""`loopline up --profile team`: real servers on loopback, each healthy, all stopped after."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import mlflow
import psutil
import psycopg
import pytest
import yaml

from loopline.core.params import load_params
from loopline.infra.database import database_url
from loopline.infra.postgres import libpq
from loopline.monitoring.dashboard import open_project
from loopline.monitoring.drift import MonitoredColumns
from loopline.workspace import Workspace
from tests.conftest import ROOT, tool_env

pytestmark = pytest.mark.slow
READY = "Ctrl-C stops them all."


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`loopline up --profile team` for a params file in a fresh folder, on free ports."""
    root = tmp_path_factory.mktemp("team")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["team"]["ports"] = dict.fromkeys(raw["team"]["ports"], 0)
    raw["team"]["workers"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    output = root / "up.log"
    with output.open("w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "loopline.cli", "up", "--profile", "team"],
            cwd=root, env=tool_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while READY not in output.read_text():
            assert up.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, output.read_text()[-3000:]
            time.sleep(1)
        children = psutil.Process(up.pid).children(recursive=True)
        yield {"root": root, "up": up, "output": output.read_text(), "children": children}
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=120)


def test_every_server_answers_its_health_check(team: dict) -> None:
    lines = {line.split()[0]: line for line in team["output"].splitlines() if line[:2] == "  "}
    assert lines["postgres"].split()[1] == "accepting", lines
    for server in ("prefect", "mlflow", "evidently"):
        assert lines[server].split()[1] == "200", lines
    assert "2 online in pool loopline" in lines["workers"]
    assert "3 deployments in work pool loopline" in lines["deployments"]


def test_the_team_params_file_differs_only_in_where_things_live(team: dict) -> None:
    source = yaml.safe_load((team["root"] / "params.yaml").read_text())
    written = yaml.safe_load((team["root"] / "params.team.yaml").read_text())
    changed = {
        (section, key)
        for section, values in source.items() if isinstance(values, dict)
        for key, value in values.items() if written[section][key] != value
    }  # fmt: skip
    assert changed == {
        ("mlflow", "tracking_uri"), ("serve", "prediction_log"), ("monitor", "state"),
        ("registry", "ledger"),
        ("monitor", "workspace"), ("prefect", "api_url"), ("prefect", "work_pool"),
    }  # fmt: skip
    assert load_params(team["root"] / "params.team.yaml").prefect.work_pool == "loopline"


def test_runs_log_over_http_into_postgresql_and_the_shared_artifact_store(team: dict) -> None:
    workspace = Workspace.load(team["root"] / "params.team.yaml")
    params = workspace.params
    assert params.mlflow.tracking_uri.startswith("http://127.0.0.1:")
    workspace.configure_tracking()
    with mlflow.start_run() as run:
        mlflow.log_metric("roc_auc", 0.75)
        mlflow.log_text("shared", "note.txt")
    artifacts = team["root"] / params.team.artifacts
    assert [p.name for p in artifacts.rglob("note.txt")] == ["note.txt"]
    url = database_url(params.serve.prediction_log)
    with psycopg.connect(libpq(url.set(database="mlflow"))) as db:
        stored = db.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert stored.fetchone() == ("FINISHED",)


def test_the_monitor_pushes_to_the_evidently_service(team: dict) -> None:
    workspace = Workspace.load(team["root"] / "params.team.yaml")
    params, dataset = workspace.params, workspace.dataset
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    _, project = open_project(params.monitor.workspace, "team-test", columns, dataset.wording)
    _, again = open_project(params.monitor.workspace, "team-test", columns, dataset.wording)
    assert again.id == project.id  # found, not created twice
    dashboard = httpx.get(f"{params.monitor.workspace}/api/v2/dashboards/{project.id}").json()
    (tab,) = dashboard["tabs"]
    assert len(tab["panels"]) == len(set(tab["panels"])) > 5
    assert not (team["root"] / "monitoring").exists()  # nothing written locally


def test_ctrl_c_stops_every_server(team: dict) -> None:
    """Runs last: after SIGINT, `up` exits and none of the processes it started is left."""
    team["up"].send_signal(signal.SIGINT)
    assert team["up"].wait(timeout=120) == 0
    time.sleep(1)
    alive = [p for p in team["children"] if p.is_running() and p.status() != "zombie"]
    assert alive == [], [p.cmdline() for p in alive]
