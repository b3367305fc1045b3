"""The monitor's exact figures as Evidently metrics, so snapshots carry what decided.

A snapshot's own metrics are computed on a bounded sample of the batch
(`loopline.monitoring.snapshot`); the monitor's figures come from the profile of every
row (`loopline.monitoring.measure`). `BatchFigure` puts one of those figures into the
snapshot as a metric of its own: its calculation returns the figure it was given, so the
dashboard plots and the HTML report shows the numbers the decision was made on, next to
the sample's.

Its type is stored under Evidently's own metric prefix, so a dashboard panel asks for it
like any other (`PanelMetric(metric=KIND, ...)`); the UI service reads the
stored points without importing this module. The value is not one of the metric's labels:
a panel's line is one figure across the batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evidently._pydantic_compat import Field
from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric

KIND = "LooplineBatchFigure"  # the metric name a dashboard panel asks for


class BatchFigure(SingleValueMetric):
    """One figure of the whole batch, computed by the monitor from the batch's profile."""

    class Config:
        """Stored under Evidently's metric prefix (what a panel's metric name becomes)."""

        type_alias = f"evidently:metric_v2:{KIND}"

    figure: str  # what it is: `rows`, `drift_share`, `drift`, or a quality metric's name
    column: str | None = None  # the field, for a field's drift score
    # not a label of the stored point: a dashboard line is the points of one figure
    value: float = Field(exclude=True)


class BatchFigureCalculation(SingleValueCalculation[BatchFigure]):
    """The figure the metric was given (the sample at hand plays no part)."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        """The given figure for the current data; none for the reference."""
        return self.result(self.metric.value), None

    def display_name(self) -> str:
        """The figure's name in the report, e.g. `drift of temp, whole batch`."""
        about = f" of {self.metric.column}" if self.metric.column else ""
        return f"{self.metric.figure}{about}, whole batch"


def batch_figures(figures: Mapping[str, float], drift: Mapping[str, float]) -> list[BatchFigure]:
    """`figures` by name (rows, drift_share, quality) and each field's drift score, as metrics."""
    named = [BatchFigure(figure=name, value=value) for name, value in figures.items()]
    return named + [
        BatchFigure(figure="drift", column=column, value=score) for column, score in drift.items()
    ]
