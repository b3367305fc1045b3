"""The validate and featurize stages, run as their commands on a slice, report to Prefect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from loopline.core.io import read_json
from loopline.data.datasets.base import write_tables
from loopline.scoring.features import FeatureTables
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


def _outputs(project: Path) -> dict[str, bytes]:
    files = ["artifacts/validate/report.json", "artifacts/validate/data_docs/index.html",
             "metrics/validate.json"]  # fmt: skip
    return {name: (project / name).read_bytes() for name in files}


def test_a_failing_validate_keeps_the_last_good_outputs_and_says_each_failure_once(
    tmp_path: Path, small_tables: dict, prefect_api: str
) -> None:
    project = make_project(tmp_path, small_tables, small_params_dict())
    assert _stage(project, "pipelines.validate", prefect_api).returncode == 0
    good = _outputs(project)

    flights = small_tables["flights"].copy()
    flights.loc[flights.index[:25], "distance"] = -3
    write_tables({"flights": flights}, project / "data")
    result = _stage(project, "pipelines.validate", prefect_api)
    assert result.returncode == 1
    line = "flights.distance: expect_column_values_to_be_between failed: 25 rows fail"
    assert result.stderr.count(line) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Traceback" in (project / "logs" / "stages.log").read_text()  # kept for a bug hunt
    assert _outputs(project) == good  # the last good report, Data Docs and metrics
    failed = read_json(project / "artifacts/validate/failed/report.json")
    assert failed["success"] is False
    assert (project / "artifacts/validate/failed/data_docs/index.html").is_file()

    (project / "data" / "flights.parquet").write_bytes(b"")
    result = _stage(project, "pipelines.validate", prefect_api)
    assert result.returncode == 1
    assert result.stderr.count("table 'flights' at data/flights.parquet: the file is empty") == 2
    assert "Traceback" not in result.stderr  # (once in Prefect's state line, once as the error)

    write_tables({"flights": small_tables["flights"]}, project / "data")
    assert _stage(project, "pipelines.validate", prefect_api).returncode == 0
    assert not (project / "artifacts/validate/failed").exists()  # a fixed run starts clean
    fresh = _outputs(project)  # Data Docs carry the run's time; report and metrics do not
    assert fresh["artifacts/validate/report.json"] == good["artifacts/validate/report.json"]
    assert fresh["metrics/validate.json"] == good["metrics/validate.json"]
