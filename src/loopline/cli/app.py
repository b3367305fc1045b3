"""The `loopline` command: data bootstrap, the whole pipeline, serving, the loop, the UIs.

Every command reads one params file into a Workspace (`--params`, default params.yaml;
its relative paths resolve in its folder, wherever the command runs). Every process a
command starts is started by `loopline.infra.processes` and stopped when the command
ends, whether it finishes, fails, or gets Ctrl-C, SIGTERM or SIGHUP. Flows live in
`pipelines/`, which the library never imports: the commands that run them start their
modules as processes, as dvc.yaml does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from loopline.cli.registry import registry_app
from loopline.cli.servers import (
    alert_servers,
    control_folder,
    describe,
    report,
    request_restart,
    team_servers,
    ui_servers,
)
from loopline.cli.unreachable import client_settings, server_down
from loopline.core.errors import LooplineError
from loopline.core.params import PARAMS_ENV
from loopline.data.time_axis import ReplayOptions
from loopline.infra import processes
from loopline.infra.dvc import stage_commands
from loopline.infra.environment import configure_logging, quiet_environment, tool_environment
from loopline.infra.processes import Processes, python_module, stopped_by_signals
from loopline.workspace import Workspace

app = typer.Typer(help="Loopline: a closed-loop MLOps reference project.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
log = logging.getLogger("loopline.cli")

ParamsOption = Annotated[Path, typer.Option("--params", help="Path to params.yaml.")]
PARAMS = Path("params.yaml")


@app.callback()
def _setup() -> None:
    quiet_environment()
    client_settings()
    configure_logging()


def main() -> None:
    """The `loopline` command: `app`, with a server that cannot be reached told in one line."""
    try:
        app()
    except Exception as error:
        if (line := server_down(error)) is None:
            raise
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None


def fail(error: LooplineError) -> typer.Exit:
    """Print `error` as one red line; the exit to raise."""
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@contextlib.contextmanager
def managed() -> Iterator[Processes]:
    """The processes of one command, stopped at its end; signals and errors reported."""
    try:
        with stopped_by_signals(), Processes() as running:
            yield running
    except LooplineError as error:
        raise fail(error) from None


def prefect_api(running: Processes, workspace: Workspace, port: int) -> str:
    """The Prefect API: `prefect.api_url`, or a local server on `port` (reused if up)."""
    if workspace.params.prefect.api_url:
        return workspace.params.prefect.api_url
    home = workspace.root / ".prefect"
    return running.start(processes.prefect_server(home, "127.0.0.1", port), reuse=True)


@app.command()
def data(
    params: ParamsOption = PARAMS,
    repin: Annotated[
        bool, typer.Option(help="Rebuild from the source and rewrite data.dvc (maintainers).")
    ] = False,
) -> None:
    """Get the raw data that data.dvc pins: already there, `dvc pull`, or rebuilt and verified."""
    from loopline.data.datastore import ensure_data  # noqa: PLC0415 - keep `--help` fast

    try:
        workspace = Workspace.load(params)
        paths = workspace.params.paths
        status = ensure_data(workspace.dataset, paths.data, paths.data_dvc, repin)
    except LooplineError as error:
        raise fail(error) from None
    typer.echo(f"data: {status.how} ({paths.data}, {status.md5})")


@app.command()
def run(
    params: ParamsOption = PARAMS,
    stage: Annotated[str | None, typer.Argument(help="Run only up to this dvc.yaml stage.")] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
    force: Annotated[
        bool, typer.Option("--force", help="Run every stage, even those DVC finds up to date.")
    ] = False,
) -> None:
    """Fetch the data, then `dvc repro` with every stage reporting to one Prefect server.

    The stages read the `--params` file (params.yaml unless given, such as the team file of
    `loopline up --profile team`); DVC records params.yaml's values, so a first run against
    other servers needs `--force` where the outputs already exist.

    DVC tracks the dataset params.yaml names. A params file for another dataset (such as
    params.wa_churn.yaml) runs the same dvc.yaml stage commands in the same order, with
    every output under its own `paths`, outside DVC's lock and cache.
    """
    from loopline.training.families import check_families  # noqa: PLC0415 - imports them all

    data(params=params, repin=False)
    with managed() as running:
        workspace = Workspace.load(params)
        check_families(workspace.params)  # a misspelled family setting fails now, not later
        api_url = prefect_api(running, workspace, port)
        env = tool_environment(PREFECT_API_URL=api_url, **{PARAMS_ENV: str(workspace.params_file)})
        if workspace.dvc_tracked:
            typer.echo(f"$ dvc repro {stage or ''}  (Prefect API {api_url})")
            command = python_module("dvc", "repro", *(["--force"] if force else []),
                              *([stage] if stage else []))  # fmt: skip
            returncode = running.run(command, env, cwd=workspace.root)
        else:
            returncode = _run_stages(running, workspace, stage, env)
    if returncode != 0:
        raise typer.Exit(code=returncode)
    where = "`dvc metrics show`" if workspace.dvc_tracked else f"{workspace.params.paths.metrics}/"
    typer.echo(f"done: {where} for numbers, `make ui` for the Prefect UI.")


def _run_stages(
    running: Processes, workspace: Workspace, last: str | None, env: dict[str, str]
) -> int:
    """Run dvc.yaml's stage commands in order, up to `last`; the first non-zero exit, or 0."""
    for name, line in stage_commands(workspace.root / "dvc.yaml", workspace.params_file, last):
        typer.echo(f"$ {line}  (stage {name})")
        returncode = running.run(shlex.split(line), env, cwd=workspace.root)
        if returncode != 0:
            return returncode
    return 0


