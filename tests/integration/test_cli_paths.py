"""The CLI reads a project's params file like the service does: its paths resolve in its folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loopline.registry import CHAMPION
from tests.conftest import tool_env
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
