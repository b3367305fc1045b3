"""monitor flow: measure the latest batch of production traffic and decide on a retrain.

Runs on the monitor deployment's schedule, from `loopline monitor`, or from the replay.
The time axis cuts the batch: a range of event days (default: the last 7 logged), or
everything logged since the previous batch for a dataset without a time column. Its
drift and quality go to the monitor's state, the Evidently dashboard and an HTML report
(`loopline.monitoring.run`). If the retrain rule fires, a `loopline.retrain.requested`
event is emitted: the retrain deployment's trigger (an automation on the Prefect server)
starts the retrain flow with the event's payload.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from loopline.data.time_axis import Batch
from loopline.infra.prefect import run_stage, runs_in_progress
from loopline.monitoring.measure import Measured
from loopline.monitoring.run import judge, measure_and_show, next_batch, nothing_to_measure, summary
from loopline.workspace import Workspace

RETRAIN_EVENT = "loopline.retrain.requested"


@task(cache_policy=NO_CACHE)
def measure(workspace: Workspace, batch: Batch) -> Measured:
    """Drift and quality of the batch; its snapshot goes on the dashboard."""
    return measure_and_show(workspace, batch)


def _run_name() -> str:
    """`monitor-<last day>`, or `monitor-latest` for the newest batch (by days or arrival)."""
    return f"monitor-{flow_run.parameters.get('last_day') or 'latest'}"


@flow(name="monitor", flow_run_name=_run_name)
def monitor(
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Measure one batch and decide; ask for a retrain when the rule says so."""
    workspace = Workspace.load(params_path)
    workspace.axis.cooldown_limit(workspace.params.monitor)  # a missing setting fails first
    batch = next_batch(workspace, first_day, last_day)
    if batch is None:
        return nothing_to_measure(workspace)
    measured = measure(workspace, batch)
    judged = judge(workspace, batch, measured, retrain_running=bool(runs_in_progress("retrain")))
    if judged.decision.trigger:
        emit_event(
            event=RETRAIN_EVENT,
            resource={"prefect.resource.id": f"loopline.model.{workspace.registry.name}"},
            payload={"decision_id": judged.decision_id, "reason": judged.decision.reason,
                     "labeled_until": str(judged.labeled_until)},
        )  # fmt: skip
    return summary(workspace, judged)


def main() -> None:
    """`python -m pipelines.monitor --params P [--first-day D] [--last-day D]`."""
    parser = argparse.ArgumentParser(description="Monitor one batch of logged traffic now.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--first-day", type=dt.date.fromisoformat)
    parser.add_argument("--last-day", type=dt.date.fromisoformat)
    args = parser.parse_args()

    def monitor_and_say() -> None:
        result = monitor(args.first_day, args.last_day, args.params)
        if not result["measured"]:
            print(result["reason"])  # noqa: T201 - the command's answer
            return
        verdict = "RETRAIN" if result["trigger"] else "no retrain"
        print(f"{result['outcome']['batch_id']}: {verdict} ({result['reason']})")  # noqa: T201
        print(f"report: {result['report']}")  # noqa: T201

    run_stage(monitor_and_say)


if __name__ == "__main__":
    main()