@app.command()
def serve(params: ParamsOption = PARAMS) -> None:
    """Serve the champion with BentoML on serve.host:serve.port (Ctrl-C stops)."""
    with managed() as running:
        workspace = Workspace.load(params)
        settings = workspace.params.serve
        url = running.start(
            processes.bentoml_service(workspace.params_file, settings.host, settings.port)
        )
        typer.echo(f"serving on {url} (OpenAPI page at /)")
        with contextlib.suppress(KeyboardInterrupt):
            running.wait()


@app.command()
def score(
    source: Annotated[Path, typer.Argument(help="Parquet file of records to score.")],
    target: Annotated[Path, typer.Argument(help="Parquet file to write (replaced atomically).")],
    version: Annotated[
        str | None, typer.Option(help="Registered version (default: the champion).")
    ] = None,
    params: ParamsOption = PARAMS,
) -> None:
    """Batch-score a Parquet file of records with the champion's compiled scorer."""
    from loopline.serving.batch import score_registered  # noqa: PLC0415 - MLflow import is slow

    try:
        result = score_registered(Workspace.load(params), source, target, version)
    except LooplineError as error:
        raise fail(error) from None
    typer.echo(
        f"{result.rows:,} rows scored by version {result.model_version} in "
        f"{result.seconds:.2f} s ({result.rows_per_s:,.0f} rows/s) -> {target}"
    )


@app.command()
def deploy(params: ParamsOption = PARAMS) -> None:
    """Create the loop's deployments: monitor, canary, retrain, score-jobs, score.

    With `prefect.work_pool` set they go to that work pool and the command returns (the
    pool's workers run them); otherwise this process runs them until Ctrl-C.
    """
    with managed() as running:
        workspace = Workspace.load(params)
        api_url = workspace.params.prefect.api_url or os.environ.get("PREFECT_API_URL")
        if not api_url:
            raise LooplineError("set PREFECT_API_URL to a Prefect server (make ui starts one)")
        env = tool_environment(PREFECT_API_URL=api_url)
        command = processes.deployments_command(workspace.params_file)
        returncode = running.run(command, env, cwd=workspace.root)
    raise typer.Exit(code=returncode)


