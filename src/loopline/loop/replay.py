"""The replay: data the models never saw, played through the live service as traffic.

A dataset with a time column plays the days after the test window, a period at a time
(default: every week to the last day of the data; for nycflights13, July to December
2013). One without plays the examples its split by fractions left out, a batch of
arrivals at a time, in a seeded random order or sorted by a field (a shift scenario).
For each period or batch:
1. its records are sent to the BentoML endpoint, as a client would send them;
2. the first champion, frozen and never retrained, scores the same records offline;
3. the period's true outcomes are delivered as labels;
4. the monitor flow measures the batch and may ask for a retrain (a Prefect event that
   the retrain deployment's automation turns into a retrain flow run);
5. after a retrain, the replay waits for it and, if it promoted a new champion, for the
   service to serve it. Then the next period starts.
The report compares the served models with the frozen one, period by period, and marks
drift detections, retrains and promotions. A batch of arrivals is named by its first and
last arrival time.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from sklearn import metrics

from loopline.core.errors import LooplineError
from loopline.core.io import atomic_path, write_json
from loopline.core.params import FractionSplit, load_params
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import Dataset, read_tables
from loopline.infra.monitor_state import MonitorStore
from loopline.infra.prediction_log import open_prediction_log
from loopline.registry.versions import CHAMPION, Registry
from loopline.scoring.features import left_out
from loopline.scoring.registered import load_version
from loopline.training.tracking import configure_mlflow

log = logging.getLogger(__name__)
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class PeriodResult:
    """What happened in one period of the replay."""

    first_day: str
    last_day: str
    rows: int
    served_versions: dict[str, int]
    served: dict[str, float]
    frozen: dict[str, float]
    drift_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    flagged_because: list[str] = field(default_factory=list)  # limits this batch crossed
    decision: str = ""
    triggered: bool = False
    retrain: dict[str, Any] | None = None


def periods(start: dt.date, end: dt.date, step_days: int) -> list[tuple[dt.date, dt.date]]:
    """Consecutive windows of `step_days` from start to end (the last may be shorter)."""
    result, first = [], start
    while first <= end:
        last = min(first + dt.timedelta(days=step_days - 1), end)
        result.append((first, last))
        first = last + dt.timedelta(days=1)
    return result


def quality(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Ranking and probability quality of one model on one period."""
    out = {"positive_rate": float(labels.mean()), "mean_probability": float(proba.mean()),
           "brier": float(metrics.brier_score_loss(labels, proba))}  # fmt: skip
    if labels.min() != labels.max():
        out |= {"roc_auc": float(metrics.roc_auc_score(labels, proba)),
                "pr_auc": float(metrics.average_precision_score(labels, proba))}  # fmt: skip
    return {k: round(v, 4) for k, v in out.items()}


