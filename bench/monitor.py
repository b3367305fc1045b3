"""Benchmark: time and peak memory of one monitoring run for 10k, 100k and 1M predictions.

A batch is real flights of July-December 2013 (sampled with replacement up to the size),
scored by the registered champion, written to a prediction log with their labels. The
measured run is `measure_batch` in a fresh process: read the batch from SQLite, build the
Evidently report (15 drift tests + classification quality) against the 20,000-row
reference, summarise, save the HTML report. The reference is built once beforehand.
Run from the project root after `make run`:  .venv/bin/python bench/monitor.py
(`--sizes 10000` for a quick look at one size).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

from loopline.data import columns as cols
from loopline.infra.prediction_log import PredictionLog
from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace

SIZES = (10_000, 100_000, 1_000_000)
ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import datetime as dt, sys
from pathlib import Path
from loopline.monitoring.measure import measure_batch
from loopline.workspace import Workspace
w = Workspace.load(Path(sys.argv[1]))
days = dt.date(2013, 7, 1), dt.date(2013, 12, 31)
batch = w.axis.batch(w.prediction_log, w.monitor_state, *days)
m = measure_batch(w, batch)
print(m.outcome.rows, m.outcome.drift_share, m.report_path.stat().st_size)
"""


def measure(command: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MiB) of a child process."""
    started = time.perf_counter()
    pid = os.posix_spawn(command[0], command, dict(os.environ))
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed")
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
    }


def write_batch(
    log: PredictionLog,
    batch: pd.DataFrame,
    scored: pd.DataFrame,
    version: str,
    workspace: Workspace,
) -> None:
    """Log the batch as the service would (chunks of 10,000 rows), then its labels."""
    dataset = workspace.dataset
    columns = dataset.record_columns()
    frame = batch[columns].astype(object).where(batch[columns].notna(), None)
    frame["probability"], frame["label"] = (
        scored["probability"].to_numpy(),
        scored["label"].to_numpy(),
    )
    frame["event_day"] = workspace.axis.event_days(cols.from_frame(batch, dataset.record_fields()))
    frame = frame.assign(
        model_name="bench", model_version=version, request_id="bench", logged_at="t"
    )
    frame["prediction_id"] = [uuid.uuid4().hex for _ in range(len(frame))]
    records = frame.to_dict("records")
    for start in range(0, len(records), 10_000):
        log.append(records[start : start + 10_000])
    log.deliver_labels(batch.drop_duplicates(list(dataset.key_columns)), delivered_at="t")


def scratch_workspace(workspace: Workspace, scratch: Path, name: str) -> Workspace:
    """The project's data and registry; the monitor's outputs and `<name>.sqlite` in `scratch`."""
    overrides = {f"monitor.{key}": str(scratch / key) for key in ("workspace", "reports", "state")}
    overrides["serve.prediction_log"] = str(scratch / f"{name}.sqlite")
    return Workspace.load(workspace.write_params(scratch / f"{name}.yaml", overrides))


def main() -> None:
    """Print a JSON table: rows, wall time, peak memory, report size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    sizes = parser.parse_args().sizes
    workspace = Workspace.load(ROOT / "params.yaml")
    dataset, params = workspace.dataset, workspace.params
    registry = workspace.registry
    version = registry.alias_version(CHAMPION)
    model = load_version(registry, version).scorer
    examples = workspace.examples()
    later = examples[examples[dataset.time_column] >= "2013-07-01"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        warm = scratch_workspace(workspace, scratch, "warm")
        write_batch(
            warm.prediction_log, later.head(2000), model.score_frame(later.head(2000)), version,
            workspace,
        )  # fmt: skip
        measure([sys.executable, "-c", MEASURE, str(warm.params_file)])  # builds the reference
        for size in sizes:
            batch = later.sample(size, replace=size > len(later), random_state=params.seed)
            sized = scratch_workspace(workspace, scratch, f"log-{size}")
            write_batch(sized.prediction_log, batch, model.score_frame(batch), version, workspace)
            run = measure([sys.executable, "-c", MEASURE, str(sized.params_file)])
            report = max((scratch / "reports").glob("*.html"), key=os.path.getmtime)
            results.append(
                {"rows": size, **run, "html_report_mib": round(report.stat().st_size / 2**20, 1)}
            )
            print(results[-1], file=sys.stderr, flush=True)
    print(json.dumps({"runs": results, "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
