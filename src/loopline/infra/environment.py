"""The environment every Loopline process and child runs with: offline, logging set up.

Telemetry is off for every tool of the stack (the project runs without internet), and a
child that runs one of our tools (dvc, a stage, a server) finds this Python's commands
first on PATH, even when the virtual environment is not activated.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

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


def quiet_environment() -> None:
    """Disable telemetry for this process and its children (keeps explicit user values)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


# Names of variables this process set for itself alone (comma-separated): a command typed
# by hand gives up on a server that is down within seconds, but the servers, workers and
# flows it starts run long and should wait a restart out with the clients' own retries.
OWN_ONLY_ENV = "LOOPLINE_OWN_ONLY"


def set_for_this_process(values: dict[str, str]) -> None:
    """Set each variable not set already, for this process but not the children it starts."""
    mine = [key for key in values if key not in os.environ]
    for key in mine:
        os.environ[key] = values[key]
    known = [k for k in os.environ.get(OWN_ONLY_ENV, "").split(",") if k]
    os.environ[OWN_ONLY_ENV] = ",".join(dict.fromkeys([*known, *mine]))


def tool_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child that runs our tools (dvc, stages, servers).

    Puts this Python's `bin` folder first on PATH, so `python` in a dvc.yaml command is
    this environment's interpreter even when the venv is not activated; telemetry off.
    Variables set with `set_for_this_process` are left out.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    own = {OWN_ONLY_ENV, *os.environ.get(OWN_ONLY_ENV, "").split(",")}
    inherited = {key: value for key, value in os.environ.items() if key not in own}
    return {**inherited, **QUIET_ENV, "PATH": path, **extra}
