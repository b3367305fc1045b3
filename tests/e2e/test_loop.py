"""The closed loop, end to end on a slice, under the project's own promotion rule: traffic
drift in the replayed weeks makes the monitor ask for a retrain; the Prefect automation
starts the retrain deployment; the retrain, judged on days neither model has seen, beats
the champion and is promoted; the running service serves it. Then two triggers at once:
the deployment runs one retrain at a time, and the user's checkout stays untouched."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.cli.servers import team_servers
from loopline.core.params import load_params
from loopline.data.time_axis import ReplayOptions
from loopline.infra import processes
from loopline.infra.processes import Processes, free_port
from loopline.loop.replay import Replay
from loopline.loop.report import write_report
from loopline.workspace import Workspace
from pipelines.monitor import monitor
from tests.conftest import fast_params_dict, make_project, run_in_project, tool_env

# The first test of each profile sets up a project, runs dvc repro, replays four weeks and
# waits for three retrains: 6 to 9 minutes on 2 cores, close to the suite's 900 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
MELTDOWN = (dt.date(2013, 5, 15), dt.date(2013, 7, 14))  # one carrier's arrivals collapse
MELTDOWN_CARRIER, MELTDOWN_MINUTES = "EV", 120
LOOP_FAMILIES = ["logistic", "xgboost"]
DRIFT_FROM = dt.date(2013, 7, 1)
DRIFT_UNTIL = dt.date(2013, 9, 1)  # past the replayed weeks; not into late December, where
# the weather table (it ends 2013-12-30) has no evening hours for moved flights to find


def _with_drift_from_july(tables: dict) -> dict:
    """From July, the schedule changes: late-evening departures, twice the distance.

    The change is a consistent one, as a real schedule change would be (the data gate
    checks that the columns agree): the scheduled hour and `time_hour` move with the
    departure, and each flight keeps its delay, so its actual departure moves too.
    """
    flights = tables["flights"].copy()
    dates = pd.to_datetime(flights[["year", "month", "day"]])
    later = (dates.dt.date >= DRIFT_FROM) & (dates.dt.date < DRIFT_UNTIL)
    flights.loc[later, "sched_dep_time"] = 2250
    flights.loc[later, "hour"], flights.loc[later, "minute"] = 22, 50
    local_hour = (dates[later] + pd.Timedelta(hours=22)).dt.tz_localize("America/New_York")
    flights.loc[later, "time_hour"] = local_hour.dt.tz_convert("UTC").dt.tz_localize(None)
    departed = (22 * 60 + 50 + flights.loc[later, "dep_delay"]) % 1440  # minutes after 00:00
    clock = (departed // 60) * 100 + departed % 60
    flights.loc[later, "dep_time"] = clock.where(clock != 0, 2400)  # the source's midnight
    flights.loc[later, "distance"] = (flights.loc[later, "distance"] * 2 + 500).clip(upper=5000)
    return {**tables, "flights": flights}


def _with_an_arrival_meltdown(tables: dict) -> dict:
    """From mid-May to mid-July, one carrier's flights all arrive two hours later.

    A change in what makes a flight late (concept drift) that the first champion, trained
    on January to April, cannot know, and that a retrain on the newest labels can learn:
    a fresh model that truly beats it. After the meltdown ends, a retrain that learned
    it is stale from the start: a retrain that does not beat its champion. Arrival time
    moves with the delay, as the data gate checks.
    """
    flights = tables["flights"].copy()
    dates = pd.to_datetime(flights[["year", "month", "day"]]).dt.date
    hit = (
        (flights["carrier"] == MELTDOWN_CARRIER)
        & (dates >= MELTDOWN[0]) & (dates <= MELTDOWN[1]) & flights["arr_delay"].notna()
    )  # fmt: skip
    flights.loc[hit, "arr_delay"] += MELTDOWN_MINUTES
    arrived = flights.loc[hit, "arr_time"]
    minutes = ((arrived // 100) * 60 + arrived % 100 + MELTDOWN_MINUTES) % 1440
    clock = (minutes // 60) * 100 + minutes % 60
    flights.loc[hit, "arr_time"] = clock.where(clock != 0, 2400)
    return {**tables, "flights": flights}


@dataclass(frozen=True)
class Setup:
    """A test project and where its loop runs: its own files, or the team servers."""

    project: Path
    params_file: Path  # params.yaml, or the team file pointed at the servers
    api_url: str
    work_pool: str | None  # team mode: retrains run on the pool's worker

    def configure_mlflow(self) -> None:
        Workspace.load(self.params_file).configure_tracking()


@pytest.fixture(scope="module", params=["embedded", "team"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, small_tables: dict
) -> Iterator[Setup]:
    """The project after `dvc repro` and a commit, in either profile. Team: PostgreSQL
    from the wheel, MLflow and Prefect servers on it, a worker, the Evidently service."""
    raw = fast_params_dict()  # the registry section is the project's own rule, unchanged
    raw["monitor"].update({"k": 1, "n": 1, "cooldown_days": 30, "min_batch_rows": 50})
    # The loop is about the monitor, the automation and the gate, not the families (every
    # family is trained in test_dvc_repro): two of them keep the ten pipeline runs short.
    raw["evaluate"]["candidates"] = LOOP_FAMILIES
    raw["serve"].update({"poll_seconds": 1})
    raw["team"]["ports"] = dict.fromkeys(raw["team"]["ports"], 0)  # free ports
    project = make_project(
        tmp_path_factory.mktemp(f"loop-{request.param}"),
        _with_an_arrival_meltdown(_with_drift_from_july(small_tables)),
        raw,
    )
    with contextlib.ExitStack() as stack:
        if request.param == "team":
            servers = stack.enter_context(team_servers(project / "params.yaml"))
            found = Setup(
                project, servers.params_file, servers.prefect_api, raw["team"]["work_pool"]
            )
        else:
            api_url = request.getfixturevalue("prefect_api")
            found = Setup(project, project / "params.yaml", api_url, None)
        run_in_project(project, found.api_url, sys.executable, "-m", "dvc", "repro",
                       LOOPLINE_PARAMS=str(found.params_file))  # fmt: skip
        run_in_project(project, found.api_url, "git", "add", "-A")  # the user commits the result
        run_in_project(project, found.api_url, "git", "commit", "-q", "-m", "pipeline run")
        yield found


@pytest.fixture(scope="module")
def project(setup: Setup) -> Path:
    return setup.project


@pytest.fixture(scope="module")
def loop(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four replayed weeks with the service and the deployments up, then two retrain
    triggers fired at once (the weekly schedule and a manual run, say)."""
    tmp = tmp_path_factory.mktemp("loop-run")
    params_file, api_url = setup.params_file, setup.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), Processes() as running:
            url = running.start(processes.bentoml_service(
                params_file, "127.0.0.1", free_port(), tmp / "service.log",
                BENTOML_HOME=str(tmp / "bento"),
            ))  # fmt: skip
            if setup.work_pool is None:  # team mode: the pool's workers run the deployments
                running.start(
                    processes.deployment_runner(params_file, api_url, tmp / "deployments.log")
                )
            replay = Replay(Workspace.load(params_file), url, api_url, monitor)
            story = replay.play(ReplayOptions(DRIFT_FROM, dt.date(2013, 7, 28), step="14d"))
            runs = [
                run_deployment(
                    "retrain/loopline-retrain",
                    timeout=0,
                    parameters={
                        "labeled_until": "2013-07-28",
                        "reason": reason,
                        "params_path": str(params_file),
                    },
                )
                for reason in ("schedule", "manual")
            ]
            finished = [_wait_until_final(run.id) for run in runs]
    finally:
        # Prefect's event and log workers are one per process, bound to the API they first
        # sent to: flush them to this profile's server (it is still up) and let the next
        # profile start new ones, else its monitor's retrain event goes to this server and
        # never fires. Also after a failure, so that it stays this profile's own.
        EventsWorker.drain_all(timeout=30)
        APILogWorker.drain_all(timeout=30)
    return {"story": story, "triggered_at_once": finished, "tmp": tmp}


