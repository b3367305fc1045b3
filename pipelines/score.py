"""score flow: batch-score a Parquet file of records with a registered version.

The same work as `loopline score IN OUT`, as a Prefect flow that can be scheduled or run
from the Prefect UI (`prefect deployment run`), with its logs and timing kept there.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from loopline.serving.batch import score_registered
from loopline.workspace import Workspace


@flow(name="score", flow_run_name="score-{source.name}")
def score(
    source: Path, target: Path, version: str | None = None, params_path: Path = Path("params.yaml")
) -> dict:
    """Score `source` into `target` with `version` (default: the champion)."""
    result = score_registered(Workspace.load(params_path), source, target, version, progress=False)
    get_run_logger().info(
        "%d rows scored by version %s in %.1f s (%.0f rows/s) -> %s",
        result.rows, result.model_version, result.seconds, result.rows_per_s, result.target,
    )  # fmt: skip
    return {"rows": result.rows, "seconds": result.seconds, "version": result.model_version}
