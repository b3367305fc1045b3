"""`dvc repro` on a slice: the whole DAG runs, leaves a champion, is cached, and re-runs
only what a change touches; `dvc exp run` tries a hyperparameter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loopline.data.datastore import directory_md5
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
        "train@mlp",
        "evaluate",
        "register",
    ]
    for stage in stages:
        assert f"Running stage '{stage}'" in output
    shutil.copy(project / "dvc.lock", project.parent / "first-run.lock")  # before other tests
    return project


def test_the_dag_leaves_a_champion_in_the_registry(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    registry = Workspace.load(project / "params.yaml").registry
    assert registry.alias_version(CHAMPION) == "1"
    assert registry.ledger.entries()[0]["action"] == "promote"
    assert (project / "registry" / "cards" / "loopline-late-arrival-v1.md").is_file()


def test_a_second_clean_run_writes_the_same_dvc_lock_and_clean_lineage(
    project: Path, small_tables: dict, prefect_api: str, tmp_path: Path
) -> None:
    """Same code, data and params from a clean state: dvc.lock byte for byte; and the
    registered version's commit is not `+dirty` (the pipeline's own writes do not count)."""
    again = make_project(tmp_path / "again", small_tables, fast_params_dict())
    _dvc(again, prefect_api, "repro")
    first = (project.parent / "first-run.lock").read_text()
    assert (again / "dvc.lock").read_text() == first
    workspace = Workspace.load(again / "params.yaml")
    model_name = workspace.params.registry.model_name
    tags = workspace.registry.client.get_model_version(model_name, "1").tags
    assert not tags["loopline.git_commit"].endswith("+dirty"), tags["loopline.git_commit"]


def test_after_repro_the_pipeline_is_up_to_date(project: Path, prefect_api: str) -> None:
    assert "up to date" in _dvc(project, prefect_api, "status")
    assert "Data and pipelines are up to date" in _dvc(project, prefect_api, "repro")
    assert "metrics/featurize.json" in _dvc(project, prefect_api, "metrics", "show")


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