def _wait_until_final(flow_run_id: object, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                states = client.read_flow_run_states(flow_run_id)
                return {"run": run, "state_names": [state.name for state in states]}
            time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout_s} s")


def _ledger(setup: Setup) -> list[dict]:
    return Workspace.load(setup.params_file).registry.ledger.entries()


def test_drift_retrains_and_the_fresh_model_wins_under_the_real_rule(
    setup: Setup, loop: dict
) -> None:
    story = loop["story"]
    first, second = story["periods"]
    assert first["flagged_because"][0].startswith("traffic drift"), first
    assert first["triggered"]
    retrain = first["retrain"]
    assert retrain["state"] == "COMPLETED", retrain
    assert (retrain["champion_before"], retrain["champion_after"]) == ("1", "2"), retrain
    assert second["served_versions"] == {"2": second["rows"]}  # the service swapped by itself
    assert not second["triggered"]  # still drifted, but within the cooldown
    assert "cooldown" in second["decision"]

    decision = next(e for e in _ledger(setup) if e["version"] == "2")
    assert decision["action"] == "promote"
    assert decision["faced"] == decision["previous_champion"] == "1"
    checks = "\n".join(decision["checks"])
    # judged on the retrain's test days (the newest labels), which neither model has used
    assert "PASS window: 2013-07-01..2013-07-14" in checks, checks
    assert decision["difference"]["difference"] >= load_params(setup.params_file).registry.margin
    assert retrain["decision"]["window"].startswith("2013-07-01..2013-07-14")

    setup.configure_mlflow()
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`loopline.retrain.outcome` = 'promote'"
    )
    assert len(runs) == 1
    assert "traffic drift" in runs.iloc[0]["tags.loopline.retrain.reason"]
    paths = write_report(story, loop["tmp"] / "report")
    assert all(path.is_file() for path in paths.values())
    assert "2013-07-01..2013-07-14" in paths["html"].read_text()


