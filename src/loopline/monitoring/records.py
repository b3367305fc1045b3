"""What the monitor found and decided, as typed records (text only at the edge).

A `BatchOutcome` holds one batch's numbers, its data-quality `Incident`s and, given the
limits, the `Flag`s it raised: a `DriftFlag` (which fields drifted, the share, the
limit) or a `QualityFlag` (which metric, its value, the baseline, the limit). A
`Decision` says whether to retrain and, when not, which part of the rule held it back.
The ledger of batches, the replay and its report read these fields; `str()` of each
record is the sentence people read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from loopline.core.params import MonitorParams

DRIFT_PREFIX = "drift_"  # a field's drift score among a batch's metrics: drift_<field>


@dataclass(frozen=True)
class Incident:
    """A data-quality problem in a batch (a dead feed, a category gone, repeats)."""

    kind: str  # "feed_outage", "category_gone", "repeated_records" or "rule_broken"
    fields: tuple[str, ...]  # the record fields it concerns
    text: str  # the readable line: what, where, how much, against which limit

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class DriftFlag:
    """The traffic drifted: more of the counted fields moved than the limit allows."""

    kind: ClassVar[str] = "drift"
    fields: tuple[str, ...]
    share: float
    limit: float

    def __str__(self) -> str:
        return f"traffic drift in {', '.join(self.fields)} (share {self.share:.2f} > {self.limit})"


@dataclass(frozen=True)
class QualityFlag:
    """The served model's quality fell further below its test-window value than allowed."""

    kind: ClassVar[str] = "quality"
    metric: str
    value: float
    baseline: float
    limit: float

    @property
    def drop(self) -> float:
        """Baseline minus value (positive: worse than at registration)."""
        return self.baseline - self.value

    def __str__(self) -> str:
        return (
            f"{self.metric} {self.value:.3f} is {self.drop:.3f} below {self.baseline:.3f} "
            f"(limit {self.limit})"
        )


Flag = DriftFlag | QualityFlag


def flag_dict(flag: Flag) -> dict[str, Any]:
    """A flag as JSON-friendly fields, with its kind."""
    return {"kind": flag.kind, **asdict(flag)}


@dataclass(frozen=True)
class BatchOutcome:
    """The numbers of one monitored batch."""

    batch_id: str
    first_day: dt.date
    last_day: dt.date
    rows: int
    labeled_rows: int
    model_version: str
    drift_share: float
    drifted_columns: list[str]
    reported_drifted_columns: list[str]
    mean_probability: float
    quality: float | None = None  # the monitored metric, when labels are in
    baseline: float | None = None  # the champion's value on its test window
    positive_rate: float | None = None
    reference_positive_rate: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)  # data-quality problems, found first
    last_arrival: str | None = None  # a batch by arrival: its newest logged time (ISO)
    drift_limits: dict[str, float] = field(default_factory=dict)  # each field's limit at this size

    @property
    def ends_at(self) -> str:
        """Where the batch ends in data time: its last arrival, else its last day (ISO)."""
        return self.last_arrival or self.last_day.isoformat()

    def figures(self) -> tuple[dict[str, float], dict[str, float]]:
        """Its figures by name (rows, the drift share, quality once labeled), each field's drift.

        What its snapshot carries beside the sample's own metrics (`monitoring.figures`).
        """
        named = {
            "rows": float(self.rows),
            "labeled_rows": float(self.labeled_rows),
            "drift_share": self.drift_share,
            "mean_probability": self.mean_probability,
        }
        if self.positive_rate is not None:
            named["positive_rate"] = self.positive_rate
        drift = {}
        for name, value in self.metrics.items():
            if name.startswith(DRIFT_PREFIX):
                drift[name.removeprefix(DRIFT_PREFIX)] = value
            else:
                named[name] = value
        return named, drift

    @property
    def quality_drop(self) -> float | None:
        """Baseline minus batch quality (positive = worse than at registration)."""
        if self.quality is None or self.baseline is None:
            return None
        return self.baseline - self.quality

    def flags(self, params: MonitorParams) -> list[Flag]:
        """The limits this batch crossed (none if its data is broken: incidents come first)."""
        if self.incidents:
            return []
        found: list[Flag] = []
        if self.drift_share > params.drift_share_limit:
            found.append(
                DriftFlag(tuple(self.drifted_columns), self.drift_share, params.drift_share_limit)
            )
        drop = self.quality_drop
        if drop is not None and drop > params.quality_drop_limit:
            found.append(
                QualityFlag(
                    params.quality_metric, self.quality, self.baseline, params.quality_drop_limit
                )
            )
        return found

    def reasons(self, params: MonitorParams) -> list[str]:
        """Why this batch is flagged, in words (empty if it is not)."""
        return [str(flag) for flag in self.flags(params)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what the monitor's state stores)."""
        return asdict(self) | {"quality_drop": self.quality_drop}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchOutcome:
        """Inverse of `as_dict`."""
        data = {k: v for k, v in data.items() if k != "quality_drop"}
        for key in ("first_day", "last_day"):
            data[key] = dt.date.fromisoformat(str(data[key]))
        data["incidents"] = [
            Incident(i["kind"], tuple(i["fields"]), i["text"]) for i in data.get("incidents", [])
        ]
        return cls(**data)


@dataclass(frozen=True)
class Decision:
    """Whether to retrain after a batch, and why (`held_by`: the rule's part that said no)."""

    trigger: bool
    reason: str  # the sentence
    batch_id: str
    flagged: list[str]  # ids of flagged batches among the last n
    numbers: dict = field(default_factory=dict)  # the latest batch's outcome
    held_by: str | None = None  # "incident", "too_small", "within_limits", "k_of_n",
    # "retrain_running", "canary_running" or "cooldown"; None when it triggers

    def detail(self) -> dict[str, Any]:
        """What the monitor's state keeps beside the sentence (and what held it back)."""
        found = {"flagged": self.flagged, "numbers": self.numbers}
        return found | ({"held_by": self.held_by} if self.held_by else {})
