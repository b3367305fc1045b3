"""The retrain rule, as pure functions over the recent batches' outcomes.

A batch is *flagged* when its traffic drift share is above `drift_share_limit` or, once
labeled, its quality metric is more than `quality_drop_limit` below the champion's
test-window value. A retrain is asked for when the latest batch is flagged and at least
`k` of the last `n` batches are (no retrain for a one-off blip), no retrain is already
running, and the last trigger is at least `cooldown_days` of data ago.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from loopline.config import MonitorParams


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
    late_rate: float | None = None
    reference_late_rate: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def quality_drop(self) -> float | None:
        """Baseline minus batch quality (positive = worse than at registration)."""
        if self.quality is None or self.baseline is None:
            return None
        return self.baseline - self.quality

    def reasons(self, params: MonitorParams) -> list[str]:
        """Why this batch is flagged (empty if it is not)."""
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
    last_trigger_day: dt.date | None,
    retrain_running: bool,
) -> Decision:
    """Apply the retrain rule to the batches so far (oldest first, latest last)."""
    latest = history[-1]
    window = history[-params.n :]
    flagged = [b for b in window if b.reasons(params) and b.rows >= params.min_batch_rows]
    numbers = latest.as_dict()

    def no(reason: str) -> Decision:
        return Decision(False, reason, latest.batch_id, [b.batch_id for b in flagged], numbers)

    if latest.rows < params.min_batch_rows:
        return no(f"batch too small to judge ({latest.rows} < {params.min_batch_rows} rows)")
    if not latest.reasons(params):
        return no("latest batch within limits")
    if len(flagged) < params.k:
        return no(f"only {len(flagged)} of the last {len(window)} batches flagged; need {params.k}")
    if retrain_running:
        return no("a retrain is already running")
    if last_trigger_day is not None:
        since = (latest.last_day - last_trigger_day).days
        if since < params.cooldown_days:
            return no(
                f"cooldown: last retrain was asked {since} days of data ago "
                f"(< {params.cooldown_days})"
            )
    reason = f"{len(flagged)} of the last {len(window)} batches flagged; latest: " + "; ".join(
        latest.reasons(params)
    )
    return Decision(True, reason, latest.batch_id, [b.batch_id for b in flagged], numbers)
