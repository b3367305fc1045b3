"""`loopline score`: a Parquet file of records scored by the champion, atomically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.errors import DataContractError
from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.serving.batch import score_registered
from tests.conftest import tool_env
from tests.integration.conftest import ServingWorld

pytestmark = pytest.mark.slow


@pytest.fixture
def records(serving_world: ServingWorld, dataset, tmp_path: Path) -> Path:
    path = tmp_path / "flights.parquet"
    serving_world.test_records[dataset.record_columns()].to_parquet(path, index=False)
    return path


def test_the_command_scores_every_row_like_the_served_scorer(
    serving_world: ServingWorld, records: Path, tmp_path: Path
) -> None:
    target = tmp_path / "scored.parquet"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "score", str(records), str(target),
         "--params", str(serving_world.root / "params.yaml")],
        cwd=serving_world.root, env=tool_env(), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rows scored by version" in result.stdout
    scored = pd.read_parquet(target)
    registry = serving_world.registry()
    champion = load_version(registry, registry.alias_version(CHAMPION))
    expected = champion.scorer.score_frame(pd.read_parquet(records))
    assert len(scored) == len(expected)
    np.testing.assert_allclose(scored["probability"], expected["probability"], rtol=1e-12)
    assert (scored["label"] == expected["label"]).all()
    assert set(scored["model_version"]) == {champion.version}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.drop(columns=["carrier"]), r"lacks required columns \['carrier'\]"),
        (lambda f: f.assign(distance="far"), "distance is string, expected a number"),
        (
            lambda f: f.assign(origin=f["origin"].where(f.index % 2 == 0, None)),
            r"required columns with null values: \[.origin.\]",
        ),
    ],
)
def test_bad_input_is_an_error_naming_the_column_and_the_old_output_survives(
    serving_world: ServingWorld, records: Path, tmp_path: Path, damage, message: str
) -> None:
    broken = tmp_path / "broken.parquet"
    damage(pd.read_parquet(records)).to_parquet(broken, index=False)
    target = tmp_path / "scored.parquet"
    target.write_bytes(b"previous output")
    with pytest.raises(DataContractError, match=message):
        score_registered(serving_world.workspace(), broken, target, progress=False)
    assert target.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
