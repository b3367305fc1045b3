"""The closed loop, end to end on a slice: traffic drift in the replayed weeks makes the
monitor ask for a retrain; the Prefect automation starts the retrain deployment; the
retrained model is promoted by the register stage; the running service serves it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.config import load_params
from loopline.orchestration import free_port
from loopline.replay import Replay, write_report
from loopline.services import bento_service, deployment_runner
from loopline.tracking import configure_mlflow
from tests.conftest import fast_params_dict, make_project, tool_env

pytestmark = pytest.mark.slow
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


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, small_tables: dict, prefect_api: str) -> Path:
    raw = fast_params_dict()
    raw["monitor"].update({"k": 1, "n": 1, "cooldown_days": 30, "min_batch_rows": 50})
    raw["registry"].update(
        {
            "margin": -1.0,
            "floors": {"roc_auc": 0.5},
            "min_pr_auc_lift": 1.0,
            "slice_max_regression": 1.0,
        }
    )
    raw["serve"].update({"poll_seconds": 1})
    project = make_project(
        tmp_path_factory.mktemp("loop"), _with_drift_from_july(small_tables), raw
    )
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=project,
        env=tool_env(PREFECT_API_URL=prefect_api), capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


def test_drift_retrains_through_the_automation_and_the_service_serves_the_new_champion(
    project: Path, prefect_api: str, tmp_path: Path
) -> None:
    params_file = project / "params.yaml"
    logs = tmp_path / "logs"
    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_api}),
        bento_service(
            params_file,
            "127.0.0.1",
            free_port(),
            logs / "service.log",
            BENTOML_HOME=str(tmp_path / "bento"),
        ) as url,
        deployment_runner(params_file, prefect_api, logs / "deployments.log"),
    ):
        story = Replay(params_file, url, prefect_api).run(DRIFT_FROM, dt.date(2013, 7, 28), 14)
    first, second = story["periods"]
    assert first["flagged_because"][0].startswith("traffic drift"), first
    assert first["triggered"]
    retrain = first["retrain"]
    assert retrain["state"] == "COMPLETED", retrain
    assert retrain["promoted"]
    assert (retrain["champion_before"], retrain["champion_after"]) == ("1", "2")
    assert second["served_versions"] == {"2": second["flights"]}  # the service swapped by itself
    assert not second["triggered"]  # still drifted, but within the cooldown
    assert "cooldown" in second["decision"]
    assert story["final_champion"] == "2"

    configure_mlflow(load_params(params_file).mlflow, root=project)
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`loopline.retrain.outcome` = 'promote'"
    )
    assert len(runs) == 1
    assert "traffic drift" in runs.iloc[0]["tags.loopline.retrain.reason"]

    paths = write_report(story, tmp_path / "report")
    assert all(path.is_file() for path in paths.values())