def test_two_triggers_at_once_retrain_once_and_the_second_says_why(
    setup: Setup, loop: dict
) -> None:
    """The deployment's concurrency limit queues the second run until the first is done;
    it then finds no labels the first has not used, and ends without retraining."""
    first, second = sorted(loop["triggered_at_once"], key=lambda f: f["run"].start_time)
    assert first["run"].state.is_completed(), first["state_names"]
    assert second["run"].state.is_completed(), second["state_names"]
    assert "AwaitingConcurrencySlot" in second["state_names"], second["state_names"]
    assert second["run"].start_time >= first["run"].end_time  # never two at once
    setup.configure_mlflow()
    retrains = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.run_name LIKE 'retrain-2013-07-28%'"
    )
    assert len(retrains) == 1  # one retrain for the labels up to 2013-07-28


def test_a_retrain_that_does_not_beat_the_champion_is_rejected(setup: Setup, loop: dict) -> None:
    decision = next(e for e in _ledger(setup) if e["version"] == "3")
    assert decision["action"] == "reject", decision
    assert decision["faced"] == "2"
    # trained on the meltdown, judged after it ended: no better than the floor allows
    assert any(c.startswith("FAIL floors") for c in decision["checks"]), decision
    assert "PASS window: 2013-07-15..2013-07-28" in "\n".join(decision["checks"])
    assert decision["champion"] == "2"


def test_retrains_leave_the_checkout_untouched(project: Path, loop: dict) -> None:
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    assert status == "", status
    experiments = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--all-commits", "--name-only"],
        cwd=project, capture_output=True, text=True, check=True, env=tool_env(),
    ).stdout  # fmt: skip
    assert experiments.count("retrain-") == 2, experiments  # the record of each retrain
