"""The `loopline` command: data bootstrap, the whole pipeline, and the UIs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from loopline.core.errors import LooplineError
from loopline.core.params import Params, load_params
from loopline.infra.orchestration import (
    configure_logging,
    prefect_server,
    quiet_environment,
    stage_commands,
    stop_process,
    tool_environment,
)
from loopline.infra.services import SERVICE_ENV, bento_command

app = typer.Typer(help="Loopline: a closed-loop MLOps reference project.", no_args_is_help=True)
log = logging.getLogger("loopline.cli")

ParamsOption = Annotated[Path, typer.Option("--params", help="Path to params.yaml.")]
PREFECT_HOME = Path(".prefect")


@app.callback()
def _setup() -> None:
    quiet_environment()
    configure_logging()


@contextlib.contextmanager
def _prefect_api(settings: Params, port: int) -> Iterator[str]:
    """The Prefect API: `prefect.api_url`, or a local server on `port` for the block."""
    if settings.prefect.api_url:
        yield settings.prefect.api_url
        return
    with prefect_server(PREFECT_HOME, port=port) as api_url:
        yield api_url


def _fail(error: LooplineError) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def data(
    params: ParamsOption = Path("params.yaml"),
    repin: Annotated[
        bool, typer.Option(help="Rebuild from the source and rewrite data.dvc (maintainers).")
    ] = False,
) -> None:
    """Get the raw data that data.dvc pins: already there, `dvc pull`, or rebuilt and verified."""
    from loopline.data.datasets import get_dataset  # noqa: PLC0415 - keep `--help` fast
    from loopline.data.datastore import ensure_data  # noqa: PLC0415

    try:
        settings = load_params(params)
        paths = settings.paths.rooted(params.resolve().parent)  # as the service resolves them
        status = ensure_data(get_dataset(settings.dataset.name), paths.data, paths.data_dvc, repin)
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(f"data: {status.how} ({paths.data}, {status.md5})")


@app.command()
def run(
    params: ParamsOption = Path("params.yaml"),
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
    data(params=params, repin=False)
    settings = load_params(params)
    tracked = settings.dataset.name == load_params(Path("params.yaml")).dataset.name
    try:
        with _prefect_api(settings, port) as api_url:
            env = tool_environment(PREFECT_API_URL=api_url, LOOPLINE_PARAMS=str(params.resolve()))
            if tracked:
                command = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []),
                           *([stage] if stage else [])]  # fmt: skip
                typer.echo(f"$ dvc repro {stage or ''}  (Prefect API {api_url})")
                returncode = subprocess.run(command, env=env, check=False).returncode
            else:
                returncode = _run_stages(Path("dvc.yaml"), stage, env)
    except LooplineError as error:
        raise _fail(error) from None
    if returncode != 0:
        raise typer.Exit(code=returncode)
    where = "`dvc metrics show`" if tracked else f"{settings.paths.metrics}/"
    typer.echo(f"done: {where} for numbers, `make ui` for the Prefect UI.")


def _day(text: str | None) -> dt.date | None:
    """An ISO date option, or None."""
    return dt.date.fromisoformat(text) if text else None


def _run_stages(dvc_yaml: Path, last: str | None, env: dict[str, str]) -> int:
    """Run dvc.yaml's stage commands in order, up to `last`; the first non-zero exit, or 0."""
    for name, line in stage_commands(dvc_yaml, last):
        typer.echo(f"$ {line}  (stage {name})")
        returncode = subprocess.run(shlex.split(line), env=env, check=False).returncode
        if returncode != 0:
            return returncode
    return 0


@app.command()
def serve(params: ParamsOption = Path("params.yaml")) -> None:
    """Serve the champion with BentoML on serve.host:serve.port (Ctrl-C stops)."""
    settings = load_params(params).serve
    env = {**os.environ, **SERVICE_ENV, "LOOPLINE_PARAMS": str(params.resolve())}
    command = bento_command(settings.host, settings.port)
    typer.echo(f"serving on http://{settings.host}:{settings.port} (OpenAPI page at /)")
    raise typer.Exit(subprocess.run(command, env=env, check=False).returncode)


