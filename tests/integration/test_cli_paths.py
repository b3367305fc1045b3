"""The CLI reads a project's params file like the service does: its paths resolve in its folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.cli.servers import ui_servers
from loopline.registry.versions import CHAMPION
from loopline.workspace import Workspace
from tests.conftest import ROOT, make_project, small_params_dict, tool_env
from tests.integration.conftest import ServingWorld

pytestmark = pytest.mark.slow


def test_registry_status_works_from_any_directory(
    serving_world: ServingWorld, tmp_path: Path
) -> None:
    params = serving_world.root / "params.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "loopline.cli", "registry", "status", "--params", str(params)],
        cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    champion = serving_world.registry().alias_version(CHAMPION)
    assert f"champion   version {champion} (logistic)" in result.stdout
    assert not (tmp_path / "mlflow.db").exists()  # nothing created where the command ran


def test_data_works_from_any_directory(small_tables: dict, tmp_path: Path) -> None:
    """`loopline data --params other/params.yaml` checks that project's data, not ./data."""
    project = make_project(tmp_path / "project", small_tables, small_params_dict())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "loopline.cli", "data", "--params", str(project / "params.yaml")],
        cwd=elsewhere, env=tool_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"({project / 'data'}, " in result.stdout
    assert list(elsewhere.iterdir()) == []


def test_the_ui_servers_use_the_params_folder(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    servers = ui_servers(Workspace.load(tmp_path / "params.yaml"), 4200, 5000, 8000)
    prefect_env = servers[0].env
    mlflow_ui, evidently = servers[1].command, servers[2].command
    assert prefect_env["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert (
        mlflow_ui[mlflow_ui.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlflow.db"
    )
    artifacts = mlflow_ui[mlflow_ui.index("--default-artifact-root") + 1]
    assert artifacts == (tmp_path / "mlruns").as_uri()
    assert evidently[evidently.index("--workspace") + 1] == str(tmp_path / "monitoring/workspace")
