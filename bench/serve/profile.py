"""Profile: where one API worker of the Loopline service spends its time under load.

Starts the service as `bench.serve.run` does (the project's champion, a scratch prediction
log), drives it with 32 clients x 1 record, and meanwhile samples one API worker with
py-spy (`py-spy record --format raw --threads`, every thread, idle ones left out) for
`--seconds`. Each sampled stack is put in the first of these that it matches, read from
its frames. The prediction log's stacks: its writer thread's (by the thread's name), or
the event loop's inside a group commit made there (`PredictionLog._commit`):

  * log: commit         - inside the database commit (the WAL write; the fsync if any)
  * log: insert         - executing the insert
  * log: other          - anywhere else (taking the group, locks, resolving futures)

The event loop's other stacks, by the innermost frame that is one of:

  * scoring             - the compiled scorer (features and the estimator)
  * validation          - the request's pydantic pass, record columns
  * our guards          - loopline.serving.guards (intake, key, JSON only, load shed)
  * hand-off            - futures and wake-ups between the event loop and the writer
  * our request code    - the routes, ids and rows, submitting to the log
  * HTTP and framework  - uvicorn, starlette, FastAPI, BentoML, OpenTelemetry, Prometheus,
                          asyncio, json
  * other

Prints one JSON document: the load's numbers and each category's share of the samples.
py-spy needs ptrace rights on the worker (root, or kernel.yama.ptrace_scope=0).
Run from the project root after `make run`:  .venv/bin/python -m bench.serve.profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import pandas as pd
import psutil

from bench.serve.run import HOST, ROOT, bodies_of, load, write_params
from loopline.infra.processes import Processes, bentoml_service, free_port
from loopline.workspace import Workspace

WORKER_MODULE = "_bentoml_impl.worker.service"
WRITER = "prediction-log-writer"  # the log's writer thread, by name
IN_LOOP_COMMIT = "PredictionLog._commit ("  # a group commit made in the event loop
# The event loop's stacks, by the innermost frame that names one of these (checked in order).
CATEGORIES = {
    "scoring": ("loopline/scoring/",),
    "validation": ("pydantic", "serving/schema.py", "data/columns.py"),
    "our guards": ("serving/guards.py",),
    "hand-off": ("concurrent/futures/", "wrap_future", "_chain_future", "call_soon_threadsafe"),
    "our request code": ("serving/service.py", "infra/prediction_log.py", "serving/champion.py"),
    "HTTP and framework": ("uvicorn/", "starlette/", "bentoml/", "_bentoml_", "opentelemetry/",
                           "prometheus_client/", "fastapi/", "httptools", "h11/", "asyncio/",
                           "json/"),
}  # fmt: skip
LOG_PARTS = {  # the log's stacks (its writer thread, or a commit in the loop), by any frame
    "log: commit": ("do_commit", "_commit_impl"),
    "log: insert": ("do_executemany", "do_execute", "_execute_context"),
}


def api_worker(server_pid: int) -> int:
    """The pid of one API worker of the `bentoml serve` process `server_pid`."""
    for child in psutil.Process(server_pid).children(recursive=True):
        if WORKER_MODULE in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError(f"no {WORKER_MODULE} process under pid {server_pid}")


def category(stack: str) -> str:
    """The category of one sampled stack (py-spy raw: `thread (id): name;frame;frame...`)."""
    thread, _, joined = stack.partition(";")
    frames = joined.split(";")
    if WRITER in thread or any(IN_LOOP_COMMIT in frame for frame in frames):
        for name, markers in LOG_PARTS.items():
            if any(marker in frame for frame in frames for marker in markers):
                return name
        return "log: other"
    for frame in reversed(frames):  # innermost first
        for name, markers in CATEGORIES.items():
            if any(marker in frame for marker in markers):
                return name
    return "other"


def shares(raw: str) -> dict[str, float]:
    """Each category's share of the samples in a py-spy raw (collapsed) file."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[category(stack)] += int(count)
    total = sum(counts.values()) or 1
    return {name: round(n / total, 3) for name, n in counts.most_common()} | {"samples": total}


def main() -> None:
    """Start the service, load it, profile one worker; print the shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="how long py-spy samples")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's raw stacks here")
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    workspace = Workspace.load(ROOT / "params.yaml")
    test = pd.read_parquet(workspace.layout.examples("test"))
    records = json.loads(
        test.drop(columns=["scheduled_departure", "late"]).to_json(orient="records")
    )
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        service = bentoml_service(
            write_params(workspace, scratch, batching=False), HOST, free_port(),
            scratch / "bentoml.log", MLFLOW_TRACKING_URI=workspace.params.mlflow.tracking_uri,
            BENTOML_HOME=str(scratch / "bentoml"),
        )  # fmt: skip
        with Processes() as processes:
            url = processes.start(service)
            worker = api_worker(processes.running[-1].process.pid)
            out = scratch / "profile.txt"
            command = [spy, "record", "--pid", str(worker), "--duration", str(args.seconds),
                       "--rate", "200", "--format", "raw", "--threads", "--output", str(out),
                       "--nonblocking"]  # fmt: skip
            stop = threading.Event()
            result: dict = {}

            def drive() -> None:  # 32 clients x 1 record, again and again while py-spy runs
                singles = bodies_of(records, 1, "records")
                while not stop.is_set():
                    result.update(asyncio.run(load(f"{url}/predict", singles, 32, 3200)))

            driver = threading.Thread(target=drive)
            driver.start()
            try:
                subprocess.run(command, check=True, capture_output=True)
            finally:
                stop.set()
                driver.join()
            raw = out.read_text()
            if args.raw:
                args.raw.write_text(raw)
    print(json.dumps({"load (last round)": result, "shares": shares(raw),
                      "cpus": os.cpu_count()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
