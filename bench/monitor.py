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
import yaml

from loopline.core.params import load_params
from loopline.data import columns as cols
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import Dataset, read_tables
from loopline.infra.prediction_log import PredictionLog
from loopline.registry.versions import CHAMPION, Registry
from loopline.scoring.registered import load_version
from loopline.training.tracking import configure_mlflow

SIZES = (10_000, 100_000, 1_000_000)
ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import datetime as dt, sys
from pathlib import Path
from loopline.core.params import load_params
from loopline.data.datasets import get_dataset
from loopline.monitoring.job import batch_by_event_days, measure_batch
from loopline.registry.versions import Registry
from loopline.infra.prediction_log import PredictionLog
from loopline.training.tracking import configure_mlflow
params_file = Path(sys.argv[1]); p = load_params(params_file); d = get_dataset(p.dataset.name)
configure_mlflow(p.mlflow, root=params_file.parent)
log = PredictionLog(Path(sys.argv[2]), d.contract, d.key_columns, d.target_column)
batch = batch_by_event_days(log, dt.date(2013, 7, 1), dt.date(2013, 12, 31))
m = measure_batch(dataset=d, params=p, registry=Registry(p.registry), batch=batch,
                  root=ROOT_DIR)
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
    log: PredictionLog, batch: pd.DataFrame, scored: pd.DataFrame, version: str, dataset: Dataset
) -> None:
    """Log the batch as the service would (chunks of 10,000 rows), then its labels."""
    columns = dataset.record_columns()
    frame = batch[columns].astype(object).where(batch[columns].notna(), None)
    frame["probability"], frame["label"] = (
        scored["probability"].to_numpy(),
        scored["label"].to_numpy(),
    )
    frame["event_day"] = dataset.event_days(cols.from_frame(batch, dataset.record_fields()))
    frame = frame.assign(
        model_name="bench", model_version=version, request_id="bench", logged_at="t"
    )
    frame["prediction_id"] = [uuid.uuid4().hex for _ in range(len(frame))]
    records = frame.to_dict("records")
    for start in range(0, len(records), 10_000):
        log.append(records[start : start + 10_000])
    log.deliver_labels(batch.drop_duplicates(list(dataset.key_columns)), delivered_at="t")


def main() -> None:
    """Print a JSON table: rows, wall time, peak memory, report size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    sizes = parser.parse_args().sizes
    params = load_params(ROOT / "params.yaml")
    dataset = get_dataset(params.dataset.name)
    configure_mlflow(params.mlflow, root=ROOT)
    registry = Registry(params.registry)
    version = registry.alias_version(CHAMPION)
    model = load_version(registry, version).scorer
    examples = dataset.build_examples(
        read_tables(ROOT / params.paths.data, dataset.contract), params.dataset
    )
    later = examples[examples[dataset.time_column] >= "2013-07-01"]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["mlflow"]["tracking_uri"] = f"sqlite:///{ROOT / 'mlflow.db'}"
        raw["mlflow"]["artifact_root"] = str(ROOT / "mlruns")
        for key in ("workspace", "reports", "state"):
            raw["monitor"][key] = str(Path(scratch) / key)
        params_file = Path(scratch) / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw))
        code = MEASURE.replace("ROOT_DIR", repr(str(ROOT)))
        warm = Path(scratch) / "warm.sqlite"
        write_batch(
            PredictionLog(warm, dataset.contract, dataset.key_columns, dataset.target_column),
            later.head(2000),
            model.score_frame(later.head(2000)),
            version,
            dataset,
        )
        measure([sys.executable, "-c", code, str(params_file), str(warm)])  # builds the reference
        for size in sizes:
            batch = later.sample(size, replace=size > len(later), random_state=params.seed)
            path = Path(scratch) / f"log-{size}.sqlite"
            log = PredictionLog(path, dataset.contract, dataset.key_columns, dataset.target_column)
            write_batch(log, batch, model.score_frame(batch), version, dataset)
            run = measure([sys.executable, "-c", code, str(params_file), str(path)])
            report = max(Path(raw["monitor"]["reports"]).glob("*.html"), key=os.path.getmtime)
            results.append(
                {"rows": size, **run, "html_report_mib": round(report.stat().st_size / 2**20, 1)}
            )
            print(results[-1], file=sys.stderr, flush=True)
    print(json.dumps({"runs": results, "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
