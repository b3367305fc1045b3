"""The drift dashboard is created by code: its tabs, its panels, each drawn once."""

from __future__ import annotations

from pathlib import Path

from loopline.data.datasets.base import Dataset
from loopline.monitoring.dashboard import CANARY_TAB, DATA_TAB, DRIFT_TAB, QUALITY_TAB, open_project
from loopline.monitoring.drift import MonitoredColumns


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
