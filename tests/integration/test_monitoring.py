"""The monitor flow on real batches: Evidently drift, the retrain rule, the Prefect event."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.core.params import load_params
from loopline.data import columns as cols
from loopline.data.datasets.base import Dataset, write_tables
from loopline.monitoring.figures import KIND
from loopline.monitoring.records import BatchOutcome
from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace
from pipelines.monitor import RETRAIN_EVENT, monitor
from tests.integration.conftest import ServingWorld

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(serving_world: ServingWorld, small_tables: dict, dataset: Dataset) -> dict:
    """The serving world's registry, plus raw data and its own log and monitor state."""
    root = serving_world.root
    if not (root / "data").exists():
        write_tables(small_tables, root / "data")
    params_file = serving_world.write_params(
        "params-monitor.yaml", prediction_log="monitored.sqlite"
    )
    raw = load_params(params_file)
    monitor_params = raw.monitor.model_copy(update={"min_batch_rows": 100})
    text = params_file.read_text().replace("min_batch_rows: 500", "min_batch_rows: 100")
    params_file.write_text(text.replace("min_day_rows: 50", "min_day_rows: 20"))  # the slice
    registry = serving_world.registry()
    version = registry.alias_version(CHAMPION)
    model = load_version(registry, version).scorer
    examples = dataset.build_examples(small_tables, raw.dataset)
    workspace = Workspace.load(params_file)
    assert Path(workspace.params.serve.prediction_log) == root.resolve() / "monitored.sqlite"
    log = workspace.prediction_log
    return {"params_file": params_file, "examples": examples, "model": model, "version": version,
            "log": log, "root": root, "monitor": monitor_params,
            "workspace": workspace}  # fmt: skip


def _log_scored(world: dict, dataset: Dataset, batch: pd.DataFrame) -> None:
    """What the service does for each request, done offline: score, log, then labels."""
    scored = world["model"].score_frame(batch)
    days = world["workspace"].axis.event_days(cols.from_frame(batch, dataset.record_fields()))
    rows = []
    for record, probability, label, day in zip(
        batch[dataset.record_columns()].to_dict("records"),
        scored["probability"],
        scored["label"],
        days,
        strict=True,
    ):
        clean = {k: (None if pd.isna(v) else v) for k, v in record.items()}
        rows.append(clean | {"probability": float(probability), "label": int(label),
                             "model_name": "m", "model_version": world["version"],
                             "prediction_id": uuid.uuid4().hex, "request_id": "test",
                             "logged_at": "t", "event_day": day})  # fmt: skip
    world["log"].append(rows)
    world["log"].deliver_labels(batch, delivered_at="t")


