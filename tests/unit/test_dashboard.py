"""The drift dashboard is created by code: its tabs, its panels, each drawn once."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.data.datasets.base import Dataset
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


def test_a_canary_look_is_one_snapshot_of_its_numbers_for_the_canary_tab() -> None:
    canary = Canary("8", "7", 1, 0.25, "2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00")
    entry = {
        "action": "canary-step", "mean_difference": -0.012, "interval": [-0.02, -0.004],
        "pairs": 4000, "share": 0.25, "traffic_until": "2013-07-28",
        "roc_auc": {"champion": 0.70, "canary": 0.73}, "mean_loss": {"champion": 0.5,
                                                                     "canary": None},
        "guardrails": {"routed_share": 0.24, "error_rate": 0.0,
                       "p99_ms": {"champion": 0.4, "canary": 0.5}},
    }  # fmt: skip
    snapshot = look_snapshot(canary, entry)
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
