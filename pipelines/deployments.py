"""The Prefect deployments of the loop, served by one long-running process.

* `monitor/loopline-monitor`: every `monitor.interval_minutes`;
* `retrain/loopline-retrain`: weekly on `retrain.cron`, and on every
  `loopline.retrain.requested` event, through an automation created here (visible under
  Automations in the Prefect UI) that passes the event's payload as parameters; one run
  at a time (a deployment concurrency limit the Prefect server enforces): a run started
  while another is active waits in the `AwaitingConcurrencySlot` state;
* `score/loopline-score`: batch scoring on demand (Run in the Prefect UI with `source` and
  `target` Parquet paths, or `prefect deployment run score/loopline-score -p ...`).
Schedules can be changed or paused in the UI. Run with `loopline deploy` (needs a Prefect
server: `PREFECT_API_URL`, or `make ui` running).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from loopline.config import load_params
from pipelines.monitor import RETRAIN_EVENT, monitor
from pipelines.retrain import retrain
from pipelines.score import score

MONITOR_DEPLOYMENT = "loopline-monitor"
RETRAIN_DEPLOYMENT = "loopline-retrain"
SCORE_DEPLOYMENT = "loopline-score"


def serve_deployments(params_path: Path) -> None:
    """Create (or update) the deployments and execute their runs until interrupted."""
    params = load_params(params_path)
    path = str(params_path.resolve())
    on_drift = DeploymentEventTrigger(
        name="retrain-when-monitoring-asks",
        expect={RETRAIN_EVENT},
        parameters={
            "labeled_until": "{{ event.payload.labeled_until }}",
            "reason": "{{ event.payload.reason }}",
            "decision_id": "{{ event.payload.decision_id }}",
            "params_path": path,
        },
    )
    serve(
        monitor.to_deployment(
            name=MONITOR_DEPLOYMENT,
            interval=dt.timedelta(minutes=params.monitor.interval_minutes),
            parameters={"params_path": path},
        ),
        retrain.to_deployment(
            name=RETRAIN_DEPLOYMENT,
            cron=params.retrain.cron,
            parameters={"params_path": path},
            triggers=[on_drift],
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
            ),
        ),
        score.to_deployment(name=SCORE_DEPLOYMENT, parameters={"params_path": path}),
    )
