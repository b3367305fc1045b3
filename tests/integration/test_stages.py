"""The validate and featurize stages, run as their commands on a slice, report to Prefect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from loopline.features import FeatureTables
from loopline.io import read_json
from tests.conftest import make_project, small_params_dict, tool_env

pytestmark = pytest.mark.slow


def _stage(project: Path, module: str, api_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=project, env=tool_env(PREFECT_API_URL=api_url), capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, small_tables: dict) -> Path:
    return make_project(tmp_path_factory.mktemp("project"), small_tables, small_params_dict())


@pytest.fixture(scope="module")
def stage_runs(project: Path, prefect_api: str) -> dict[str, subprocess.CompletedProcess[str]]:
    return {
        name: _stage(project, f"pipelines.{name}", prefect_api)
        for name in ("validate", "featurize")
    }


def test_both_stages_succeed_and_write_their_outputs(stage_runs: dict, project: Path) -> None:
    for name, result in stage_runs.items():
        assert result.returncode == 0, f"{name}:\n{result.stderr[-3000:]}"
    assert read_json(project / "metrics" / "validate.json")["failed"] == 0
    assert (project / "artifacts/validate/data_docs/index.html").is_file()
    splits = read_json(project / "metrics" / "featurize.json")["splits"]
    assert set(splits) == {"train", "valid", "test"}
    assert all(s["rows"] > 0 and 0 < s["positive_rate"] < 1 for s in splits.values())


def test_saved_featurizer_reproduces_saved_features(
    stage_runs: dict, project: Path, dataset
) -> None:
    """No training/serving skew: the artifact serving will load gives the training features."""
    out = project / "artifacts" / "featurize"
    featurizer = FeatureTables.read(out / "featurizer.json")
    examples = pd.read_parquet(out / "examples" / "test.parquet")
    saved = pd.read_parquet(out / "features" / "test.parquet")
    recomputed = featurizer.transform(examples[dataset.record_columns()])
    pd.testing.assert_frame_equal(recomputed, saved[recomputed.columns])


def test_flow_runs_are_recorded_by_the_prefect_server(stage_runs: dict, prefect_api: str) -> None:
    response = httpx.post(f"{prefect_api}/flow_runs/filter", json={"limit": 50}, timeout=10)
    response.raise_for_status()
    flows = httpx.post(f"{prefect_api}/flows/filter", json={"limit": 50}, timeout=10).json()
    names = {f["id"]: f["name"] for f in flows}
    states = {(names[r["flow_id"]], r["state_type"]) for r in response.json()}
    assert {("validate", "COMPLETED"), ("featurize", "COMPLETED")} <= states


def test_validate_stage_fails_with_a_named_reason_on_bad_data(
    tmp_path: Path, small_tables: dict, prefect_api: str
) -> None:
    flights = small_tables["flights"].copy()
    flights.loc[flights.index[:25], "distance"] = -3
    project = make_project(tmp_path, {**small_tables, "flights": flights}, small_params_dict())
    result = _stage(project, "pipelines.validate", prefect_api)
    assert result.returncode == 1
    assert (
        "flights.distance: expect_column_values_to_be_between failed: 25 unexpected"
        in result.stderr
    )
    assert read_json(project / "metrics" / "validate.json")["failed"] >= 1
