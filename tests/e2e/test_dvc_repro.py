"""`dvc repro` on a slice: the whole DAG runs, leaves a champion, is cached, and re-runs
only what a change touches; `dvc exp run` tries a hyperparameter."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from loopline.core.io import read_json
from loopline.data.datastore import directory_md5
from loopline.infra.processes import free_port
from loopline.registry.versions import CHAMPION
from loopline.workspace import Workspace
from tests.conftest import fast_params_dict, make_project, run_in_project, tool_env

pytestmark = pytest.mark.slow


def _dvc(project: Path, api_url: str, *args: str) -> str:
    return run_in_project(project, api_url, sys.executable, "-m", "dvc", *args)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, small_tables: dict, prefect_api: str) -> Path:
    project = make_project(tmp_path_factory.mktemp("e2e"), small_tables, fast_params_dict())
    output = _dvc(project, prefect_api, "repro")
    stages = [
        "validate",
        "featurize",
        "train@logistic",
        "train@hist_gb",
        "train@xgboost",
        "train@lightgbm",
        "train@mlp",
        "evaluate",
        "register",
    ]
    for stage in stages:
        assert f"Running stage '{stage}'" in output
    shutil.copy(project / "dvc.lock", project.parent / "first-run.lock")  # before other tests
    shutil.copytree(project, project.parent / "pristine", symlinks=True)  # for the replay
    return project


@pytest.fixture(scope="module")
def pristine(project: Path) -> Path:
    """The project as `dvc repro` left it, before any other test here changed it."""
    return project.parent / "pristine"


def test_the_dag_leaves_a_champion_in_the_registry(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    registry = Workspace.load(project / "params.yaml").registry
    assert registry.alias_version(CHAMPION) == "1"
    assert registry.ledger.entries()[0]["action"] == "promote"
    assert (project / "registry" / "cards" / "loopline-late-arrival-v1.md").is_file()


def test_a_clean_clone_of_the_pinned_run_writes_the_same_lock_and_registers_a_champion(
    pristine: Path, small_tables: dict, prefect_api: str, tmp_path: Path
) -> None:
    """A clean clone of the commit that pinned the first run (its dvc.lock and committed
    metrics, no outputs, an empty registry): `dvc repro` writes dvc.lock byte for byte,
    registers and promotes a champion there too (the registry is outside DVC), and the
    registered version's commit is not `+dirty` (the pipeline's own writes do not count)."""
    again = make_project(tmp_path / "again", small_tables, fast_params_dict())
    first = (pristine.parent / "first-run.lock").read_text()
    (again / "dvc.lock").write_text(first)
    shutil.copytree(pristine / "metrics", again / "metrics", dirs_exist_ok=True)
    subprocess.run(["git", "commit", "-qam", "pin the first run"], cwd=again, check=True)
    output = _dvc(again, prefect_api, "repro")
    assert "Running stage 'register'" in output
    assert (again / "dvc.lock").read_text() == first
    workspace = Workspace.load(again / "params.yaml")
    assert workspace.registry.alias_version(CHAMPION) == "1"
    model_name = workspace.params.registry.model_name
    tags = workspace.registry.client.get_model_version(model_name, "1").tags
    assert not tags["loopline.git_commit"].endswith("+dirty"), tags["loopline.git_commit"]


def test_after_repro_the_pipeline_is_up_to_date(project: Path, prefect_api: str) -> None:
    assert "up to date" in _dvc(project, prefect_api, "status")
    assert "Data and pipelines are up to date" in _dvc(project, prefect_api, "repro")
    assert "metrics/featurize.json" in _dvc(project, prefect_api, "metrics", "show")


def test_registering_again_runs_the_stage_instead_of_restoring_it_from_the_run_cache(
    project: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering writes to the registry, outside DVC. With `registered.json` gone and
    every input as before, DVC's run cache could restore it and register nothing; a
    retrain of a window already trained then failed without a decision."""
    monkeypatch.chdir(project)
    ledger = Workspace.load(project / "params.yaml").registry.ledger
    before = len(ledger.entries())
    (project / "artifacts" / "register" / "registered.json").unlink()
    output = _dvc(project, prefect_api, "repro", "register")
    assert "Running stage 'register'" in output, output
    assert len(ledger.entries()) == before + 1


