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


def tool_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child that runs our tools (dvc, stages, servers).

    Puts this Python's `bin` folder first on PATH, so `python` in a dvc.yaml command is
    this environment's interpreter even when the venv is not activated; telemetry off.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **QUIET_ENV, "PATH": path, **extra}
