"""Benchmark: one monitoring run for batches of 10k to 10M predictions (time, memory, per row).

A batch is real flights of July-December 2013 resampled up to the size (each copy of a
flight gets its own flight number, so keys stay unique, as real traffic's are), scored
by the registered champion and written to a SQLite prediction log with their labels.
The measured run is a fresh process doing what the monitor flow does for a batch, timed
in two parts after the imports: the decision (`assess_batch`: read the batch once in
chunks of `monitor.chunk_rows`, profile it, check the traffic, test drift against the
20,000-row reference, quality) and the report (the Evidently snapshot of at most
`monitor.report_rows` rows, saved as HTML). The reference is built once beforehand.
From `--dask-from` rows on, the same log is also measured with `monitor.engine: dask` (a
LocalCluster of `monitor.dask_workers` processes, each reading half the batch); memory is
then the whole process tree's. Run from the project root after `make run`:

    .venv/bin/python -m bench.monitor          (--sizes 100000 for one size)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from loopline.data import columns as cols
from loopline.infra.prediction_log import PredictionLog
from loopline.registry.versions import CHAMPION
from loopline.scoring.registered import load_version
from loopline.workspace import Workspace

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
ROOT = Path(__file__).resolve().parents[1]
SLICE = 250_000  # rows written to the log per transaction
MEASURE = """
import datetime as dt, json, sys, time
started = time.perf_counter()
from pathlib import Path
import mlflow
import mlflow.store.tracking.sqlalchemy_store  # MLflow imports it on first use: an import too
from loopline.monitoring.measure import assess_batch, report_batch
from loopline.monitoring.snapshot import load_evidently
from loopline.workspace import Workspace
load_evidently()
w = Workspace.load(Path(sys.argv[1]))
imported = time.perf_counter()
days = dt.date(2013, 7, 1), dt.date(2013, 12, 31)
batch = w.axis.batch(w.prediction_log, w.monitor_state, *days)
assessed = assess_batch(w, batch)
decided = time.perf_counter()
_, path = report_batch(w, batch, assessed)
done = time.perf_counter()
outcome = assessed.outcome
status = Path("/proc/self/status").read_text()
print(json.dumps({
    "peak_rss_mib": round(int(status.split("VmHWM:")[1].split()[0]) / 1024),
    "imports_s": round(imported - started, 2), "decision_s": round(decided - imported, 2),
    "report_s": round(done - decided, 2), "drift_share": outcome.drift_share,
    "incidents": len(outcome.incidents), "html_report_mib": round(path.stat().st_size / 2**20, 1),
}))
"""


def measure(command: list[str]) -> dict[str, float]:
    """Wall seconds, peak RSS (MiB) of the process and of its tree, the phases it printed.

    The process prints its own peak (the kernel's VmHWM, read at its end): the rusage of
    a spawned child also counts this parent's memory at the spawn. The tree's figure adds
    the peaks of the children it starts (Dask's workers), read every 50 ms.
    """
    started = time.perf_counter()
    peaks: dict[int, int] = {}
    with tempfile.TemporaryFile() as out:
        pid = os.posix_spawn(command[0], command, dict(os.environ),
                             file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1)])  # fmt: skip
        watched = psutil.Process(pid)
        while (ended := os.wait4(pid, os.WNOHANG))[0] == 0:
            peaks |= _peak_rss(watched)
            time.sleep(0.05)
        out.seek(0)
        printed = out.read().decode()
    if os.waitstatus_to_exitcode(ended[1]) != 0:
        raise SystemExit(f"{command[:3]} failed")
    phases = json.loads(printed.splitlines()[-1])
    workers = sum(peak for child, peak in peaks.items() if child != pid) / 2**20
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        **phases,
        "tree_peak_rss_mib": round(phases["peak_rss_mib"] + workers),
        "processes": len(peaks | {pid: 0}),
    }


def _peak_rss(process: psutil.Process) -> dict[int, int]:
    """Each process of the tree and its peak resident bytes so far (VmHWM)."""
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for member in family:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{member.pid}/status").read_text()
            peak = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")]
            if peak:  # a process that has ended has none
                found[member.pid] = int(peak[0]) * 1024
    return found


def logged_batch(later: pd.DataFrame, scored: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """`size` rows resampled from `later` with their scores; each copy its own flight number."""
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(later), size)
    copy = pd.Series(picked).groupby(picked).cumcount().to_numpy()  # 0 for a row's first pick
    batch = later.iloc[picked].reset_index(drop=True)
    batch["flight"] = batch["flight"].to_numpy() + 10_000 * copy
    return batch.assign(probability=scored["probability"].to_numpy()[picked],
                        label=scored["label"].to_numpy()[picked])  # fmt: skip


def write_batch(
    log: PredictionLog, batch: pd.DataFrame, version: str, workspace: Workspace
) -> None:
    """Write the batch and its labels straight into the log's tables, `SLICE` rows at a time.

    (The service's own write path is measured by the serving bench; this only fills a log.)
    """
    dataset = workspace.dataset
    fields = dataset.record_fields()
    for start in range(0, len(batch), SLICE):
        part = batch.iloc[start : start + SLICE]
        rows = (
            part[dataset.record_columns()]
            .astype(object)
            .where(part[dataset.record_columns()].notna(), None)
        )
        rows["event_day"] = workspace.axis.event_days(cols.from_frame(part, fields))
        rows = rows.assign(
            probability=part["probability"].to_numpy(), label=part["label"].to_numpy(),
            model_name="bench", model_version=version, request_id="bench",
            logged_at=[_logged_at(i) for i in range(start, start + len(part))],
            prediction_id=[f"p{i:09d}" for i in range(start, start + len(part))],
        )  # fmt: skip
        _insert(log, log.predictions.name, rows)
        labels = part[[*dataset.key_columns, dataset.target_column]].assign(delivered_at="t")
        _insert(log, log.labels.name, labels)


def _logged_at(i: int) -> str:
    """The i-th prediction's time: one a microsecond."""
    return f"2026-12-01T00:00:{i // 1_000_000:02d}.{i % 1_000_000:06d}+00:00"


def _insert(log: PredictionLog, table: str, frame: pd.DataFrame) -> None:
    names = ", ".join(f'"{c}"' for c in frame.columns)
    marks = ", ".join("?" * len(frame.columns))
    connection = log.engine.raw_connection()
    try:
        connection.cursor().executemany(
            f'INSERT INTO "{table}" ({names}) VALUES ({marks})',  # noqa: S608 - our own schema
            list(frame.itertuples(index=False, name=None)),
        )
        connection.commit()
    finally:
        connection.close()


def scratch_workspace(
    workspace: Workspace, scratch: Path, name: str, engine: str = "local"
) -> Workspace:
    """The project's data and registry; the monitor's outputs and `<name>.sqlite` in `scratch`."""
    overrides = {f"monitor.{key}": str(scratch / key) for key in ("workspace", "reports", "state")}
    overrides["serve.prediction_log"] = str(scratch / f"{name}.sqlite")
    overrides["monitor.engine"] = engine
    return Workspace.load(workspace.write_params(scratch / f"{name}-{engine}.yaml", overrides))


def main() -> None:
    """Print a JSON table: rows, wall time, peak memory, the phases and the cost per row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--dask-from",
        type=int,
        default=1_000_000,
        help="from this size on, also on Dask (monitor.dask_workers processes)",
    )
    args = parser.parse_args()
    sizes = args.sizes
    workspace = Workspace.load(ROOT / "params.yaml")
    dataset, params = workspace.dataset, workspace.params
    version = workspace.registry.alias_version(CHAMPION)
    examples = workspace.examples()
    later = examples[examples[dataset.time_column] >= "2013-07-01"].reset_index(drop=True)
    scored = load_version(workspace.registry, version).scorer.score_frame(later)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        warm = scratch_workspace(workspace, scratch, "warm")
        write_batch(warm.prediction_log, logged_batch(later, scored, 2000, 0), version, workspace)
        measure([sys.executable, "-c", MEASURE, str(warm.params_file)])  # builds the reference
        for size in sizes:
            sized = scratch_workspace(workspace, scratch, f"log-{size}")
            batch = logged_batch(later, scored, size, params.seed)
            write_batch(sized.prediction_log, batch, version, workspace)
            del batch
            engines = ["local", *(["dask"] if size >= args.dask_from else [])]
            for engine in engines:
                on = scratch_workspace(workspace, scratch, f"log-{size}", engine)
                run = measure([sys.executable, "-c", MEASURE, str(on.params_file)])
                run["decision_us_per_row"] = round(run["decision_s"] / size * 1e6, 2)
                results.append({"rows": size, "engine": engine, **run})
                print(results[-1], file=sys.stderr, flush=True)
            Path(sized.params.serve.prediction_log).unlink()
    print(json.dumps({"runs": results, "cpus": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
