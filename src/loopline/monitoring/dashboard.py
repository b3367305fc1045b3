"""The drift dashboard: an Evidently workspace with one project and panels set up by code.

`evidently ui --workspace <monitor.workspace>` (or `make ui`) serves it; each monitored
batch adds a snapshot, dated with the batch's data time, so the panels plot the year.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loopline.data.datasets.base import Wording
from loopline.monitoring.drift import MonitoredColumns

DRIFT_TAB, QUALITY_TAB, DATA_TAB, CANARY_TAB = "Drift", "Quality", "Data quality", "Canary"
CANARY_TAG = "canary"  # the canary's looks (`loopline.monitoring.experiment`)


def _panels(columns: MonitoredColumns, wording: Wording) -> list[tuple[str, Any]]:
    """Every panel of the dashboard with its tab, in order."""
    from evidently.sdk.models import PanelMetric  # noqa: PLC0415 - heavy import
    from evidently.sdk.panels import line_plot_panel  # noqa: PLC0415

    from loopline.monitoring.figures import KIND  # noqa: PLC0415 - imports Evidently

    def exact(legend: str, figure: str, column: str | None = None) -> Any:
        """A line of the monitor's own figure of each whole batch (what decided)."""
        labels = {"figure": figure} | ({"column": column} if column else {})
        return PanelMetric(legend=legend, metric=KIND, metric_labels=labels)

    tabs = (
        (DRIFT_TAB, _drift_panels(columns, PanelMetric, exact)),
        (QUALITY_TAB, _quality_panels(wording, exact)),
        (DATA_TAB, _data_panels(columns, PanelMetric)),
        (CANARY_TAB, _canary_panels(PanelMetric)),
    )
    return [(tab, line_plot_panel(*panel)) for tab, panels in tabs for panel in panels]


def _drift_panels(columns: MonitoredColumns, metric: Any, exact: Any) -> list[tuple]:
    """The drift tab: the share that decides, then each field's drift score (whole batches)."""
    sample_share = metric(
        legend="report sample's share (Evidently)", metric="DriftedColumnsCount",
        metric_labels={"value_type": "share"},
    )  # fmt: skip
    return [
        ("Traffic drift share",
         [exact("whole batch (decides)", "drift_share"), sample_share],
         "Share of the counted features (the contract's drift='share' fields) whose "
         "distribution moved away from the champion's training data, over the whole batch "
         "(a retrain is considered above the limit), and Evidently's on the report's sample."),
        ("Counted features: drift score",
         [exact(name, "drift", name) for name in columns.share],
         "Distance from the training distribution over the whole batch; a field drifts "
         "above 0.1 and above its noise limit at the batch's size."),
        ("Reported features: drift score",
         [exact(name, "drift", name) for name in columns.report],
         "Shown, not counted (drift='report' in the contract, which says why)."),
    ]  # fmt: skip


def _quality_panels(wording: Wording, exact: Any) -> list[tuple]:
    """The quality tab: ranking, precision and recall, observed vs predicted rate."""
    positive_rates = [
        exact(f"observed {wording.positive} rate", "positive_rate"),
        exact("mean predicted probability", "mean_probability"),
    ]
    return [
        ("Ranking quality (once labels arrive)", [exact("ROC-AUC", "roc_auc")],
         "ROC-AUC of the served model on each labeled batch, over all its rows."),
        ("Precision and recall at the model's threshold",
         [exact("precision", "precision"), exact("recall", "recall")]),
        (f"{wording.positive.capitalize()} rate: observed vs predicted", positive_rates),
    ]  # fmt: skip


def _data_panels(columns: MonitoredColumns, metric: Any) -> list[tuple]:
    """The data tab: missing values of the rarely-missing fields, duplicated rows."""
    missing = [
        metric(legend=n, metric="MissingValueCount",
               metric_labels={"column": n, "value_type": "share"})
        for n in columns.rarely_missing
    ]  # fmt: skip
    return [
        ("Missing values: share of the batch", missing,
         "Fields the contract says are rarely missing. A dead feed shows here; "
         "the monitor reports it as an incident and does not count the batch as drift."),
        ("Duplicated rows",
         [metric(legend="rows repeating another", metric="DuplicatedRowCount")],
         "The same record sent again and again (a client or queue re-sending)."),
    ]  # fmt: skip


def _canary_panels(metric: Any) -> list[tuple]:
    """The canary tab: one point per look at a running canary (its numbers, by name)."""

    def looked(*names: tuple[str, str]) -> list[Any]:
        return [
            metric(legend=legend, metric="MeanValue", metric_labels={"column": column},
                   tags=[CANARY_TAG])
            for column, legend in names
        ]  # fmt: skip

    return [
        ("Canary: loss difference on the same records (canary minus champion)",
         looked(("difference", "mean difference"), ("low", "interval: low"),
                ("high", "interval: high")),
         "Per-record loss of the canary minus the champion's, on the labeled records of "
         "matured days, with its always-valid interval: below 0 the canary is better; the "
         "interval wholly below 0 after the last step promotes it, wholly above rolls it back."),
        ("Canary: ROC-AUC of each arm on the same records",
         looked(("champion_roc_auc", "champion"), ("canary_roc_auc", "canary"))),
        ("Canary: mean loss of each arm on the same records",
         looked(("champion_loss", "champion"), ("canary_loss", "canary"))),
        ("Canary: share of traffic routed vs planned",
         looked(("routed_share", "routed (keys)"), ("share", "planned (the step's share)")),
         "A gap beyond chance trips the sample-ratio guardrail."),
        ("Canary: guardrails",
         looked(("error_rate", "challenger errors and timeouts per request"),
                ("champion_p99_ms", "champion p99 scoring ms"),
                ("canary_p99_ms", "canary p99 scoring ms"))),
        ("Canary: labeled pairs judged", looked(("pairs", "pairs"))),
    ]  # fmt: skip


def is_remote(workspace: str) -> bool:
    """True when `monitor.workspace` is the URL of an Evidently UI service, not a folder."""
    return workspace.startswith(("http://", "https://"))


def open_project(
    workspace: str, name: str, columns: MonitoredColumns, wording: Wording
) -> tuple[Any, Any]:
    """The workspace and its project `name`, created with its panels if missing.

    `workspace` is a folder the monitor writes, or the URL of an Evidently UI service
    (`evidently ui`) it pushes snapshots to (team mode).
    """
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
    from evidently.ui.workspace import RemoteWorkspace, Workspace  # noqa: PLC0415 - heavy

    if is_remote(workspace):
        ws = RemoteWorkspace(workspace)
    else:
        folder = Path(workspace)
        folder.mkdir(parents=True, exist_ok=True)
        ws = Workspace.create(str(folder))
    found = ws.search_project(name)
    if found:
        return ws, found[0]
    project = ws.create_project(
        name, description=f"Loopline: {wording.target} model, drift and quality of its traffic"
    )
    for tab, panel in _panels(columns, wording):
        # Evidently's OSS UI service keeps one tab per dashboard: a project there gets
        # every panel, in the same order, in one tab.
        project.dashboard.add_panel(panel, tab=None if is_remote(workspace) else tab)
    # Evidently 0.7's add_panel lists a panel twice in a tab that already exists, and the UI
    # then draws it twice: keep each panel once, in order.
    layout = project.dashboard.model()
    for tab in layout.tabs:
        tab.panels = list(dict.fromkeys(tab.panels))
    ws.save_dashboard(project.id, layout)
    return ws, project
