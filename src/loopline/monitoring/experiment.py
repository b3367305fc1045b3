"""A canary's looks on the drift dashboard: one snapshot per look, in the Canary tab.

Each look's numbers (`loopline.promotion.canary`: the loss difference and its interval,
each arm's quality on the same records, the share routed, the guardrails) go into a
snapshot of a one-row dataset, one column per number, measured with Evidently's
MeanValue (of one row: the number itself) and tagged `canary`, so the Canary tab's
panels draw them look by look and the other tabs never see them. A snapshot is dated
with the newest day of traffic the look read, so canary and drift points share one
time axis (in the replay, 2013): a look after a week's labels sits on that week's batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd

from loopline.monitoring.dashboard import CANARY_TAG, open_project
from loopline.monitoring.drift import MonitoredColumns
from loopline.monitoring.snapshot import load_evidently
from loopline.registry.canary import Canary
from loopline.workspace import Workspace


def look_numbers(entry: Mapping[str, Any]) -> dict[str, float]:
    """A look's ledger entry as the panels' columns (a missing number is left out)."""
    guarded = entry.get("guardrails") or {}
    low, high = entry.get("interval") or (None, None)
    numbers = {
        "difference": entry.get("mean_difference"), "low": low, "high": high,
        "pairs": entry.get("pairs"), "share": entry.get("share"),
        "routed_share": guarded.get("routed_share"), "error_rate": guarded.get("error_rate"),
        **{f"{arm}_roc_auc": v for arm, v in (entry.get("roc_auc") or {}).items()},
        **{f"{arm}_loss": v for arm, v in (entry.get("mean_loss") or {}).items()},
        **{f"{arm}_p99_ms": v for arm, v in (guarded.get("p99_ms") or {}).items()},
    }  # fmt: skip
    return {name: float(value) for name, value in numbers.items() if value is not None}


def look_snapshot(canary: Canary, entry: Mapping[str, Any]) -> Any:
    """The look's Evidently snapshot (dated by the newest day of traffic it read)."""
    evidently = load_evidently()
    from evidently.metrics import MeanValue  # noqa: PLC0415 - heavy import

    numbers = look_numbers(entry)
    day = entry.get("traffic_until")
    # naive UTC at the day's end, like a batch's snapshot (`Batch.timestamp`): the UI sorts
    # all of a project's snapshots together and cannot order naive and aware times
    timestamp = (
        dt.datetime.combine(dt.date.fromisoformat(day), dt.time(23, 59))
        if day
        else dt.datetime.now(dt.UTC).replace(tzinfo=None)
    )
    data = evidently.Dataset.from_pandas(
        pd.DataFrame([numbers]),
        data_definition=evidently.DataDefinition(numerical_columns=list(numbers)),
    )
    report = evidently.Report([MeanValue(column=name) for name in numbers])
    return report.run(
        current_data=data, timestamp=timestamp, tags=[CANARY_TAG],
        name=f"canary v{canary.version} step {canary.step + 1}: {entry['action']}",
    )  # fmt: skip


def show_look(workspace: Workspace, canary: Canary, entry: Mapping[str, Any]) -> None:
    """Add the look's snapshot to the drift dashboard's project."""
    dataset, monitor = workspace.dataset, workspace.params.monitor
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    dashboard, project = open_project(
        str(monitor.workspace), monitor.project, columns, dataset.wording
    )
    dashboard.add_run(project.id, look_snapshot(canary, entry))
