"""Running stages: logging setup, a local Prefect server, and the stage entry point.

Stages are Prefect flows. With `PREFECT_API_URL` set they report to that server (and show
in its UI); without it, Prefect starts a temporary in-process server per run, which works
but costs ~15 s per stage. `prefect_server()` runs one real server for a whole pipeline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import httpx

from loopline.core.errors import LooplineError

if TYPE_CHECKING:
    from prefect.states import State

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

# Telemetry off for every tool of the stack: the project runs offline.
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DO_NOT_TRACK": "1",
}


def configure_logging(level: int = logging.INFO) -> None:
    """Send `loopline.*` log records to stderr (and, inside flows, to Prefect)."""
    logger = logging.getLogger("loopline")
    logger.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) for h in logging.getLogger().handlers):
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def tool_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child that runs our tools (dvc, stage commands).

    Puts this Python's `bin` folder first on PATH, so `python` in a dvc.yaml command is
    this environment's interpreter even when the venv is not activated; telemetry off.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **QUIET_ENV, "PATH": path, **extra}


def quiet_environment() -> None:
    """Disable telemetry for this process and its children (keeps explicit user values)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LooplineError(f"server exited with code {process.returncode} before {url} was up")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise LooplineError(f"{url} did not become healthy within {timeout_s:.0f} s")


def stop_process(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stop a server started by us (SIGTERM to its process group, then SIGKILL)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def prefect_server(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 4200,
    log_file: Path | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Run `prefect server start` (SQLite under `home`) for the duration of the block.

    Yields the API URL (`http://host:port/api`). If a Prefect server already answers
    there, it is reused and left running.
    """
    api = f"http://{host}:{port}/api"
    with contextlib.suppress(httpx.HTTPError):
        if httpx.get(f"{api}/health", timeout=2.0).status_code == 200:
            log.info("using the Prefect server already running at %s", api)
            yield api
            return
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(home.resolve())}
    env.pop("PREFECT_API_URL", None)
    output = (log_file or home / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_healthy(f"{api}/health", startup_timeout_s, process)
        log.info("Prefect server up at %s (UI: http://%s:%d)", api, host, port)
        yield api
    finally:
        stop_process(process)
        output.close()


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


STAGE_LOG = Path("logs") / "stages.log"  # tracebacks of expected stage failures


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
    traceback on screen.
    """
    quiet_environment()
    configure_logging()
    try:
        flow()
    except LooplineError as error:
        STAGE_LOG.parent.mkdir(parents=True, exist_ok=True)
        with STAGE_LOG.open("a") as trace:
            trace.write(f"--- {dt.datetime.now(dt.UTC).isoformat()} {sys.argv[0]}\n")
            traceback.print_exception(error, file=trace)
        log.error("%s\n(traceback in %s)", error, STAGE_LOG)
        raise SystemExit(1) from None


def stage_commands(dvc_yaml: Path, last: str | None = None) -> list[tuple[str, str]]:
    """(stage name, command line) of dvc.yaml's stages in file order, foreach expanded.

    The order in dvc.yaml is already one that DVC's graph allows; `last` stops after that
    stage. This is how a dataset that DVC does not track runs the same pipeline.
    """
    import yaml  # noqa: PLC0415

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    names = list(stages)
    if last is not None and last not in names:
        raise LooplineError(f"no stage {last!r} in {dvc_yaml}; stages: {names}")
    commands = []
    for name in names[: names.index(last) + 1 if last else None]:
        definition = stages[name]
        command = definition["do"]["cmd"] if "foreach" in definition else definition["cmd"]
        for item in definition.get("foreach", [None]):
            line = command.replace("${item}", str(item)) if item is not None else command
            commands.append((name, line))
    return commands