def post_records(
    url: str, records: list[dict], headers: dict[str, str], chunk: int = 500
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


def wait_for_retrain(api_url: str, decision_id: str, timeout_s: float) -> dict[str, Any]:
    """The retrain flow run started for `decision_id`, once it has finished.

    An answer other than 200 from the Prefect API (a server busy migrating or restarting)
    is asked again until the deadline, and named if it is the last one.
    """
    deadline = time.monotonic() + timeout_s
    query = {
        "flows": {"name": {"any_": ["retrain"]}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 20,
    }
    last_answer = "none"
    while time.monotonic() < deadline:
        response = httpx.post(f"{api_url}/flow_runs/filter", json=query, timeout=10)
        if response.status_code == 200:
            mine = [r for r in response.json() if r["parameters"].get("decision_id") == decision_id]
            if mine and mine[0]["state_type"] in TERMINAL:
                return {"flow_run": mine[0]["name"], "state": mine[0]["state_type"]}
            last_answer = mine[0]["state_type"] if mine else "no run yet"
        else:
            last_answer = f"HTTP {response.status_code}: {response.text[:200]}"
        time.sleep(3)
    raise LooplineError(
        f"no finished retrain for decision {decision_id} within {timeout_s:.0f} s (last "
        f"answer: {last_answer}); is `loopline deploy` running?"
    )


def wait_for_served_version(
    url: str, version: str, headers: dict[str, str], timeout_s: float
) -> float:
    """Seconds until the service reports `version` as its champion."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        champion = httpx.get(f"{url}/metadata", headers=headers, timeout=10).json()["champion"]
        if champion and champion["model_version"] == version:
            return time.monotonic() - started
        time.sleep(1)
    raise LooplineError(f"the service did not switch to version {version} within {timeout_s:.0f} s")


def check_arrival_field(dataset: Dataset, field_name: str) -> None:
    """Raise LooplineError unless `field_name` is a record field arrivals can be sorted by."""
    if field_name not in dataset.record_columns():
        raise LooplineError(
            f"--arrive-by {field_name!r} is not a record field of {dataset.name}; fields: "
            f"{', '.join(dataset.record_columns())}"
        )


class Replay:
    """Plays unseen real data through the service and the monitoring loop, a batch at a time."""

    def __init__(self, params_file: Path, url: str, api_url: str, api_key: str = "") -> None:
        self.params_file = params_file.resolve()
        self.root = self.params_file.parent
        self.params = load_params(self.params_file)
        self.dataset = get_dataset(self.params.dataset.name)
        self.url, self.api_url = url, api_url
        self.headers = {"x-api-key": api_key} if api_key else {}
        configure_mlflow(self.params.mlflow, root=self.root)
        self.registry = Registry.rooted(self.params.registry, self.root)
        self.log_store = open_prediction_log(self.params, self.root)

    def run(self, start: dt.date | None, end: dt.date | None, step_days: int) -> dict[str, Any]:
        """Replay every period of days; returns the whole story (see `write_report`).

        For a dataset with a time column. `start` defaults to the day after the test
        window, `end` to the data's last day.
        """
        examples = self._examples()
        days = examples[self.dataset.require_time("a replay by days")].dt.date
        start = start or self.params.featurize.split.test.end + dt.timedelta(days=1)
        end = end or days.max()
        batches = [
            ((first, last), examples[(days >= first) & (days <= last)].reset_index(drop=True))
            for first, last in periods(start, end, step_days)
        ]
        return self._play(batches, f"{start}..{end}", by="days")

    def run_arrivals(
        self, batch_rows: int, arrive_by: str | None = None, descending: bool = False
    ) -> dict[str, Any]:
        """Replay the examples the split left out, `batch_rows` at a time, as arrivals.

        For a dataset without a time column: the examples `featurize.split`'s fractions
        keep out of train, valid and test arrive in a seeded random order, or sorted by
        the record field `arrive_by` (a shift scenario: the traffic moves along that
        field, as a campaign that brings in a new kind of customer would move it). Each
        batch is monitored as it arrived: by arrival time.
        """
        split = self.params.featurize.split
        if self.dataset.has_time or not isinstance(split, FractionSplit):
            raise LooplineError(
                "a replay by arrival needs a dataset without a time column, split by fractions"
            )
        future = left_out(self._examples(), self.dataset.target_column, split, self.params.seed)
        if future.empty:
            raise LooplineError("featurize.split's fractions add up to 1: no example is left out")
        if arrive_by is None:
            order = f"in a seeded random order, {batch_rows} per batch"
            future = future.sample(frac=1.0, random_state=self.params.seed)
        else:
            check_arrival_field(self.dataset, arrive_by)
            how = "descending" if descending else "ascending"
            order = f"by {arrive_by} {how}, {batch_rows} per batch"
            future = future.sort_values(arrive_by, ascending=not descending, kind="stable")
        future = future.reset_index(drop=True)
        batches = [
            (None, future.iloc[i : i + batch_rows].reset_index(drop=True))
            for i in range(0, len(future), batch_rows)
        ]
        return self._play(
            batches, f"{len(future):,} {self.dataset.wording.record}s {order}", by="arrival"
        )

    def _examples(self) -> pd.DataFrame:
        tables = read_tables(self.root / self.params.paths.data, self.dataset.contract)
        return self.dataset.build_examples(tables, self.params.dataset)

    def _play(
        self,
        batches: list[tuple[tuple[dt.date, dt.date] | None, pd.DataFrame]],
        replayed: str,
        by: str,
    ) -> dict[str, Any]:
        """Send each batch, deliver its labels, monitor it and follow any retrain.

        A batch of days is monitored by those days; a batch of arrivals (days None) as
        what arrived since the last batch.
        """
        from pipelines.monitor import monitor  # noqa: PLC0415 - a Prefect flow

        frozen_version = self.registry.alias_version(CHAMPION)
        if frozen_version is None:
            raise LooplineError("no champion in the registry: run `make run` first")
        frozen = load_version(self.registry, frozen_version).scorer
        target, columns = self.dataset.target_column, self.dataset.record_columns()
        results = []
        for days, batch in batches:
            records = json.loads(batch[columns].to_json(orient="records"))
            served = post_records(self.url, records, self.headers)
            labels = batch[target].to_numpy(int)
            proba = np.array([p["probability"] for p in served])
            frozen_proba = frozen.score_frame(batch)["probability"].to_numpy()
            versions = pd.Series([p["model_version"] for p in served]).value_counts().to_dict()
            delivered = f"{days[1]}T23:59:59" if days else dt.datetime.now(dt.UTC).isoformat()
            self.log_store.deliver_labels(batch, delivered_at=delivered)
            if days:
                checked = monitor(first_day=days[0], last_day=days[1], params_path=self.params_file)
            else:
                checked = monitor(params_path=self.params_file)
            if not checked["measured"]:  # the monitor's own schedule measured it first
                checked = self._last_measured()
            outcome = checked["outcome"]
            first, last = (str(d) for d in days) if days else outcome["batch_id"].split("..")
            result = PeriodResult(
                first_day=first, last_day=last, rows=len(batch),
                served_versions={str(k): int(v) for k, v in versions.items()},
                served=quality(labels, proba), frozen=quality(labels, frozen_proba),
                drift_share=outcome["drift_share"], drifted_columns=outcome["drifted_columns"],
                flagged_because=checked["flagged_because"], decision=checked["reason"],
                triggered=checked["trigger"],
            )  # fmt: skip
            if checked["trigger"]:
                result.retrain = self._follow_retrain(checked["decision_id"])
            log.info(
                "%s..%s served %s roc_auc %s (frozen %s): %s",
                result.first_day,
                result.last_day,
                result.served_versions,
                result.served.get("roc_auc"),
                result.frozen.get("roc_auc"),
                result.decision,
            )
            results.append(result)
        return {"frozen_version": frozen_version, "periods": [asdict(r) for r in results],
                "final_champion": self.registry.alias_version(CHAMPION),
                "replayed": replayed, "by": by,
                "record": self.dataset.wording.record,
                "positive": self.dataset.wording.positive}  # fmt: skip

    def _last_measured(self) -> dict[str, Any]:
        """The newest batch and decision in the monitor's store, as the monitor returns them."""
        store = MonitorStore(self.params.monitor.state, self.root)
        outcome, decision = store.history(1)[-1], store.decisions()[-1]
        return {
            "outcome": outcome.as_dict(), "flagged_because": outcome.reasons(self.params.monitor),
            "reason": decision["reason"], "trigger": bool(decision["trigger"]),
            "decision_id": decision["decision_id"],
        }  # fmt: skip

    def _follow_retrain(self, decision_id: str) -> dict[str, Any]:
        before = self.registry.alias_version(CHAMPION)
        finished = wait_for_retrain(
            self.api_url, decision_id, self.params.retrain.timeout_minutes * 60
        )
        after = self.registry.alias_version(CHAMPION)
        latest = max(
            int(v.version)
            for v in self.registry.client.search_model_versions(f"name='{self.registry.name}'")
        )
        info = finished | {
            "registered_version": str(latest),
            "champion_before": before,
            "champion_after": after,
            "promoted": after != before,
            "decision": judged(self.registry.ledger.entries(), str(latest)),
        }
        if after != before and after is not None:
            info["swap_seconds"] = round(
                wait_for_served_version(self.url, after, self.headers, 120), 1
            )
        return info


def judged(ledger: list[dict], version: str) -> dict[str, Any]:
    """What the gate said about `version`: its window, the difference and its interval."""
    entry = next((e for e in reversed(ledger) if e["version"] == version), None)
    if entry is None:
        return {}
    difference = entry.get("difference") or {}
    failed = [c.removeprefix("FAIL ") for c in entry.get("checks", []) if c.startswith("FAIL")]
    return {
        "action": entry["action"], "faced": entry.get("faced"),
        "window": entry.get("window", ""),
        "difference": difference.get("difference"), "low": difference.get("low"),
        "high": difference.get("high"),
        "failed": failed,
    }  # fmt: skip


def write_report(story: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, quality.png and report.html in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(story["periods"])
    write_json(story | {"summary": summarize(frame)}, out_dir / "report.json")
    plot = out_dir / "quality.png"
    draw(frame, plot, story["positive"], story["replayed"], by_arrival=story.get("by") == "arrival")
    html = out_dir / "report.html"
    with atomic_path(html) as tmp:
        tmp.write_text(render_html(story, frame, plot))
    return {"json": out_dir / "report.json", "png": plot, "html": html}


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of the replay."""
    served = frame["served"].apply(lambda m: m.get("roc_auc"))
    frozen = frame["frozen"].apply(lambda m: m.get("roc_auc"))
    retrains = [r for r in frame["retrain"] if r]
    return {
        "periods": len(frame),
        "mean_roc_auc_served": round(float(served.mean()), 4),
        "mean_roc_auc_frozen": round(float(frozen.mean()), 4),
        "periods_served_better": int((served > frozen).sum()),
        "periods_flagged_for_traffic_drift": int(frame["flagged_because"].apply(_drifted).sum()),
        "periods_flagged_for_quality": int(frame["flagged_because"].apply(_degraded).sum()),
        "retrains_triggered": int(frame["triggered"].sum()),
        "promotions": sum(1 for r in retrains if r.get("promoted")),
    }


def draw(
    frame: pd.DataFrame, path: Path, positive: str, replayed: str, *, by_arrival: bool = False
) -> None:
    """ROC-AUC per period (served vs frozen) and `positive` rates, with the loop's events.

    Periods of days are placed on a date axis; batches of arrivals by their number (their
    arrival times are seconds apart, with the waits for retrains between).
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    if by_arrival:
        number = pd.Series(range(1, len(frame) + 1), dtype=float)
        starts, ends = number - 0.9, number  # as for days: the point closes its period
    else:
        starts, ends = pd.to_datetime(frame["first_day"]), pd.to_datetime(frame["last_day"])
    served_auc = frame["served"].apply(lambda m: m.get("roc_auc"))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 2])
    top.plot(ends, served_auc, "o-", label="served (retrained by the loop)")
    top.plot(
        ends,
        frame["frozen"].apply(lambda m: m.get("roc_auc")),
        "s--",
        color="grey",
        label="frozen first champion",
    )
    for start, end, auc, row in zip(starts, ends, served_auc, frame.itertuples(), strict=True):
        if _drifted(row.flagged_because):
            top.axvspan(start, end, color="orange", alpha=0.2, lw=0)
        if _degraded(row.flagged_because):
            top.plot([end], [auc], "x", color="red", markersize=10, mew=2)
        if row.retrain:
            promoted = row.retrain.get("promoted")
            top.axvline(end, color="green" if promoted else "red", ls="-" if promoted else ":")
            label = f"v{row.retrain['champion_after']}" if promoted else "kept"
            top.annotate(
                label, (end, 0.99), xycoords=("data", "axes fraction"),
                fontsize=8, ha="center", va="top",
            )  # fmt: skip
    top.margins(y=0.12)
    top.set_ylabel("ROC-AUC")
    key = [
        Patch(color="orange", alpha=0.2, label="traffic drift flagged"),
        Line2D([], [], ls="", marker="x", color="red", mew=2, label="quality drop flagged"),
        Line2D([], [], color="green", label="retrain promoted (new version)"),
        Line2D([], [], color="red", ls=":", label="retrain rejected (champion kept)"),
    ]
    top.legend(
        handles=top.get_legend_handles_labels()[0] + key,
        loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False,
    )  # fmt: skip
    fig.suptitle(
        f"Replay of {replayed}: ROC-AUC per period, served by the loop vs frozen", fontsize=11
    )
    bottom.plot(
        ends,
        frame["served"].apply(lambda m: m["positive_rate"]),
        "k-",
        label=f"observed {positive} rate",
    )
    bottom.plot(
        ends,
        frame["served"].apply(lambda m: m["mean_probability"]),
        "o-",
        label="mean predicted (served)",
    )
    bottom.plot(
        ends,
        frame["frozen"].apply(lambda m: m["mean_probability"]),
        "s--",
        color="grey",
        label="mean predicted (frozen)",
    )
    bottom.set_ylabel(f"{positive} rate")
    if by_arrival:
        bottom.set_xticks(ends, [str(int(n)) for n in ends])
        bottom.set_xlabel("batch, in arrival order")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def render_html(story: dict[str, Any], frame: pd.DataFrame, plot: Path) -> str:
    """A self-contained HTML page: the plot, the summary and one row per period."""
    image = base64.b64encode(plot.read_bytes()).decode()
    summary = summarize(frame)
    rows = "\n".join(
        f"<tr><td>{r.first_day}..{r.last_day}</td><td>{r.rows}</td>"
        f"<td>{', '.join(f'v{k}: {v}' for k, v in r.served_versions.items())}</td>"
        f"<td>{r.served.get('roc_auc', '')}</td><td>{r.frozen.get('roc_auc', '')}</td>"
        f"<td>{r.served['positive_rate']}</td><td>{r.drift_share}</td>"
        f"<td>{', '.join(r.drifted_columns)}</td><td>{'; '.join(r.flagged_because)}</td>"
        f"<td>{'RETRAIN' if r.triggered else ''}</td>"
        f"<td>{_retrain_cell(r.retrain)}</td><td>{r.decision}</td></tr>"
        for r in frame.itertuples()
    )
    items = "".join(f"<li>{k.replace('_', ' ')}: {v}</li>" for k, v in summary.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Loopline replay</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head><body>
<h1>Loopline: replay of {story["replayed"]}</h1>
<p>Frozen model: version {story["frozen_version"]};
champion at the end: version {story["final_champion"]}.</p>
<ul>{items}</ul>
<img src="data:image/png;base64,{image}" style="max-width:100%">
<table><tr><th>period</th><th>{story["record"]}s</th><th>served by</th><th>ROC-AUC served</th>
<th>ROC-AUC frozen</th><th>{story["positive"]} rate</th><th>traffic drift share</th><th>drifted</th>
<th>flagged because</th><th>decision</th><th>retrain</th><th>reason</th></tr>
{rows}</table></body></html>
"""


def _drifted(reasons: list[str]) -> bool:
    return any(reason.startswith("traffic drift") for reason in reasons)


def _degraded(reasons: list[str]) -> bool:
    return any(" below " in reason for reason in reasons)


def _retrain_cell(retrain: dict | None) -> str:
    if not retrain:
        return ""
    decision = retrain.get("decision") or {}
    judged_on = f"judged on {decision.get('window')}" if decision.get("window") else ""
    if decision.get("difference") is not None:
        judged_on += (
            f": ROC-AUC {decision['difference']:+.4f} vs v{decision['faced']} "
            f"(interval {decision['low']:+.4f}..{decision['high']:+.4f})"
        )
    if retrain.get("promoted"):
        swap = retrain.get("swap_seconds")
        return f"v{retrain['registered_version']} promoted, served after {swap} s; {judged_on}"
    failed = "; ".join(decision.get("failed", [])) or retrain["state"]
    return f"v{retrain['registered_version']} not promoted ({failed}); {judged_on}"
