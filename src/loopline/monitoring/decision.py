"""The retrain rule, as pure functions over the recent batches' outcomes.

A batch with a data-quality incident (a feed outage, a category gone, repeated records:
`loopline.monitoring.traffic`) is reported as such: it is never flagged and never
triggers, whatever its drift, since retraining on a broken feed would learn the outage.
Otherwise a batch is *flagged* when its traffic drift share is above `drift_share_limit` or, once
labeled, its quality metric is more than `quality_drop_limit` below the champion's
test-window value. A retrain is asked for when the latest batch is flagged and at least
`k` of the last `n` batches are (no retrain for a one-off blip), no retrain is already
running, and the last trigger is far enough back: `cooldown_days` of data for batches cut
by event day, `cooldown_batches` batches for batches cut by arrival (a dataset without
a time column).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from loopline.core.params import MonitorParams


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
    incidents: list[str] = field(default_factory=list)  # data-quality problems found first
    last_arrival: str | None = None  # a batch by arrival: its newest logged time (ISO)

    @property
    def ends_at(self) -> str:
        """Where the batch ends in data time: its last arrival, else its last day (ISO)."""
        return self.last_arrival or self.last_day.isoformat()

    @property
    def quality_drop(self) -> float | None:
        """Baseline minus batch quality (positive = worse than at registration)."""
        if self.quality is None or self.baseline is None:
            return None
        return self.baseline - self.quality

    def reasons(self, params: MonitorParams) -> list[str]:
        """Why this batch is flagged (empty if it is not, or if its data is broken)."""
        if self.incidents:
            return []
        reasons = []
        if self.drift_share > params.drift_share_limit:
            reasons.append(
                f"traffic drift in {', '.join(self.drifted_columns)} "
                f"(share {self.drift_share:.2f} > {params.drift_share_limit})"
            )
        drop = self.quality_drop
        if drop is not None and drop > params.quality_drop_limit:
            reasons.append(
                f"{params.quality_metric} {self.quality:.3f} is {drop:.3f} below "
                f"{self.baseline:.3f} (limit {params.quality_drop_limit})"
            )
        return reasons

    def as_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self) | {"quality_drop": self.quality_drop}


@dataclass(frozen=True)
class Cooldown:
    """How long ago the last retrain was asked, against how long the rule waits after one."""

    elapsed: int | None  # None: never asked
    required: int
    unit: str  # "days of data" or "batches"

    @classmethod
    def in_days(
        cls, latest: BatchOutcome, last_trigger_day: dt.date | None, required: int
    ) -> Cooldown:
        """Days of data from the last triggering batch's end to the end of `latest`."""
        elapsed = (latest.last_day - last_trigger_day).days if last_trigger_day else None
        return cls(elapsed, required, "days of data")

    def holds(self) -> bool:
        """True while a new trigger must wait."""
        return self.elapsed is not None and self.elapsed < self.required


@dataclass(frozen=True)
class Decision:
    """Whether to retrain after a batch, and why."""

    trigger: bool
    reason: str
    batch_id: str
    flagged: list[str]  # ids of flagged batches among the last n
    numbers: dict = field(default_factory=dict)


def decide(
    history: list[BatchOutcome],
    params: MonitorParams,
    cooldown: Cooldown | None,
    retrain_running: bool,
) -> Decision:
    """Apply the retrain rule to the batches so far (oldest first, latest last).

    `cooldown` None: no retrain was ever asked.
    """
    latest = history[-1]
    window = history[-params.n :]
    flagged = [b for b in window if b.reasons(params) and b.rows >= params.min_batch_rows]
    flagged_ids = [b.batch_id for b in flagged]
    blocker = _blocker(
        latest, flagged=len(flagged), window=len(window), params=params,
        cooldown=cooldown, retrain_running=retrain_running,
    )  # fmt: skip
    if blocker is not None:
        return Decision(False, blocker, latest.batch_id, flagged_ids, latest.as_dict())
    reason = f"{len(flagged)} of the last {len(window)} batches flagged; latest: " + "; ".join(
        latest.reasons(params)
    )
    return Decision(True, reason, latest.batch_id, flagged_ids, latest.as_dict())


def _blocker(
    latest: BatchOutcome,
    *,
    flagged: int,
    window: int,
    params: MonitorParams,
    cooldown: Cooldown | None,
    retrain_running: bool,
) -> str | None:
    """The first reason not to retrain after `latest`, in the rule's order; None: retrain."""
    more = len(latest.incidents) - 1
    gates = [
        (bool(latest.incidents), lambda: "data-quality incident, drift not judged: "
         f"{latest.incidents[0]}" + (f" (and {more} more)" if more else "")),
        (latest.rows < params.min_batch_rows,
         lambda: f"batch too small to judge ({latest.rows} < {params.min_batch_rows} rows)"),
        (not latest.reasons(params), lambda: "latest batch within limits"),
        (flagged < params.k,
         lambda: f"only {flagged} of the last {window} batches flagged; need {params.k}"),
        (retrain_running, lambda: "a retrain is already running"),
        (cooldown is not None and cooldown.holds(),
         lambda: f"cooldown: last retrain was asked {cooldown.elapsed} {cooldown.unit} ago "
         f"(< {cooldown.required})"),
    ]  # fmt: skip
    return next((message() for blocked, message in gates if blocked), None)