def _window(examples: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    days = examples["scheduled_departure"].dt.date
    return examples[(days >= dt.date.fromisoformat(first)) & (days <= dt.date.fromisoformat(last))]


def _drifted(batch: pd.DataFrame) -> pd.DataFrame:
    """The same flights, rescheduled: late evening, to San Francisco.

    (Every flight moved to one carrier or airport would be a data-quality incident, a
    carrier "gone", not drift: see the feed test below. Each origin keeps one distance to
    SFO, as the contract's route rule wants: 2013's EWR-SFO and JFK-SFO, and LGA's.)
    """
    to_sfo = batch["origin"].map({"EWR": 2565, "JFK": 2586, "LGA": 2580})
    return batch.assign(sched_dep_time=2245, sched_arr_time=2355, dest="SFO", distance=to_sfo)


def test_the_month_after_the_training_window_does_not_trigger(
    world: dict, dataset: Dataset, prefect_api: str, full_tables: dict, tmp_path: Path
) -> None:
    """May: real traffic the champion never trained on (January to April), the month
    right after, at production size: every flight against a 20,000-flight reference. (The
    slice would not do: a 1-in-25 sample of any later month drifts on `dest` by sampling
    noise alone; its February, inside the training window, could not show a false alarm;
    and a single week's ROC-AUC swings by +-0.05 with the weather, in April as in May.)"""
    training = load_params(world["params_file"]).featurize.split.train
    first, last = dt.date(2013, 5, 1), dt.date(2013, 5, 31)
    assert training.end < first
    raw = yaml.safe_load(world["params_file"].read_text())
    write_tables(full_tables, tmp_path / "data")
    raw["paths"]["data"] = str(tmp_path / "data")
    raw["serve"]["prediction_log"] = str(tmp_path / "predictions.sqlite")
    raw["monitor"].update({name: str(tmp_path / name) for name in ("workspace", "reports")})
    raw["monitor"]["state"] = str(tmp_path / "state" / "monitor.sqlite")
    params_file = world["root"] / "params-full-month.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    examples = dataset.build_examples(full_tables, load_params(params_file).dataset)
    log = Workspace.load(params_file).prediction_log
    assert Path(log.url.database) == (tmp_path / "predictions.sqlite").resolve()
    _log_scored(world | {"log": log}, dataset, _window(examples, str(first), str(last)))
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        result = monitor(first_day=first, last_day=last, params_path=params_file)
    assert result["outcome"]["rows"] > 25000
    assert not result["trigger"]
    assert result["flagged_because"] == [], result["outcome"]
    assert result["outcome"]["drift_share"] <= world["monitor"].drift_share_limit
    assert Path(result["report"]).is_file()


def test_injected_drift_is_flagged_and_the_second_drifted_batch_triggers(
    world: dict, dataset: Dataset, prefect_api: str
) -> None:
    store = Workspace.load(world["params_file"]).monitor_state
    results = []
    for first, last in (("2013-06-01", "2013-06-15"), ("2013-06-16", "2013-06-30")):
        _log_scored(world, dataset, _drifted(_window(world["examples"], first, last)))
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
            results.append(
                monitor(
                    first_day=dt.date.fromisoformat(first),
                    last_day=dt.date.fromisoformat(last),
                    params_path=world["params_file"],
                )
            )
    first_result, second_result = results
    assert first_result["flagged_because"][0].startswith("traffic drift")
    assert {"sched_dep_time", "dest", "distance"} <= set(first_result["outcome"]["drifted_columns"])
    assert not first_result["trigger"]  # one flagged batch is a blip, not a trend
    assert second_result["trigger"], second_result["reason"]
    assert store.last_trigger_end() == dt.date(2013, 6, 30).isoformat()
    assert _event_reached_prefect(prefect_api, second_result["decision_id"])


def test_a_period_is_the_merge_of_its_batches_profiles(world: dict) -> None:
    """June's two drifted halves, as `loopline drift` reads them: merged, not read again."""
    halves = [
        BatchOutcome.from_dict(b) for b in world["workspace"].monitor_state.history(10)
        if b["first_day"] in ("2013-06-01", "2013-06-16")
    ]  # fmt: skip
    assert len(halves) == 2
    command = [sys.executable, "-m", "loopline.cli", "drift", "--params", str(world["params_file"]),
               "--since", "2013-05-31", "--until", "2013-06-30"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"2 batches, {sum(h.rows for h in halves)} predictions")
    drifted = {line.split()[0] for line in lines[1:] if line.endswith("DRIFTED")}
    assert {"sched_dep_time", "dest", "distance"} <= drifted
    empty = subprocess.run([*command[:-4], "--since", "2014-01-01"], capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert empty.returncode == 1
    assert "no measured batch ends in (2014-01-01, now]" in empty.stderr


def test_the_dashboard_plots_the_figures_that_decided(world: dict) -> None:
    """June's halves on the drift and quality tabs: the whole batch's numbers, not the sample's.

    What `evidently ui` does for a panel: one series query over the project's snapshots.
    """
    from evidently.ui.service.base import SeriesFilter  # noqa: PLC0415 - heavy import
    from evidently.ui.service.storage.local import create_local_project_manager  # noqa: PLC0415
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace  # noqa: PLC0415

    workspace = world["workspace"]
    monitor_params = workspace.params.monitor
    halves = {
        b["last_day"]: BatchOutcome.from_dict(b) for b in workspace.monitor_state.history(10)
        if b["first_day"] in ("2013-06-01", "2013-06-16")
    }  # fmt: skip
    assert len(halves) == 2
    project = EvidentlyWorkspace(monitor_params.workspace).search_project(monitor_params.project)[0]
    storage = create_local_project_manager(monitor_params.workspace, autorefresh=False).data_storage

    def plotted(figure: str, column: str | None = None) -> dict[str, float]:
        labels = {"figure": figure} | ({"column": column} if column else {})
        wanted = SeriesFilter(metric=f"evidently:metric_v2:{KIND}", tags=[], metadata={},
                              metric_labels=labels)  # fmt: skip
        found = asyncio.run(storage.get_data_series(project.id, [wanted], None, None))
        points = zip(found.sources, found.series[0].values, strict=True)
        return {source.timestamp.date().isoformat(): value for source, value in points}

    for last_day, outcome in halves.items():
        named, drift = outcome.figures()
        assert plotted("drift_share")[last_day] == outcome.drift_share
        assert plotted("rows")[last_day] == outcome.rows
        assert plotted("roc_auc")[last_day] == named["roc_auc"]
        assert plotted("drift", "distance")[last_day] == drift["distance"]


def test_a_broken_feed_is_an_incident_not_drift_and_never_triggers(
    world: dict, dataset: Dataset, prefect_api: str
) -> None:
    """Weather missing for every flight of a day, in an otherwise drifted batch."""
    batch = _drifted(_window(world["examples"], "2013-08-01", "2013-08-14"))
    outage = batch["scheduled_departure"].dt.date == dt.date(2013, 8, 6)
    weather = ["temp", "dewp", "humid", "wind_speed", "precip", "visib"]
    batch.loc[outage, weather] = float("nan")
    _log_scored(world, dataset, batch)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        result = monitor(
            first_day=dt.date(2013, 8, 1), last_day=dt.date(2013, 8, 14),
            params_path=world["params_file"],
        )  # fmt: skip
    assert len(result["incidents"]) == 1
    assert result["incidents"][0].startswith(f"feed outage on 2013-08-06: {', '.join(weather)}")
    assert not result["trigger"]
    assert result["reason"].startswith("data-quality incident, drift not judged: feed outage")
    assert result["flagged_because"] == []  # drifted, but not counted toward a retrain
    assert result["outcome"]["drift_share"] > world["monitor"].drift_share_limit
    store = Workspace.load(world["params_file"]).monitor_state
    stored = BatchOutcome.from_dict(store.history(1)[0])
    assert [str(incident) for incident in stored.incidents] == result["incidents"]


def _event_reached_prefect(api: str, decision_id: str, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{api}/events/filter",
            json={"filter": {"event": {"name": [RETRAIN_EVENT]}}},
            timeout=10,
        )
        if any(
            e["payload"].get("decision_id") == decision_id
            for e in response.json().get("events", [])
        ):
            return True
        time.sleep(1)
    return False
