"""Benchmark: serving latency and throughput, Loopline's BentoML service vs the alternatives.

In one run, on the same records (the test window) and the same registered champion:
  * floor:            the model's own predict() in-process, no HTTP (the LooplineModel the
                      service calls, and MLflow's pyfunc predict with its schema check);
  * bentoml:          the Loopline service (`serving/service.py`), adaptive batching on;
  * bentoml-nobatch:  the same service with serve.batching false;
  * fastapi:          a minimal FastAPI app that loads the same model (bench/serve/fastapi_app.py).
Each server is measured with single-record requests (1 and 16 concurrent clients) and
100-record requests (1 and 4 concurrent clients). The load generator (asyncio + httpx)
runs on the same 2-core machine, so absolute numbers include its cost; compare ratios.
Run from the project root after `make run`:  .venv/bin/python -m bench.serve.run
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import yaml

from loopline.config import load_params
from loopline.orchestration import QUIET_ENV, free_port, stop_process, wait_until_healthy
from loopline.registry import CHAMPION, Registry
from loopline.tracking import configure_mlflow

ROOT = Path(__file__).resolve().parents[2]
LOADS = {  # name: (records per request, concurrent clients, requests)
    "single x1": (1, 1, 300),
    "single x16": (1, 16, 1600),
    "batch100 x1": (100, 1, 60),
    "batch100 x4": (100, 4, 120),
}


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    values = np.asarray(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
    }


async def load(url: str, payloads: list[dict], clients: int, requests: int) -> dict:
    """Send `requests` POSTs from `clients` concurrent clients; latency and throughput."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in counter:
            started = time.perf_counter()
            response = await http.post(url, json=payloads[i % len(payloads)])
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        for payload in payloads[:3]:  # warm up
            await http.post(url, json=payload)
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    records = sum(len(payloads[i % len(payloads)]["records"]) for i in range(requests))
    return {**percentiles(latencies), "requests_per_s": round(requests / elapsed, 1),
            "records_per_s": round(records / elapsed, 1), "failures": failures}  # fmt: skip


def payloads_of(records: list[dict], size: int) -> list[dict]:
    """Request bodies of `size` records each, cycling through the test window."""
    return [{"records": records[i : i + size]} for i in range(0, len(records) - size, size)][:200]


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], health: str) -> Iterator[None]:
    """Start a server process; wait for its health URL; stop it afterwards."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_healthy(health, timeout_s=120, process=process)
        yield
    finally:
        stop_process(process)


def floor(model: object, frame: pd.DataFrame, label: str) -> dict:
    """In-process predict(): the lower bound any server adds to."""
    result = {}
    for name, size, repeats in ((f"{label} single", 1, 300), (f"{label} batch100", 100, 60)):
        latencies = []
        for i in range(repeats):
            rows = frame.iloc[(i * size) % (len(frame) - size) :][:size]
            started = time.perf_counter()
            model.predict(rows)
            latencies.append(time.perf_counter() - started)
        total = sum(latencies)
        result[name] = {**percentiles(latencies), "records_per_s": round(size * repeats / total, 1)}
    return result


def main() -> None:
    """Run every load against every server and print one JSON document."""
    params = load_params(ROOT / "params.yaml")
    configure_mlflow(params.mlflow, root=ROOT)
    registry = Registry(params.registry)
    version = registry.alias_version(CHAMPION)
    model = mlflow.pyfunc.load_model(registry.model_uri(version))
    columns = list(model.metadata.get_input_schema().input_names())
    test = pd.read_parquet(ROOT / params.paths.features / "examples" / "test.parquet")[columns]
    records = json.loads(test.to_json(orient="records"))
    unwrapped = model.unwrap_python_model().model
    results: dict = {
        "champion_version": version,
        "floor": floor(unwrapped, test, "model") | floor(model, test, "pyfunc"),
        "servers": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["mlflow"]["tracking_uri"] = f"sqlite:///{(ROOT / 'mlflow.db').resolve()}"
        raw["mlflow"]["artifact_root"] = str((ROOT / "mlruns").resolve())
        raw["registry"]["ledger"] = str(Path(scratch) / "ledger.jsonl")
        raw["serve"]["prediction_log"] = str(Path(scratch) / "predictions.sqlite")
        on = Path(scratch) / "params-batching.yaml"
        on.write_text(yaml.safe_dump(raw))
        raw["serve"]["batching"] = False
        off = Path(scratch) / "params-nobatch.yaml"
        off.write_text(yaml.safe_dump(raw))
        env = {**os.environ, **QUIET_ENV, "BENTOML_HOME": str(Path(scratch) / "bentoml")}
        bento = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "serving.service:LateArrivalAPI",
            "--host",
            "127.0.0.1",
            "--port",
        ]
        fastapi = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.serve.fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
            "--port",
        ]
        servers = {
            "bentoml": (bento, on, "/readyz"),
            "bentoml-nobatch": (bento, off, "/readyz"),
            "fastapi": (fastapi, on, "/docs"),
        }
        for name, (command, params_file, health) in servers.items():
            port = free_port()
            server_env = {**env, "LOOPLINE_PARAMS": str(params_file)}
            with server([*command, str(port)], server_env, f"http://127.0.0.1:{port}{health}"):
                url = f"http://127.0.0.1:{port}/predict"
                results["servers"][name] = {
                    load_name: asyncio.run(load(url, payloads_of(records, size), clients, count))
                    for load_name, (size, clients, count) in LOADS.items()
                }
    results["cpus"] = os.cpu_count()
    results["python"] = sys.version.split()[0]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
