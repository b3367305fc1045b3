"""Benchmark: `loopline score` on every flight of July-December 2013, vs the raw booster.

Writes the 170,618 later flights (the records /predict takes) to a Parquet file, runs the
`loopline score` command on it exactly as a user would (champion, all cores), and, in the
same run, times the champion's estimator alone on the already-built feature array: the
floor that no batch path can beat.

Run from the project root after `make run`:  .venv/bin/python -m bench.batch_score
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from loopline.data import columns as cols
from loopline.infra.environment import tool_environment
from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Print a JSON document: rows, CLI rows/s, and the estimator-only floor."""
    workspace = Workspace.load(ROOT / "params.yaml")
    dataset = workspace.dataset
    examples = workspace.examples()
    later = examples[examples[dataset.time_column] >= "2013-07-01"][dataset.record_columns()]
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "jul-dec.parquet", Path(scratch) / "scored.parquet"
        later.to_parquet(source, index=False)
        started = time.perf_counter()
        result = subprocess.run(
            [str(Path(sys.executable).parent / "loopline"), "score", str(source), str(target)],
            cwd=ROOT, env=tool_environment(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        reported = re.search(r"in ([\d.]+) s \(([\d,]+) rows/s\)", result.stdout)
        scored_rows = pq.ParquetFile(target).metadata.num_rows
        registry = workspace.registry
        model = load_version(registry, registry.alias_version(CHAMPION))
        features = model.scorer.features(
            cols.from_arrow(pq.read_table(source), model.scorer.record_fields)
        )
        started = time.perf_counter()
        model.scorer.estimator.predict(features)
        estimator_s = time.perf_counter() - started
    print(json.dumps({
        "family": model.scorer.family, "rows": len(later), "scored_rows": scored_rows,
        "cli_output": result.stdout.strip().splitlines()[-1],
        "scoring_s": float(reported.group(1)),
        "rows_per_s": int(reported.group(2).replace(",", "")),
        "command_wall_s": round(wall, 2),
        "estimator_only_s": round(estimator_s, 3),
        "estimator_only_rows_per_s": round(len(later) / estimator_s),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