@app.command()
def up(
    params: ParamsOption = PARAMS,
    profile: Annotated[
        str, typer.Option(help="embedded: the UIs over the local files; team: shared servers.")
    ] = "embedded",
) -> None:
    """Start the project's servers on 127.0.0.1 until Ctrl-C, and stop them all.

    `--profile team` starts PostgreSQL, MLflow and Prefect servers on it, a work pool with
    its workers, and the Evidently UI; then writes `team.params_file`, the params file
    pointed at them (pass it to `loopline replay --params`, `loopline serve` ...).
    """
    if profile == "embedded":
        ui(params=params)
        return
    if profile != "team":
        raise fail(LooplineError(f"--profile {profile!r}: choose embedded or team"))
    try:
        with stopped_by_signals(), team_servers(params.resolve()) as servers:
            names = ", ".join(r.server.key for r in servers.running.running)
            typer.echo(f"team servers up:\n{describe(servers)}\nA server that dies is started "
                       f"again; `loopline restart NAME` restarts one ({names}).\n"
                       "Ctrl-C stops them all.")  # fmt: skip
            with contextlib.suppress(KeyboardInterrupt):
                control = control_folder(Workspace.load(params), "team")
                servers.running.supervise(report, control)
            typer.echo("stopping")
    except LooplineError as error:
        raise fail(error) from None


@app.command(name="mlp-node")
def mlp_node(
    node_rank: Annotated[int, typer.Option(help="This machine's node rank, 1..mlp.nnodes-1.")],
    params: ParamsOption = PARAMS,
) -> None:
    """Join a multi-node MLP training as one of its other nodes (node 0 runs `dvc repro`).

    Needs the same featurize outputs here (`dvc pull`) and `train.mlp.rdzv_endpoint`
    reachable; runs `train.mlp.nproc_per_node` processes until the training ends.
    """
    from loopline.training.families import family_params  # noqa: PLC0415 - imports torch
    from loopline.training.families.mlp.launch import join_training  # noqa: PLC0415

    try:
        workspace = Workspace.load(params)
        mlp = family_params(workspace.params, "mlp")
        with stopped_by_signals():
            join_training(workspace.params.paths.features, mlp, workspace.params.seed,
                          node_rank, env={})  # fmt: skip
    except LooplineError as error:
        raise fail(error) from None


def _day_option(text: str | None) -> str | None:
    """An ISO date option, checked (the flow parses it again)."""
    if text is not None:
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            raise fail(LooplineError(f"{text!r} is not a date (YYYY-MM-DD)")) from None
    return text


@app.command()
def monitor(
    params: ParamsOption = PARAMS,
    first_day: Annotated[str | None, typer.Option(help="First event date (ISO).")] = None,
    last_day: Annotated[str | None, typer.Option(help="Last event date (ISO).")] = None,
) -> None:
    """Monitor one batch of logged traffic now (the monitor flow, `pipelines.monitor`).

    A dataset with a time column: the examples of the given days (default: the last 7
    logged). Without one: everything logged since the last batch.
    """
    bounds = (("first-day", _day_option(first_day)), ("last-day", _day_option(last_day)))
    days = [f"--{name}={value}" for name, value in bounds if value]
    with managed() as running:
        workspace = Workspace.load(params)
        command = python_module("pipelines.monitor", "--params", str(workspace.params_file), *days)
        returncode = running.run(command, tool_environment(), cwd=workspace.root)
    raise typer.Exit(code=returncode)