@app.command()
def score(
    source: Annotated[Path, typer.Argument(help="Parquet file of records to score.")],
    target: Annotated[Path, typer.Argument(help="Parquet file to write (replaced atomically).")],
    version: Annotated[
        str | None, typer.Option(help="Registered version (default: the champion).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Batch-score a Parquet file of records with the champion's compiled scorer."""
    from loopline.serving.batch import score_registered  # noqa: PLC0415 - MLflow import is slow

    try:
        settings = load_params(params)
        result = score_registered(settings, source, target, version, root=params.resolve().parent)
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(
        f"{result.rows:,} rows scored by version {result.model_version} in "
        f"{result.seconds:.2f} s ({result.rows_per_s:,.0f} rows/s) -> {target}"
    )


@app.command()
def deploy(params: ParamsOption = Path("params.yaml")) -> None:
    """Create the monitor, retrain and score deployments (schedules + drift trigger).

    With `prefect.work_pool` set they go to that work pool and the command returns (the
    pool's workers run them); otherwise this process runs them until Ctrl-C.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    from pipelines.deployments import deploy_to_pool, serve_deployments  # noqa: PLC0415

    settings = load_params(params)
    api_url = settings.prefect.api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise _fail(LooplineError("set PREFECT_API_URL to a Prefect server (make ui starts one)"))
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        if settings.prefect.work_pool is None:
            serve_deployments(params)
            return
        deployed = deploy_to_pool(params, settings.prefect.work_pool)
    typer.echo(f"{len(deployed)} deployments in work pool {settings.prefect.work_pool}")


@app.command()
def up(
    params: ParamsOption = Path("params.yaml"),
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
        raise _fail(LooplineError(f"--profile {profile!r}: choose embedded or team"))
    from loopline.cli.team import describe, team_servers  # noqa: PLC0415 - starts servers

    try:
        with team_servers(params) as servers:
            typer.echo(f"team servers up:\n{describe(servers)}\nCtrl-C stops them all.")
            for stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and kill, even when the
                signal.signal(stop, signal.default_int_handler)  # shell started us ignoring it
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    signal.pause()
            typer.echo("stopping")
    except LooplineError as error:
        raise _fail(error) from None


@app.command(name="mlp-node")
def mlp_node(
    node_rank: Annotated[int, typer.Option(help="This machine's node rank, 1..mlp.nnodes-1.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Join a multi-node MLP training as one of its other nodes (node 0 runs `dvc repro`).

    Needs the same featurize outputs here (`dvc pull`) and `train.mlp.rdzv_endpoint`
    reachable; runs `train.mlp.nproc_per_node` processes until the training ends.
    """
    from loopline.training.families.mlp.launch import join_training  # noqa: PLC0415 - imports torch

    settings = load_params(params)
    root = params.resolve().parent
    try:
        join_training(settings.paths.rooted(root).features, settings.train.mlp, settings.seed,
                      node_rank, env={})  # fmt: skip
    except LooplineError as error:
        raise _fail(error) from None


@app.command()
def monitor(
    params: ParamsOption = Path("params.yaml"),
    first_day: Annotated[str | None, typer.Option(help="First event date (ISO).")] = None,
    last_day: Annotated[str | None, typer.Option(help="Last event date (ISO).")] = None,
) -> None:
    """Monitor one batch of logged traffic now.

    A dataset with a time column: the examples of the given days (default: the last 7
    logged). Without one: everything logged since the last batch.
    """
    from pipelines.monitor import monitor as monitor_flow  # noqa: PLC0415

    try:
        result = monitor_flow(
            first_day=_day(first_day), last_day=_day(last_day), params_path=params
        )
    except LooplineError as error:
        raise _fail(error) from None
    if not result["measured"]:
        typer.echo(result["reason"])
        return
    verdict = "RETRAIN" if result["trigger"] else "no retrain"
    typer.echo(f"{result['outcome']['batch_id']}: {verdict} ({result['reason']})")
    typer.echo(f"report: {result['report']}")


@app.command()
def replay(  # noqa: PLR0917 - typer: every option is a parameter
    params: ParamsOption = Path("params.yaml"),
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
    (Prefect server, BentoML service, the deployments runner) and stops what it started.
    With `prefect.work_pool` set (team mode), the deployments are deployed to the pool,
    whose workers run the retrains.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    from loopline.data.datasets import get_dataset  # noqa: PLC0415
    from loopline.infra.services import bento_service, deployment_runner  # noqa: PLC0415
    from loopline.loop.replay import Replay, check_arrival_field, write_report  # noqa: PLC0415

    settings = load_params(params)
    dataset = get_dataset(settings.dataset.name)
    has_time = dataset.has_time
    step = step or ("7d" if has_time else "200")
    if has_time and (not step.endswith("d") or not step[:-1].isdigit()):
        raise _fail(LooplineError(f"--step {step!r}: give a number of days such as 7d"))
    if not has_time and not step.isdigit():
        raise _fail(
            LooplineError(
                f"--step {step!r}: dataset {settings.dataset.name!r} has no time column; "
                "give a number of arrivals per batch such as 200"
            )
        )
    if has_time and arrive_by:
        raise _fail(LooplineError("--arrive-by: a dataset with a time column plays its days"))
    if arrive_by:
        try:
            check_arrival_field(dataset, arrive_by)
        except LooplineError as error:
            raise _fail(error) from None
    logs = settings.paths.replay / "logs"
    try:
        with (
            _prefect_api(settings, port) as api_url,
            temporary_settings(updates={PREFECT_API_URL: api_url}),
            bento_service(
                params, settings.serve.host, settings.serve.port, logs / "service.log"
            ) as url,
            deployment_runner(
                params, api_url, logs / "deployments.log", settings.prefect.work_pool
            ),
        ):
            replay = Replay(params, url, api_url, os.environ.get(settings.serve.api_key_env, ""))
            if has_time:
                story = replay.run(_day(start), _day(end), int(step[:-1]))
            else:
                story = replay.run_arrivals(int(step), arrive_by, descending)
    except LooplineError as error:
        raise _fail(error) from None
    paths = write_report(story, settings.paths.replay)
    summary = json.loads(paths["json"].read_text())["summary"]
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"report: {paths['html']}")


registry_app = typer.Typer(
    help="Show and change the registered model's aliases.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _open_registry(params: Path):  # noqa: ANN202 - returns (Params, Registry); imports are lazy
    """The params and registry of a params file; its relative paths resolve in its folder."""
    from loopline.registry.versions import Registry  # noqa: PLC0415 - MLflow import is slow
    from loopline.training.tracking import configure_mlflow  # noqa: PLC0415

    settings = load_params(params)
    root = params.resolve().parent
    configure_mlflow(settings.mlflow, root=root)
    settings = settings.model_copy(update={"paths": settings.paths.rooted(root)})
    return settings, Registry.rooted(settings.registry, root)


@registry_app.command("status")
def registry_status(params: ParamsOption = Path("params.yaml")) -> None:
    """Which version is champion and which is challenger."""
    _, registry = _open_registry(params)
    status = registry.status()
    typer.echo(f"model: {status['model']}")
    for alias, info in status["aliases"].items():
        if info is None:
            typer.echo(f"  {alias:<10} (none)")
        else:
            typer.echo(
                f"  {alias:<10} version {info['version']} ({info['family']}), "
                f"last decision: {info['decision']}, test roc_auc {info['test_roc_auc']}"
            )


@registry_app.command("history")
def registry_history(
    params: ParamsOption = Path("params.yaml"),
    limit: Annotated[int, typer.Option(help="Show the last N decisions.")] = 20,
) -> None:
    """The promotion ledger: who was champion when, and why."""
    _, registry = _open_registry(params)
    entries = registry.ledger.entries()[-limit:]
    if not entries:
        typer.echo("no decisions recorded yet")
    for entry in entries:
        typer.echo(
            f"{entry['time']}  {entry['action']:<8} v{entry['version']:<4} "
            f"champion {entry['previous_champion']} -> {entry['champion']}  "
            f"by {entry['actor']}: {entry['reason']}"
        )
        for line in entry.get("checks") or []:
            typer.echo(f"      {line}")


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="Registered version to promote.")],
    params: ParamsOption = Path("params.yaml"),
    force: Annotated[bool, typer.Option(help="Skip the rule (needs --reason).")] = False,
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")] = "",
    dry_run: Annotated[bool, typer.Option(help="Report the decision, move nothing.")] = False,
) -> None:
    """Promote a version to champion if it passes the promotion rule (or --force)."""
    from loopline.data.datasets import get_dataset  # noqa: PLC0415
    from loopline.registry.versions import judge_on_recent_window  # noqa: PLC0415

    settings, registry = _open_registry(params)
    try:
        if force:
            if not reason:
                raise LooplineError("--force needs --reason: the ledger records why")
            entry = registry.force_promote(version, reason)
            typer.echo(f"version {version} is champion (forced; was {entry['previous_champion']})")
            return
        dataset = get_dataset(settings.dataset.name)
        gate, entry = judge_on_recent_window(registry, version, settings, dataset, dry_run)
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(f"{entry['action']}: version {version}; champion is now {entry['champion']}")
    for line in gate.reasons():
        typer.echo(f"  {line}")
    if not gate.passed:
        raise typer.Exit(code=2)


@registry_app.command("rollback")
def registry_rollback(
    params: ParamsOption = Path("params.yaml"),
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")] = "manual rollback",
) -> None:
    """Point champion back at the previous champion (recorded in the ledger)."""
    _, registry = _open_registry(params)
    try:
        entry = registry.rollback(reason)
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(f"rolled back: champion {entry['previous_champion']} -> {entry['champion']}")


@app.command()
def ui(
    params: ParamsOption = Path("params.yaml"),
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect UI.")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    evidently_port: Annotated[int, typer.Option(help="Port of the drift dashboard.")] = 8000,
) -> None:
    """Serve the UIs on 127.0.0.1 until Ctrl-C.

    Prefect shows the flow runs, MLflow the models, Evidently the drift dashboard.
    """
    settings = load_params(params)
    if settings.prefect.api_url:  # a team file: its servers already serve these UIs
        raise _fail(LooplineError(
            f"{params} points at running servers: Prefect {settings.prefect.api_url}, "
            f"MLflow {settings.mlflow.tracking_uri}, drift {settings.monitor.workspace}; "
            "open those (`loopline up --profile team` serves them)"
        ))  # fmt: skip
    root = params.resolve().parent
    servers = ui_servers(settings, root, prefect_port, mlflow_port, evidently_port)
    (root / settings.monitor.workspace).mkdir(parents=True, exist_ok=True)
    processes = []
    for label, (command, env) in servers.items():
        processes.append(subprocess.Popen(command, env=env, start_new_session=True))
        typer.echo(label)
    typer.echo("Ctrl-C stops them all.")
    try:
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        for process in processes:
            stop_process(process)


def ui_servers(
    settings: Params, root: Path, prefect_port: int, mlflow_port: int, evidently_port: int
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The three UI servers (label: command, environment) for a params file in `root`.

    Every relative path resolves in `root`, as in the service, the monitor and the CLI.
    """
    from loopline.training.tracking import tracking_uri_at  # noqa: PLC0415 - keep `--help` fast

    prefect_env = {**os.environ, "PREFECT_HOME": str((root / PREFECT_HOME).resolve())}
    prefect_env.pop("PREFECT_API_URL", None)
    return {
        f"Prefect UI  http://127.0.0.1:{prefect_port}": (
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)],
            prefect_env,
        ),
        f"MLflow UI   http://127.0.0.1:{mlflow_port}": (
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(mlflow_port),
             "--backend-store-uri", tracking_uri_at(settings.mlflow.tracking_uri, root),
             "--default-artifact-root", (root / settings.mlflow.artifact_root).resolve().as_uri()],
            dict(os.environ),
        ),
        f"Drift UI    http://127.0.0.1:{evidently_port}": (
            [sys.executable, "-m", "evidently.cli", "ui", "--workspace",
             str(root / settings.monitor.workspace), "--host", "127.0.0.1",
             "--port", str(evidently_port)],
            {**os.environ, "EVIDENTLY_DISABLE_TELEMETRY": "1"},
        ),
    }  # fmt: skip


if __name__ == "__main__":
    app()