def test_an_experiment_with_another_hyperparameter_is_listed(
    project: Path, prefect_api: str
) -> None:
    _dvc(project, prefect_api, "exp", "run", "-n", "shallow-xgb", "-S", "train.xgboost.max_depth=3")
    listing = _dvc(project, prefect_api, "exp", "show", "--no-pager", "--csv")
    assert "shallow-xgb" in listing
    assert "train.xgboost.max_depth" in listing.splitlines()[0]


def test_the_readme_commands_work_without_the_venv_on_path(project: Path, prefect_api: str) -> None:
    """`.venv/bin/dvc repro` / `exp run` typed in a plain shell: no venv activated, no python.

    The project's `.venv` here is this test run's environment (a link), as `make setup`
    would have built it; PATH holds only system folders.
    """
    venv = project / ".venv"
    venv.symlink_to(Path(sys.prefix), target_is_directory=True)
    plain = {"HOME": str(Path.home()), "PATH": "/usr/bin:/bin", "PREFECT_API_URL": prefect_api}
    plain |= {k: v for k, v in tool_env().items() if k.startswith(("DO_NOT_TRACK", "PREFECT_"))}
    plain["PREFECT_API_URL"] = prefect_api
    try:
        for args in (
            ["repro", "-f", "-s", "validate"],
            ["exp", "run", "-n", "readme-way", "-S", "train.xgboost.max_depth=5"],
        ):
            result = subprocess.run(
                [str(venv / "bin" / "dvc"), *args], cwd=project, env=plain,
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    finally:
        venv.unlink()


def test_changing_a_featurize_param_reruns_featurize_only(project: Path, prefect_api: str) -> None:
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["featurize"]["history_smoothing"] = 50
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    output = _dvc(project, prefect_api, "repro", "featurize")
    assert "Running stage 'featurize'" in output
    assert "Running stage 'validate'" not in output


def test_push_wipe_pull_restores_data_and_outputs(project: Path, prefect_api: str) -> None:
    before = {p: directory_md5(project / p) for p in ("data", "artifacts/featurize")}
    _dvc(project, prefect_api, "push")
    for path in ("data", "artifacts", ".dvc/cache"):
        shutil.rmtree(project / path)
    _dvc(project, prefect_api, "pull")
    assert {p: directory_md5(project / p) for p in before} == before


PLAYED = re.compile(r"2013-07-01\.\.2013-07-07 served")  # the replay's line for its first batch


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigterm_stops_a_replay_and_everything_it_started(pristine: Path) -> None:
    """`timeout`/`kill` sends SIGTERM to `loopline replay` alone, mid-run: every process it
    started (Prefect server, BentoML service and workers, the deployments runner, the
    replay) stops, its ports are free again, and the report holds the batch it played."""
    params_file = pristine / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["serve"].update({"port": free_port(), "poll_seconds": 1})
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    prefect_port, log = free_port(), pristine / "replay.log"
    command = [str(Path(sys.executable).parent / "loopline"), "replay", "--start", "2013-07-01",
               "--end", "2013-07-28", "--port", str(prefect_port)]  # fmt: skip
    env = {k: v for k, v in tool_env().items() if k != "PREFECT_API_URL"}
    with log.open("w") as output:
        replay = subprocess.Popen(
            command, cwd=pristine, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    started: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 600
        while not PLAYED.search(log.read_text()):
            assert replay.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            started |= {p.pid: p for p in psutil.Process(replay.pid).children(recursive=True)}
            time.sleep(1)
        started |= {p.pid: p for p in psutil.Process(replay.pid).children(recursive=True)}
        replay.send_signal(signal.SIGTERM)  # to the command only, as `timeout` does
        assert replay.wait(timeout=180) != 0
    finally:
        if replay.poll() is None:
            replay.kill()
    time.sleep(1)
    left = [p for p in started.values() if p.is_running() and p.status() != "zombie"]
    assert left == [], [p.cmdline() for p in left]
    assert len(started) >= 4, started  # the servers, the runner and the replay itself
    assert _free(raw["serve"]["port"])
    assert _free(prefect_port)
    report = read_json(pristine / raw["paths"]["replay"] / "report.json")
    assert report["interrupted"] == "SIGTERM"
    assert report["periods"][0]["first_day"] == "2013-07-01"
