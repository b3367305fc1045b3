"""`loopline up --profile team`: real servers on loopback, each healthy, all stopped after."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import mlflow
import psutil
import psycopg
import pytest
import yaml

from loopline.core.params import load_params
from loopline.infra.database import database_url
from loopline.infra.postgres import libpq
from loopline.infra.processes import STATE_FILE, online_workers
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
    assert "5 deployments in work pool loopline" in lines["deployments"]


def test_the_team_params_file_differs_only_in_where_things_live(team: dict) -> None:
    source = yaml.safe_load((team["root"] / "params.yaml").read_text())
    written = yaml.safe_load((team["root"] / "params.team.yaml").read_text())
    changed = {
        (section, key)
        for section, values in source.items() if isinstance(values, dict)
        for key, value in values.items() if written[section][key] != value
    }  # fmt: skip
    assert changed == {
        ("mlflow", "tracking_uri"), ("serve", "prediction_log"), ("jobs", "store"),
        ("monitor", "state"), ("registry", "ledger"),
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


# -- faults: what dies comes back, and a run whose worker died is marked crashed -------------

SLEEPY = """from prefect import flow
import time


@flow(name="sleepy")
def sleepy() -> None:
    time.sleep(900)
"""


def _servers(team: dict) -> dict[str, dict]:
    return json.loads((team["root"] / "team" / "control" / STATE_FILE).read_text())["servers"]


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Seconds until `condition()` is true (AssertionError naming `what` past the limit)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.5)
    return time.monotonic() - started


def _output(team: dict) -> str:
    return (team["root"] / "up.log").read_text()


def _prefect(team: dict, code: str) -> str:
    """Run Prefect client code against the team's server, in the team folder; its last line."""
    api_url = load_params(team["root"] / "params.team.yaml").prefect.api_url
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=team["root"], env=tool_env(PREFECT_API_URL=api_url),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]  # what the code printed last


def _sleepy_run(team: dict, *, wait: bool = True) -> str:
    """A run of a flow that sleeps, on the team's pool, one at a time (a concurrency limit
    of 1, as the retrain deployment has); its id, once it is Running if `wait`."""
    (team["root"] / "sleepy.py").write_text(SLEEPY)
    run_id = _prefect(team, (
        "from prefect import flow; from prefect.deployments import run_deployment; "
        f"flow.from_source(source={str(team['root'])!r}, entrypoint='sleepy.py:sleepy').deploy("
        "name='sleepy', work_pool_name='loopline', build=False, print_next_steps=False, "
        "concurrency_limit=1); print(run_deployment('sleepy/sleepy', timeout=0).id)"
    ))  # fmt: skip
    if wait:
        _wait(lambda: _state(team, run_id) == "RUNNING", 120, "the sleepy run starting")
    return run_id


def _state(team: dict, run_id: str) -> str:
    api_url = load_params(team["root"] / "params.team.yaml").prefect.api_url
    return httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()["state_type"]


def _flow_run_processes(team: dict, run_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["environ"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["environ"] or {}).get("PREFECT__FLOW_RUN_ID") == run_id:
                found.append(process)
    return found


def test_a_killed_postgres_is_reported_restarted_and_its_clients_recover(team: dict) -> None:
    before = _servers(team)["postgres"]
    os.kill(before["pid"], signal.SIGKILL)
    back = _wait(lambda: "postgres up again" in _output(team), 120, "postgres restarted")
    assert "postgres exited with code -9" in _output(team)
    assert _servers(team)["postgres"]["pid"] != before["pid"]
    params = load_params(team["root"] / "params.team.yaml")
    for health in (f"{params.prefect.api_url}/health", f"{params.mlflow.tracking_uri}/health"):
        _wait(lambda url=health: httpx.get(url, timeout=5).status_code == 200, 120, health)
    url = database_url(params.serve.prediction_log)
    with psycopg.connect(libpq(url)) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)
    print(f"postgres SIGKILLed: up again {back:.1f} s later")  # noqa: T201 - the closing note


def test_a_killed_prefect_server_comes_back_and_its_workers_reconnect(team: dict) -> None:
    before = _servers(team)["prefect"]
    os.killpg(before["pid"], signal.SIGKILL)  # the server and its own subprocesses
    back = _wait(lambda: "prefect up again" in _output(team), 180, "prefect restarted")
    api_url = load_params(team["root"] / "params.team.yaml").prefect.api_url
    online = _wait(lambda: len(online_workers(api_url, "loopline")) == 2, 180, "workers online")
    print(f"prefect SIGKILLed: up again {back:.1f} s later, both workers online {online:.1f} s "  # noqa: T201
          "after that")  # fmt: skip


def test_one_server_restarts_alone_on_request(team: dict) -> None:
    before = _servers(team)
    restarted = subprocess.run(
        [sys.executable, "-m", "loopline.cli", "restart", "mlflow"], cwd=team["root"],
        env=tool_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert restarted.stdout.startswith("mlflow restarted in")
    after = _servers(team)
    assert after["mlflow"]["pid"] != before["mlflow"]["pid"]
    unchanged = {key for key in before if key != "mlflow"}
    assert {key for key in unchanged if after[key]["pid"] == before[key]["pid"]} == unchanged
    print(restarted.stdout.strip())  # noqa: T201 - the closing note


def test_a_run_whose_worker_died_is_marked_crashed_and_the_next_one_runs(team: dict) -> None:
    run_id = _sleepy_run(team)
    waiting = _sleepy_run(team, wait=False)  # held back by the limit while the first runs
    time.sleep(5)  # the first run's first heartbeat is out
    assert _state(team, waiting) == "SCHEDULED"
    workers = {k: s for k, s in _servers(team).items() if k.startswith("loopline-worker")}
    (worker,) = [k for k, s in workers.items() if any(
        p.pid in {q.pid for q in _flow_run_processes(team, run_id)}
        for p in psutil.Process(s["pid"]).children(recursive=True))]  # fmt: skip
    for process in [psutil.Process(workers[worker]["pid"]), *_flow_run_processes(team, run_id)]:
        process.kill()  # the worker and its flow run, as if their machine died
    killed = time.monotonic()
    _wait(lambda: f"{worker} up again" in _output(team), 120, "the worker restarted")
    _wait(lambda: _state(team, run_id) == "CRASHED", 240, "the run marked crashed")
    crashed = time.monotonic() - killed
    _wait(lambda: _state(team, waiting) == "RUNNING", 120, "the next run starting")
    print(f"worker SIGKILLed: run marked CRASHED {crashed:.0f} s later; the run waiting for "  # noqa: T201
          f"its slot started {time.monotonic() - killed:.0f} s after the kill")  # fmt: skip
    team["sleepy"] = waiting  # still running: the Ctrl-C test stops it


def test_ctrl_c_stops_every_server_and_their_flow_runs(team: dict) -> None:
    """Runs last: after SIGINT, `up` exits and none of the processes it started is left."""
    run_id = team.get("sleepy") or _sleepy_run(team)
    flow_runs = _flow_run_processes(team, run_id)
    assert flow_runs
    started = psutil.Process(team["up"].pid).children(recursive=True)  # restarted ones too
    team["up"].send_signal(signal.SIGINT)
    assert team["up"].wait(timeout=120) == 0
    time.sleep(1)
    alive = [
        p
        for p in [*team["children"], *started, *flow_runs]
        if p.is_running() and p.status() != "zombie"
    ]
    assert alive == [], [p.cmdline() for p in alive]
