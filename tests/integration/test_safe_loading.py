"""A registered version whose pickle would run code is refused, and nothing runs.

The attack: a version logged as a cloudpickled pyfunc whose unpickling opens (creates) a
marker file. MLflow's own loader runs it (the control at the end proves the file is
really malicious); Loopline's loader, the champion holder and the service never do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from loopline.data.columns import from_records
from loopline.infra.ledger import open_ledger
from loopline.infra.tracking import configure_mlflow
from loopline.registry.versions import Registry
from loopline.scoring.formats import ScorerError
from loopline.scoring.registered import load_version
from loopline.serving.champion import ChampionHolder, NoChampionError, Served
from tests.conftest import tool_env

pytestmark = pytest.mark.slow


class CodeOnLoad(mlflow.pyfunc.PythonModel):
    """Unpickling this object calls open(marker, "w"): any code could stand there."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))

    def predict(self, context: object, model_input: object, params: object = None) -> object:
        return model_input


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, fast_params) -> dict:
    """A registry whose only version (the champion) is the code-running pickle."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "pwned"
    mlflow_params = fast_params.mlflow.model_copy(
        update={"tracking_uri": f"sqlite:///{root}/mlflow.db", "artifact_root": root / "mlruns"}
    )
    configure_mlflow(mlflow_params)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=CodeOnLoad(str(marker)))
    marker.unlink(missing_ok=True)  # logging may have touched it; what counts is loading
    params = fast_params.registry.model_copy(update={"ledger": root / "ledger.jsonl"})
    registry = Registry(params, open_ledger(params.ledger))
    version = registry.register(info.model_uri, info.run_id, {})
    registry.force_promote(version, "hostile test")
    return {"registry": registry, "version": version, "marker": marker, "uri": info.model_uri,
            "tracking_uri": mlflow_params.tracking_uri}  # fmt: skip


def test_the_loader_refuses_a_pickled_version_and_runs_nothing(hostile: dict) -> None:
    with pytest.raises(ScorerError, match=r"refusing .* version 1: .*no compiled scorer"):
        load_version(hostile["registry"], hostile["version"])
    assert not hostile["marker"].exists()


def test_the_service_holder_refuses_it_and_answers_with_the_reason(hostile: dict) -> None:
    holder = ChampionHolder(hostile["registry"], shadow=False)
    assert holder.refresh() is False
    assert holder.snapshot() == Served()
    assert "no compiled scorer" in holder.refused[hostile["version"]]
    with pytest.raises(NoChampionError, match=r"refusing .* version 1"):
        holder.score(from_records([{"year": 2013}], {"year": "int"}))
    assert holder.describe()["refused_versions"] == holder.refused
    assert not hostile["marker"].exists()


def test_control_mlflow_own_loader_does_run_the_pickle(hostile: dict, tmp_path: Path) -> None:
    """The attack is real: `mlflow.pyfunc.load_model` creates the marker. (Run in a child
    process, so this test process never unpickles it.)"""
    script = (
        "import mlflow, sys\n"
        f"mlflow.set_tracking_uri({hostile['tracking_uri']!r})\n"
        "try:\n"
        f"    mlflow.pyfunc.load_model({hostile['uri']!r})\n"
        "except Exception as error:\n"
        "    print('load failed after unpickling:', type(error).__name__)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], env=tool_env(), cwd=tmp_path, capture_output=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert hostile["marker"].exists()
