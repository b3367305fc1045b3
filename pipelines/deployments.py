"""The Prefect deployments of the loop, served by one long-running process.

* `monitor/loopline-monitor`: every `monitor.interval_minutes`;
* `canary/loopline-canary`: a look at the running canary, as often (each look one run,
  named by the canary's version and step);
* `retrain/loopline-retrain`: weekly on `retrain.cron`, and on every
  `loopline.retrain.requested` event, through an automation created here (visible under
  Automations in the Prefect UI) that passes the event's payload as parameters; one run
  at a time (a deployment concurrency limit the Prefect server enforces): a run started
  while another is active waits in the `AwaitingConcurrencySlot` state;
* `score-jobs/loopline-jobs`: the asynchronous prediction jobs (`POST /jobs`), run when
  the service asks and every `jobs.sweep_minutes` as a safety net;
* `score/loopline-score`: batch scoring on demand (Run in the Prefect UI with `source` and
  `target` Parquet paths, or `prefect deployment run score/loopline-score -p ...`).
Beside them, the automation `loopline-crash-silent-runs` marks a flow run Crashed when its
heartbeats stop (its worker or machine died), so it neither stays Running nor holds the
retrain's slot, and the next trigger runs. Schedules can be changed or paused in the UI.
`python -m pipelines.deployments --params P` (what `loopline deploy` runs; it needs a
Prefect server: `PREFECT_API_URL`, or `make ui` running) serves them in its own process;
with `prefect.work_pool` set (team mode) it deploys them to that work pool instead and
exits, and the pool's workers, on any machine, run them.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from prefect import deploy, serve
from prefect.automations import Automation
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.events.schemas.events import ResourceSpecification

from loopline.infra.environment import configure_logging, quiet_environment
from loopline.infra.processes import FLOW_HEARTBEAT_S, FLOW_SILENT_S, stopped_by_signals
from loopline.serving.jobs import JOBS_DEPLOYMENT
from loopline.workspace import Workspace
from pipelines.canary import canary
from pipelines.jobs import score_jobs
from pipelines.monitor import RETRAIN_EVENT, monitor
from pipelines.retrain import retrain
from pipelines.score import score

MONITOR_DEPLOYMENT = "loopline-monitor"
CANARY_DEPLOYMENT = "loopline-canary"
RETRAIN_DEPLOYMENT = "loopline-retrain"
SCORE_DEPLOYMENT = "loopline-score"
CRASH_AUTOMATION = "loopline-crash-silent-runs"
ENDED = ("Completed", "Failed", "Cancelled", "Crashed")


def loop_deployments(
    params_path: Path, job_variables: dict[str, str] | None = None
) -> list[RunnerDeployment]:
    """The monitor, canary, retrain, score-jobs and score deployments of the params file.

    Their entrypoints are module paths (`pipelines.retrain:retrain`), so any machine with
    Loopline installed can run them; `job_variables` go to the work pool's job template.
    """
    params = Workspace.load(params_path).params
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
    module = {"entrypoint_type": EntrypointType.MODULE_PATH, "job_variables": job_variables}
    return [
        monitor.to_deployment(
            name=MONITOR_DEPLOYMENT,
            interval=dt.timedelta(minutes=params.monitor.interval_minutes),
            parameters={"params_path": path},
            **module,
        ),
        canary.to_deployment(
            name=CANARY_DEPLOYMENT,
            interval=dt.timedelta(minutes=params.monitor.interval_minutes),
            parameters={"params_path": path},
            **module,
        ),
        retrain.to_deployment(
            name=RETRAIN_DEPLOYMENT,
            cron=params.retrain.cron,
            parameters={"params_path": path},
            triggers=[on_drift],
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
            ),
            **module,
        ),
        jobs_deployment(params_path, job_variables),
        score.to_deployment(name=SCORE_DEPLOYMENT, parameters={"params_path": path}, **module),
    ]


def jobs_deployment(
    params_path: Path, job_variables: dict[str, str] | None = None
) -> RunnerDeployment:
    """The score-jobs deployment: on request, and every `jobs.sweep_minutes`."""
    minutes = Workspace.load(params_path).params.jobs.sweep_minutes
    return score_jobs.to_deployment(
        name=JOBS_DEPLOYMENT, interval=dt.timedelta(minutes=minutes),
        parameters={"params_path": str(params_path.resolve())},
        entrypoint_type=EntrypointType.MODULE_PATH, job_variables=job_variables,
    )  # fmt: skip


def crash_silent_runs() -> str:
    """Create or update the automation that marks a run Crashed when its heartbeats stop.

    Prefect's own recipe for zombie flow runs: after a heartbeat, expect another heartbeat
    or an end within FLOW_SILENT_S (runs beat every FLOW_HEARTBEAT_S), per flow run.
    """
    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{end}" for end in ENDED)},
        match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
        for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
        within=dt.timedelta(seconds=FLOW_SILENT_S),
    )  # fmt: skip
    crash = ChangeFlowRunState(
        state=StateType.CRASHED,
        message=f"no heartbeat for {FLOW_SILENT_S} s (one is sent every {FLOW_HEARTBEAT_S} s): "
        "its worker or machine died",
    )
    try:
        automation = Automation.read(name=CRASH_AUTOMATION)
    except ValueError:
        automation = Automation(name=CRASH_AUTOMATION, trigger=trigger, actions=[crash])
        return str(automation.create().id)
    automation.trigger, automation.actions = trigger, [crash]
    automation.update()
    return str(automation.id)


def serve_deployments(params_path: Path) -> None:
    """Create (or update) the deployments and execute their runs until interrupted."""
    crash_silent_runs()
    serve(*loop_deployments(params_path))


def deploy_to_pool(params_path: Path, work_pool: str) -> list[str]:
    """Create (or update) the deployments in `work_pool`; its workers run them. Their ids.

    The pool's workers start each run as a process in the params file's folder.
    """
    folder = {"working_dir": str(params_path.resolve().parent)}
    crash_silent_runs()
    deployed = deploy(
        *loop_deployments(params_path, job_variables=folder), work_pool_name=work_pool,
        build=False, push=False, print_next_steps_message=False,
    )  # fmt: skip
    return [str(deployment_id) for deployment_id in deployed]


def main() -> None:
    """`python -m pipelines.deployments --params P`: serve them, or deploy them to the pool."""
    parser = argparse.ArgumentParser(description="The loop's Prefect deployments.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    params_path = parser.parse_args().params.resolve()
    quiet_environment()
    configure_logging()
    work_pool = Workspace.load(params_path).params.prefect.work_pool
    if work_pool is None:
        with stopped_by_signals():
            serve_deployments(params_path)
        return
    deployed = deploy_to_pool(params_path, work_pool)
    print(f"{len(deployed)} deployments in work pool {work_pool}")  # noqa: T201 - the answer


if __name__ == "__main__":
    main()
