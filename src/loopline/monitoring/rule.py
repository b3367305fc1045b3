"""The retrain rule, as pure functions over the recent batches' outcomes.

A batch with a data-quality incident (a feed outage, a category gone, repeated records:
`loopline.monitoring.traffic`) is reported as such: it is never flagged and never
triggers, whatever its drift, since retraining on a broken feed would learn the outage.
Otherwise a batch is *flagged* when its traffic drift share is above `drift_share_limit`
or, once labeled, its quality metric is more than `quality_drop_limit` below the
champion's test-window value. A retrain is asked for when the latest batch is flagged and
at least `k` of the last `n` batches are (no retrain for a one-off blip), no retrain is
already running, no canary is on live traffic (its looks decide first: a retrain every
cooldown would otherwise replace each canary before its last step), and the last trigger
is far enough back (the time axis's `Cooldown`: days of data, or batches).
"""

from __future__ import annotations

from collections.abc import Callable

from loopline.core.params import MonitorParams
from loopline.data.time_axis import Cooldown
from loopline.monitoring.records import BatchOutcome, Decision


def decide(
    history: list[BatchOutcome],
    params: MonitorParams,
    cooldown: Cooldown | None,
    retrain_running: bool,
    canary: str | None = None,
) -> Decision:
    """Apply the retrain rule to the batches so far (oldest first, latest last).

    `cooldown` None: no retrain was ever asked. `canary`: the running canary, in words.
    """
    latest = history[-1]
    window = history[-params.n :]
    flagged = [b for b in window if b.flags(params) and b.rows >= params.min_batch_rows]
    flagged_ids = [b.batch_id for b in flagged]
    blocked = _blocker(
        latest, flagged=len(flagged), window=len(window), params=params,
        cooldown=cooldown, retrain_running=retrain_running, canary=canary,
    )  # fmt: skip
    if blocked is not None:
        held_by, reason = blocked
        return Decision(False, reason, latest.batch_id, flagged_ids, latest.as_dict(), held_by)
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
    canary: str | None,
) -> tuple[str, str] | None:
    """The first part of the rule that says no after `latest`, and why; None: retrain."""
    more = len(latest.incidents) - 1
    gates: list[tuple[str, bool, Callable[[], str]]] = [
        ("incident", bool(latest.incidents), lambda: "data-quality incident, drift not judged: "
         f"{latest.incidents[0]}" + (f" (and {more} more)" if more else "")),
        ("too_small", latest.rows < params.min_batch_rows,
         lambda: f"batch too small to judge ({latest.rows} < {params.min_batch_rows} rows)"),
        ("within_limits", not latest.flags(params), lambda: "latest batch within limits"),
        ("k_of_n", flagged < params.k,
         lambda: f"only {flagged} of the last {window} batches flagged; need {params.k}"),
        ("retrain_running", retrain_running, lambda: "a retrain is already running"),
        ("canary_running", canary is not None,
         lambda: f"a canary is on live traffic ({canary}): its looks decide first"),
        ("cooldown", cooldown is not None and cooldown.holds(),
         lambda: f"cooldown: last retrain was asked {cooldown.elapsed} {cooldown.unit} ago "
         f"(< {cooldown.required})"),
    ]  # fmt: skip
    return next(((name, message()) for name, blocked, message in gates if blocked), None)
