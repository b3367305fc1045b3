"""Starting the project's long-running processes, and always stopping them.

The one place that knows how to start the BentoML service (`bento_command`): `loopline
serve` runs it in the foreground; `bento_service` runs it for a block (`loopline replay`,
the tests, the serving bench). Also the Prefect runner that serves the monitor and retrain
deployments. A service that already answers is reused and left running.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from loopline.core.errors import LooplineError
from loopline.infra.orchestration import stop_process, tool_environment, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


# Each API worker scores small requests on one core: without this, XGBoost's OpenMP pool
# starts a thread per core in every worker (oversubscribed, and slower for one row).
SERVICE_ENV = {"OMP_NUM_THREADS": "1"}


def bento_command(host: str, port: int) -> list[str]:
    """`bentoml serve` of the Loopline service (run from the project root)."""
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:PredictionAPI",
            "--host", host, "--port", str(port)]  # fmt: skip


@contextlib.contextmanager
def running_server(
    command: list[str], env: dict[str, str], health_url: str, log_file: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """Run a server until its health URL answers 200; always stop it when the block ends.

    Output goes to `log_file`; stopping reaches the server's children too.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_until_healthy(health_url, timeout_s=180, process=process)
            yield process
        finally:
            stop_process(process)


@contextlib.contextmanager
def bento_service(
    params_file: Path, host: str, port: int, log_file: Path, **env: str
) -> Iterator[str]:
    """`bentoml serve` of the Loopline service at host:port for the block; yields its URL.

    `env` adds environment variables (BENTOML_HOME, an API key...).
    """
    url = f"http://{host}:{port}"
    if _healthy(f"{url}/readyz"):
        yield url
        return
    environment = tool_environment(
        LOOPLINE_PARAMS=str(params_file.resolve()), **{**SERVICE_ENV, **env}
    )
    with running_server(bento_command(host, port), environment, f"{url}/readyz", log_file):
        yield url


@contextlib.contextmanager
def deployment_runner(
    params_file: Path, api_url: str, log_file: Path, work_pool: str | None = None
) -> Iterator[None]:
    """`loopline deploy` for the block, once its deployments are registered.

    With a `work_pool`, the deployments are deployed there (its workers run them) and
    nothing runs in this block's own process.
    """
    environment = tool_environment(PREFECT_API_URL=api_url)
    if work_pool is not None:
        from pipelines.deployments import deploy_to_pool  # noqa: PLC0415 - imports Prefect flows

        deploy_to_pool(params_file, work_pool)
        yield
        return
    command = [
        sys.executable,
        "-m",
        "loopline.cli",
        "deploy",
        "--params",
        str(params_file.resolve()),
    ]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            command, cwd=params_file.resolve().parent, env=environment, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait_for_deployment(api_url, "loopline-retrain", process)
            yield
        finally:
            stop_process(process)


def _wait_for_deployment(
    api_url: str, name: str, process: subprocess.Popen, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LooplineError(f"the deployment runner exited with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            found = httpx.post(
                f"{api_url}/deployments/filter",
                json={"deployments": {"name": {"any_": [name]}}},
                timeout=5,
            ).json()
            if found:
                return
        time.sleep(1)
    raise LooplineError(f"deployment {name} was not registered within {timeout_s:.0f} s")
