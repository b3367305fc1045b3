"""DVC round trip and the fresh-clone bootstrap, with real git, DVC and a local remote."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.data.datasets.base import Dataset
from loopline.data.datastore import directory_md5, ensure_data, pinned_md5
from tests.conftest import make_project, small_params_dict, tool_env

pytestmark = pytest.mark.slow


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=tool_env(),
        capture_output=True, text=True, check=True,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, small_tables: dict) -> Path:
    return make_project(tmp_path / "project", small_tables, small_params_dict())


def test_push_then_delete_data_and_cache_then_pull_restores_it(project: Path) -> None:
    pinned = pinned_md5(project / "data.dvc")
    _dvc(project, "push")
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    _dvc(project, "pull", "data.dvc")  # the pipeline has not run: only the data exists
    assert directory_md5(project / "data") == pinned


def test_bootstrap_pulls_when_the_remote_has_the_data(project: Path, dataset: Dataset) -> None:
    _dvc(project, "push")
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    status = ensure_data(dataset, project / "data", project / "data.dvc")
    assert (status.how, status.md5) == ("pulled", pinned_md5(project / "data.dvc"))


def test_bootstrap_rebuilds_and_verifies_when_no_remote_has_it(
    tmp_path: Path, full_tables: dict, dataset: Dataset
) -> None:
    """A fresh clone of the real project: empty remote, so the data is rebuilt and checked."""
    project = make_project(tmp_path / "project", full_tables, small_params_dict())
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    status = ensure_data(dataset, project / "data", project / "data.dvc")
    assert status.how == "materialized"
    assert status.md5 == pinned_md5(project / "data.dvc")
    _dvc(project, "push")  # the rebuilt bytes went into the cache, so they can be published
    assert any((project / ".remote").rglob("*"))
