"""A CLI command whose server is down fails fast, in one line naming the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from loopline.cli.unreachable import MLFLOW_CLIENT, client_settings, server_down
from loopline.infra.environment import OWN_ONLY_ENV, tool_environment
from loopline.infra.processes import free_port
from tests.conftest import fast_params_dict, tool_env


def test_registry_status_against_a_stopped_mlflow_server_fails_in_one_line(
    tmp_path: Path,
) -> None:
    """No server listens at the tracking URI: one red line naming it, exit 1, no traceback,
    and no two minutes of MLflow's default retries (the call may not hang)."""
    raw = fast_params_dict()
    url = f"http://127.0.0.1:{free_port()}"
    raw["mlflow"]["tracking_uri"] = url
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "loopline.cli", "registry", "status", "--params", str(params)],
        cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach the MLflow server at {url} (is it running?")


def test_a_refused_prefect_connection_is_named_by_its_url() -> None:
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"http://127.0.0.1:{free_port()}/api/health")
    assert server_down(refused.value).startswith("cannot reach the server at http://127.0.0.1:")
    assert server_down(ValueError("something else")) is None


def test_the_fast_failing_client_settings_stay_in_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command gives up on a down server in seconds; the servers, workers and replay it
    starts keep MLflow's own retries (a value the user set reaches them unchanged)."""
    for key in (*MLFLOW_CLIENT, OWN_ONLY_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # the user's own
    client_settings()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    child = tool_environment()
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in child
    assert OWN_ONLY_ENV not in child
    assert child["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
