"""The `loopline` command: data bootstrap, the whole pipeline, and the UIs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from loopline.config import load_params
from loopline.errors import LooplineError
from loopline.orchestration import configure_logging, prefect_server, quiet_environment

app = typer.Typer(help="Loopline: a closed-loop MLOps reference project.", no_args_is_help=True)
log = logging.getLogger("loopline.cli")

ParamsOption = Annotated[Path, typer.Option("--params", help="Path to params.yaml.")]
PREFECT_HOME = Path(".prefect")


@app.callback()
def _setup() -> None:
    quiet_environment()
    configure_logging()


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
    from loopline.datasets import get_dataset  # noqa: PLC0415 - keep `--help` fast
    from loopline.datastore import ensure_data  # noqa: PLC0415

    try:
        settings = load_params(params)
        status = ensure_data(
            get_dataset(settings.dataset.name), settings.paths.data, settings.paths.data_dvc, repin
        )
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(f"data: {status.how} ({settings.paths.data}, {status.md5})")


@app.command()
def run(
    params: ParamsOption = Path("params.yaml"),
    stage: Annotated[str | None, typer.Argument(help="Run only up to this dvc.yaml stage.")] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
) -> None:
    """Fetch the data, then `dvc repro` with every stage reporting to one Prefect server."""
    data(params=params, repin=False)
    try:
        with prefect_server(PREFECT_HOME, port=port) as api_url:
            # Stage commands run `python`: make it this environment's interpreter.
            path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
            env = {**os.environ, "PREFECT_API_URL": api_url, "PATH": path}
            command = [sys.executable, "-m", "dvc", "repro", *([stage] if stage else [])]
            typer.echo(f"$ dvc repro {stage or ''}  (Prefect API {api_url})")
            result = subprocess.run(command, env=env, check=False)
    except LooplineError as error:
        raise _fail(error) from None
    if result.returncode != 0:
        raise typer.Exit(code=result.returncode)
    typer.echo("done: `dvc metrics show` for numbers, `make ui` for the Prefect UI.")


@app.command()
def ui(port: Annotated[int, typer.Option(help="Port of the Prefect UI.")] = 4200) -> None:
    """Serve the Prefect UI on 127.0.0.1 over the project's run history (Ctrl-C stops)."""
    env = {**os.environ, "PREFECT_HOME": str(PREFECT_HOME.resolve())}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    typer.echo(f"Prefect UI: http://127.0.0.1:{port}")
    raise typer.Exit(
        subprocess.run([*command, "--port", str(port)], env=env, check=False).returncode
    )


if __name__ == "__main__":
    app()
