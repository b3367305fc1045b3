"""The drift dashboard is created by code: its tabs, its panels, each drawn once."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from loopline.data.datasets.base import Dataset
from loopline.data.time_axis import EVENT_DAY, Batch
from loopline.infra.prediction_log import Selection
from loopline.monitoring.dashboard import (
    CANARY_TAB,
    CANARY_TAG,
    DATA_TAB,
    DRIFT_TAB,
    QUALITY_TAB,
    open_project,
)
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.experiment import look_snapshot
from loopline.monitoring.snapshot import load_evidently
from loopline.registry.canary import Canary


def _columns(dataset: Dataset) -> MonitoredColumns:
    return MonitoredColumns.from_contract(dataset.contract, dataset.target_column)


def test_new_project_has_its_tabs_with_each_panel_once(tmp_path: Path, dataset: Dataset) -> None:
    _, project = open_project(
        str(tmp_path / "ws"), "loopline-test", _columns(dataset), dataset.wording
    )

    layout = project.dashboard.model()
    tabs = {tab.title: tab.panels for tab in layout.tabs}
    assert {title: len(panels) for title, panels in tabs.items()} == {
        DRIFT_TAB: 3,
        QUALITY_TAB: 3,
        DATA_TAB: 2,
        CANARY_TAB: 6,
    }
    assert all(len(panels) == len(set(panels)) for panels in tabs.values())
    titles = {panel.id: panel.title for panel in layout.panels}
    assert titles[tabs[DRIFT_TAB][0]] == "Traffic drift share"
    assert titles[tabs[DATA_TAB][0]] == "Missing values: share of the batch"
    assert titles[tabs[CANARY_TAB][0]].startswith("Canary: loss difference")
    assert len(layout.panels) == 14


def test_reopening_returns_the_same_project_without_new_panels(
    tmp_path: Path, dataset: Dataset
) -> None:
    columns = _columns(dataset)
    _, first = open_project(str(tmp_path / "ws"), "loopline-test", columns, dataset.wording)
    ws, again = open_project(str(tmp_path / "ws"), "loopline-test", columns, dataset.wording)

    assert again.id == first.id
    assert len(ws.search_project("loopline-test")) == 1
    assert len(again.dashboard.model().panels) == 14


LOOK = {
    "action": "canary-step", "mean_difference": -0.012, "interval": [-0.02, -0.004],
    "pairs": 4000, "share": 0.25, "traffic_until": "2013-07-28",
    "roc_auc": {"champion": 0.70, "canary": 0.73}, "mean_loss": {"champion": 0.5,
                                                                 "canary": None},
    "guardrails": {"routed_share": 0.24, "error_rate": 0.0,
                   "p99_ms": {"champion": 0.4, "canary": 0.5}},
}  # fmt: skip
CANARY = Canary("8", "7", 1, 0.25, "2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00")


def test_a_canary_look_is_one_snapshot_of_its_numbers_for_the_canary_tab() -> None:
    snapshot = look_snapshot(CANARY, LOOK)
    values = {m["config"]["column"]: m["value"] for m in snapshot.dict()["metrics"]}
    assert values == pytest.approx(
        {
            "difference": -0.012,
            "low": -0.02,
            "high": -0.004,
            "pairs": 4000,
            "share": 0.25,
            "routed_share": 0.24,
            "error_rate": 0.0,
            "champion_roc_auc": 0.70,
            "canary_roc_auc": 0.73,
            "champion_loss": 0.5,
            "champion_p99_ms": 0.4,
            "canary_p99_ms": 0.5,
        }
    )  # fmt: skip  (a number the look did not have is left out)
    stored = snapshot.to_snapshot_model()
    assert stored.tags == [CANARY_TAG]
    assert stored.timestamp.date().isoformat() == "2013-07-28"
    assert stored.name == "canary v8 step 2: canary-step"


def test_the_ui_draws_every_tab_once_batches_and_looks_share_a_project(
    tmp_path: Path, dataset: Dataset
) -> None:
    """What `evidently ui` does for each panel: one series query over all the snapshots.

    A look dated with a time zone beside a batch's naive time made every untagged query
    fail (Python cannot order the two), so the drift tabs showed an error after a canary.
    """
    from evidently.metrics import DuplicatedRowCount  # noqa: PLC0415 - heavy import
    from evidently.ui.service.base import SeriesFilter  # noqa: PLC0415
    from evidently.ui.service.storage.local import create_local_project_manager  # noqa: PLC0415

    evidently = load_evidently()
    folder = tmp_path / "ws"
    workspace, project = open_project(str(folder), "loopline-test", _columns(dataset),
                                      dataset.wording)  # fmt: skip
    week = Batch(Selection(), 0, "week", dt.date(2013, 7, 22), dt.date(2013, 7, 28), EVENT_DAY)
    batch = evidently.Report([DuplicatedRowCount()]).run(
        current_data=evidently.Dataset.from_pandas(pd.DataFrame({"x": [1.0, 1.0, 2.0]})),
        timestamp=week.timestamp,
    )
    workspace.add_run(project.id, batch)
    workspace.add_run(project.id, look_snapshot(CANARY, LOOK))

    storage = create_local_project_manager(str(folder), autorefresh=False).data_storage

    def series(metric: str, tags: list[str], labels: dict[str, str]) -> list:
        wanted = SeriesFilter(metric=f"evidently:metric_v2:{metric}", tags=tags, metadata={},
                              metric_labels=labels)  # fmt: skip
        found = asyncio.run(storage.get_data_series(project.id, [wanted], None, None))
        return [(source.timestamp, value) for source in found.sources
                for value in found.series[0].values]  # fmt: skip

    day_end = dt.datetime(2013, 7, 28, 23, 59)
    assert series("DuplicatedRowCount", [], {}) == [(day_end, 1)]
    assert series("MeanValue", [CANARY_TAG], {"column": "difference"}) == [(day_end, -0.012)]