@app.command()
def drift(
    params: ParamsOption = PARAMS,
    since: Annotated[str | None, typer.Option(help="Batches ending after this (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="... up to this (ISO).")] = None,
    champion: Annotated[
        bool, typer.Option(help="Only the batches the champion served (since promoted).")
    ] = False,
) -> None:
    """Drift of a period, merged from the measured batches' profiles (no row read again).

    This month: `--since 2013-07-01`; since the champion was promoted: `--champion`.
    Prints each field's distance, the limit at the period's size, and the drift share.
    """
    from loopline.monitoring.periods import period_drift  # noqa: PLC0415 - heavy import
    from loopline.registry.versions import CHAMPION  # noqa: PLC0415

    try:
        workspace = Workspace.load(params)
        version = workspace.registry.alias_version(CHAMPION) if champion else None
        if champion and version is None:
            raise LooplineError(f"no {CHAMPION} registered yet: nothing was promoted")
        found = period_drift(workspace, since, until, version)
    except LooplineError as error:
        raise fail(error) from None
    drift = found.drift
    typer.echo(
        f"{found.batches} batches, {found.profile.rows} predictions, against the reference "
        f"of version {found.version}: drift share {drift.share:.2f}"
    )
    for name, test in drift.fields.items():
        mark = "DRIFTED" if test.drifted else ""
        typer.echo(
            f"  {name:<16} {test.test:<14} {test.distance:8.4f}  limit {test.limit:.4f}  {mark}"
        )


@app.command()
def canary(params: ParamsOption = PARAMS) -> None:
    """Judge the running canary once, now (the canary flow, `pipelines.canary`).

    Hold, the next step, promote or roll back, by the guardrails and the always-valid
    test on labeled records (README "Canaries"); `loopline registry status` shows it.
    """
    with managed() as running:
        workspace = Workspace.load(params)
        command = python_module("pipelines.canary", "--params", str(workspace.params_file))
        returncode = running.run(command, tool_environment(), cwd=workspace.root)
    raise typer.Exit(code=returncode)


@app.command()
def replay(  # noqa: PLR0917 - typer: every option is a parameter
    params: ParamsOption = PARAMS,
    start: Annotated[
        str | None, typer.Option(help="First day played (ISO); default: after the test window.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Last day played (ISO); default: the data's last day.")
    ] = None,
    step: Annotated[
        str | None,
        typer.Option(
            help="Period length: days (7d, 14d ...) for a dataset with a time column; "
            "arrivals per batch (200, 500 ...) for one without. Default: 7d or 200."
        ),
    ] = None,
    arrive_by: Annotated[
        str | None,
        typer.Option(
            help="Without a time column: the left-out examples arrive sorted by this "
            "record field (a shift scenario) instead of in a seeded random order."
        ),
    ] = None,
    descending: Annotated[
        bool, typer.Option("--descending", help="With --arrive-by: largest first.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
) -> None:
    """Play data no model has seen through the live service and the loop; report.

    A dataset with a time column plays the days after the test window; one without, the
    examples its split left out, as arrivals. Starts what is not already running
    (Prefect server, BentoML service, the deployments runner), runs the replay
    (`pipelines.replay`), and stops what it started, also when interrupted: the report
    then holds the batches played. With `prefect.work_pool` set (team mode), the
    deployments go to the pool, whose workers run the retrains.
    """
    options = ReplayOptions(
        start=dt.date.fromisoformat(_day_option(start)) if start else None,
        end=dt.date.fromisoformat(_day_option(end)) if end else None,
        step=step, arrive_by=arrive_by, descending=descending,
    )  # fmt: skip
    try:
        workspace = Workspace.load(params)
        workspace.axis.check_replay(options)  # before any server starts
    except LooplineError as error:
        raise fail(error) from None
    with managed() as running:
        url, api_url = _loop_servers(running, workspace, port)
        command = python_module("pipelines.replay", "--params", str(workspace.params_file),
                          "--url", url, "--api-url", api_url, *_replay_flags(options))  # fmt: skip
        returncode = running.run(command, tool_environment(PREFECT_API_URL=api_url),
                                 cwd=workspace.root)  # fmt: skip
    report = workspace.params.paths.replay / "report.json"
    if report.is_file():
        typer.echo(json.dumps(json.loads(report.read_text())["summary"], indent=2))
        typer.echo(f"report: {report.with_suffix('.html')}")
    raise typer.Exit(code=returncode)


def _loop_servers(running: Processes, workspace: Workspace, port: int) -> tuple[str, str]:
    """What the loop needs up: Prefect, the service, the deployments; their URLs."""
    api_url = prefect_api(running, workspace, port)
    logs = workspace.params.paths.replay / "logs"
    serve = workspace.params.serve
    service = processes.bentoml_service(
        workspace.params_file, serve.host, serve.port, logs / "service.log",
        PREFECT_API_URL=api_url,  # where it asks for prediction-job runs
    )  # fmt: skip
    url = running.start(service, reuse=True)
    if workspace.params.prefect.work_pool is None:
        runner = processes.deployment_runner(
            workspace.params_file, api_url, logs / "deployments.log"
        )
        running.start(runner)
    else:  # team mode: the pool's workers run them
        env = tool_environment(PREFECT_API_URL=api_url)
        running.capture(processes.deployments_command(workspace.params_file), env)
    return url, api_url


def _replay_flags(options: ReplayOptions) -> list[str]:
    """`options` as the replay module's command-line flags."""
    flags = [f"--{name}={value}" for name, value in (
        ("start", options.start), ("end", options.end), ("step", options.step),
        ("arrive-by", options.arrive_by)) if value is not None]  # fmt: skip
    return [*flags, *(["--descending"] if options.descending else [])]


@app.command()
def ui(  # noqa: PLR0917 - typer: every option is a parameter
    params: ParamsOption = PARAMS,
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect UI.")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    evidently_port: Annotated[int, typer.Option(help="Port of the drift dashboard.")] = 8000,
    prometheus_port: Annotated[int, typer.Option(help="Port of Prometheus (alerts).")] = 9090,
    exporter_port: Annotated[int, typer.Option(help="Port of the loop's exporter.")] = 9108,
) -> None:
    """Serve the UIs on 127.0.0.1 until Ctrl-C.

    Prefect shows the flow runs, MLflow the models, Evidently the drift dashboard, and
    Prometheus the alerts (over the service at serve.host:serve.port and the loop's exporter).
    """
    with managed() as running:
        workspace = Workspace.load(params)
        settings = workspace.params
        if settings.prefect.api_url:  # a team file: its servers already serve these UIs
            raise LooplineError(
                f"{params} points at running servers: Prefect {settings.prefect.api_url}, "
                f"MLflow {settings.mlflow.tracking_uri}, drift {settings.monitor.workspace}; "
                "open those (`loopline up --profile team` serves them)"
            )
        servers = ui_servers(workspace, prefect_port, mlflow_port, evidently_port)
        try:
            servers += alert_servers(workspace, prometheus_port, exporter_port)
        except LooplineError as missing:  # the other UIs still start
            typer.secho(f"no alerts: {missing}", fg=typer.colors.YELLOW, err=True)
        for server in servers:
            typer.echo(f"{server.name:<10} {running.start(server)}")
        typer.echo("A server that dies is started again; `loopline restart NAME` restarts one.")
        typer.echo("Ctrl-C stops them all.")
        with contextlib.suppress(KeyboardInterrupt):
            running.supervise(report, control_folder(workspace, "embedded"))
        typer.echo("stopping")


@app.command()
def restart(
    server: Annotated[str, typer.Argument(help="The server's name, as `loopline up` lists it.")],
    params: ParamsOption = PARAMS,
    profile: Annotated[
        str, typer.Option(help="team: a server of `loopline up --profile team`; embedded: of ui.")
    ] = "team",
    timeout_s: Annotated[float, typer.Option(help="How long to wait for it to be back.")] = 180,
) -> None:
    """Restart one server of a running `loopline up`, leaving the others up."""
    try:
        control = control_folder(Workspace.load(params), profile)
        typer.echo(request_restart(control, server, timeout_s))
    except LooplineError as error:
        raise fail(error) from None


@app.command()
def exporter(
    params: ParamsOption = PARAMS,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of /metrics.")] = 9108,
) -> None:
    """Serve the loop's facts for Prometheus at /metrics until Ctrl-C (`make ui` starts it).

    The champion (servable? where the ledger left it?), the monitor's latest decision and
    batch (incidents, drift), and how far the labels lag behind the predictions.
    """
    from loopline.loop.exporter import serve_exporter  # noqa: PLC0415 - MLflow import is slow

    with managed():
        serve_exporter(Workspace.load(params), host, port)
        typer.echo(f"exporter at http://{host}:{port}/metrics")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
