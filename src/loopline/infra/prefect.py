"""Prefect wiring the library needs: the stage entry point, and questions to the API.

Stages are Prefect flows. With `PREFECT_API_URL` set they report to that server (and show
in its UI); without it, Prefect starts a temporary in-process server per run, which works
but costs ~15 s per stage: `loopline run` starts one real server for the whole pipeline
(`loopline.infra.processes.prefect_server`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import httpx

from loopline.core.errors import LooplineError
from loopline.infra.environment import configure_logging, quiet_environment
from loopline.infra.outage import one_line
from loopline.infra.processes import stopped_by_signals

if TYPE_CHECKING:
    from prefect.states import State

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)
STAGE_LOG = Path("logs") / "stages.log"  # tracebacks of expected stage failures
FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def runs_in_progress(flow_name: str) -> list[str]:
    """Ids of runs of `flow_name` that are running, pending, or scheduled and already due.

    Future runs of a cron schedule do not count. Asks the Prefect API in use.
    """
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.client.schemas.filters import (  # noqa: PLC0415
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )  # fmt: skip
    from prefect.client.schemas.objects import StateType  # noqa: PLC0415

    states = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
            ),
        )
    now = dt.datetime.now(dt.UTC)
    return [
        str(run.id)
        for run in runs
        if run.state_type is not StateType.SCHEDULED
        or (run.expected_start_time is not None and run.expected_start_time <= now)
    ]


def wait_for_flow_run(
    api_url: str, flow_name: str, parameters: dict[str, str], timeout_s: float
) -> dict[str, Any]:
    """The newest run of `flow_name` started with `parameters`, once it has finished.

    Asks the Prefect API every few seconds. An answer other than 200 (a server busy
    migrating or restarting), or no answer at all (a server down or restarting), is asked
    again until the deadline, and named if it is the last one. Returns the run's name and
    final state type.
    """
    deadline = time.monotonic() + timeout_s
    query = {"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC",
             "limit": 20}  # fmt: skip
    last_answer = "none"
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{api_url}/flow_runs/filter", json=query, timeout=10)
        except httpx.TransportError as error:  # refused or cut: the server is restarting
            last_answer = f"Prefect server unreachable at {api_url} ({one_line(error)})"
            time.sleep(3)
            continue
        if response.status_code == 200:
            mine = [
                run for run in response.json()
                if all(run["parameters"].get(k) == v for k, v in parameters.items())
            ]  # fmt: skip
            if mine and mine[0]["state_type"] in FINISHED:
                return {"flow_run": mine[0]["name"], "state": mine[0]["state_type"]}
            last_answer = mine[0]["state_type"] if mine else "no run yet"
        else:
            last_answer = f"HTTP {response.status_code}: {response.text[:200]}"
        time.sleep(3)
    raise LooplineError(
        f"no finished {flow_name} run for {parameters} within {timeout_s:.0f} s (last "
        f"answer: {last_answer}); are the loop's deployments running?"
    )


def expected_failures(body: Callable[P, R]) -> Callable[P, R | State]:
    """A Prefect flow body whose LooplineError ends the flow run as a Failed state.

    Prefect logs a raised exception with its traceback; bad data or a bad setting is not
    a bug, so the run ends as a Failed state carrying the error instead (the state's
    message is the error's first line). Calling the flow still raises the error, so
    `run_stage` reports it, once. (Not for tasks: a task called inside a flow hands such
    a state back instead of raising; keep input errors in the flow body.)
    """

    @functools.wraps(body)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | State:
        try:
            return body(*args, **kwargs)
        except LooplineError as error:
            from prefect.states import Failed  # noqa: PLC0415 - Prefect loads only in stages

            return Failed(message=str(error).splitlines()[0], data=error)

    return wrapper


def run_stage(flow: Callable[[], object]) -> None:
    """Entry point of a stage module: run its flow, turn expected failures into exit 1.

    A LooplineError (bad data, bad config) is reported as one readable message, its
    traceback appended to `logs/stages.log`; anything else is a bug and keeps its
    traceback on screen. SIGTERM and SIGHUP stop the flow as Ctrl-C does.
    """
    quiet_environment()
    configure_logging()
    try:
        with stopped_by_signals():
            flow()
    except LooplineError as error:
        STAGE_LOG.parent.mkdir(parents=True, exist_ok=True)
        with STAGE_LOG.open("a") as trace:
            trace.write(f"--- {dt.datetime.now(dt.UTC).isoformat()} {sys.argv[0]}\n")
            traceback.print_exception(error, file=trace)
        log.error("%s\n(traceback in %s)", error, STAGE_LOG)
        raise SystemExit(1) from None
