"""Benchmark: serving latency and throughput, Loopline against outside peers, in one run.

Same machine, same registered champion, same test-window records, every peer given our
best model path (the compiled scorer) and the same number of worker processes:

  * in-process:       each family's raw estimator on ready features (for XGBoost: the
                      booster's own `inplace_predict`), and the compiled scorer from raw
                      records (1 and 1,000 records), no HTTP;
  * loopline:         the Loopline BentoML service as configured (validation, durable
                      prediction log, guards, hot swap), serve.batching false;
  * loopline-batching: the same service with serve.batching true (BentoML adaptive
                      batching in an internal model service);
  * fastapi:          a minimal FastAPI app around the same compiled scorer
                      (bench/serve/fastapi_app.py: no validation, no log, no guards);
  * mlflow:           `mlflow models serve` on the same registered version (its pyfunc
                      loads the same compiled scorer);
  * bentoml-floor:    a BentoML service that does nothing (bench/serve/bentoml_floor.py):
                      the framework's own cost per request, for scale.

Loads: 1 client x 1 record, 32 clients x 1 record, 4 clients x 100 records; one client
beside 500 connections stalled mid-body (headers sent, 20 of 2,000 body bytes) and beside
500 stalled mid-headers, then what the server did with the stalled ones (answered and
closed, or still open 12 s later); then bursts of 200 and 500 concurrent clients x 3
requests (status counts: shed 503s with Retry-After, 5xx, hung = no answer in 30 s) and a
recovery check right after each burst. The load
generator (asyncio + aiohttp, bodies pre-encoded) runs on the same machine; compare ratios.

Everything runs with OMP_NUM_THREADS=1, as the service's workers do (the bench re-executes
itself with it). Run from the project root after `make run`:  .venv/bin/python -m bench.serve.run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd
import psutil

from loopline.data import columns as cols
from loopline.infra.environment import tool_environment
from loopline.infra.processes import (
    SERVICE_ENV,
    Processes,
    Server,
    bentoml_service,
    free_port,
    http_ready,
)
from loopline.registry.versions import CHAMPION
from loopline.scoring.scorer import SCORER_DIR, load_scorer
from loopline.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
HOST = "127.0.0.1"
LOADS = {  # name: (records per request, concurrent clients, requests)
    "1 client x 1 record": (1, 1, 400),
    "32 clients x 1 record": (1, 32, 6400),
    "4 clients x 100 records": (100, 4, 400),
}
BURSTS = {"200 clients x 3": 200, "500 clients x 3": 500}
HANG_S = 30
STALLED = 500  # connections that stop sending, held while one normal client runs
STALLS = {  # name: where a stalled connection stops
    "beside 500 stalled mid-body": b"body",
    "beside 500 stalled mid-headers": b"headers",
}
STALL_WAIT_S = 12  # how long to wait, after the normal client, for the server to close them


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
    }


async def load(
    url: str, bodies: list[bytes], clients: int, requests: int, *, staggered: bool = False
) -> dict:
    """`requests` POSTs from `clients` concurrent connections: latency, rate, status counts.

    `staggered`: each client connects once the one before it has its first answer, as
    clients arrive over time, instead of all at one instant. A worker that wakes to a
    burst of connects accepts every one queued (asyncio's accept loop), so a simultaneous
    start can put all 4 clients of the 100-record load on one of the 2 workers, measuring
    the accept race rather than the server (seen for Loopline in 2 of 6 runs: one worker
    busy, the other idle). The bursts keep their simultaneous start.
    """
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    retry_after = 0
    counter = iter(range(requests))
    headers = {"content-type": "application/json"}
    answered = [asyncio.Event() for _ in range(clients)]  # each client's first answer

    async def client(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal retry_after
        if staggered and k:
            await answered[k - 1].wait()
        for i in counter:
            started = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    statuses[str(r.status)] += 1
                    retry_after += r.status == 503 and "Retry-After" in r.headers
            except TimeoutError:
                statuses["hung"] += 1
            except aiohttp.ClientError as error:
                statuses[type(error).__name__] += 1
            latencies.append(time.perf_counter() - started)
            answered[k].set()
        answered[k].set()  # no request was left for it

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=HANG_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for body in bodies[:3]:  # warm up
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    ok = statuses["200"]
    records = len(json.loads(bodies[0]).popitem()[1])
    return {**percentiles(latencies), "requests_per_s": round(requests / elapsed, 1),
            "ok_records_per_s": round(ok * records / elapsed, 1), "statuses": dict(statuses),
            "shed_with_retry_after": retry_after}  # fmt: skip


def _opening(path: str, where: bytes) -> bytes:
    """The first bytes of a POST that stops mid-headers or after 20 bytes of a 2 KB body."""
    head = f"POST {path} HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\n"
    if where == b"headers":
        return head.encode() + b"content-len"
    return head.encode() + b"content-length: 2000\r\n\r\n" + b'{"records": [{"dist'


async def beside_stalled(url: str, path: str, bodies: list[bytes], where: bytes) -> dict:
    """One normal client's latency while `STALLED` connections stall, then what became of
    those: the status line the server sent before closing, or "still open"."""
    address = url.removeprefix("http://").split(":")
    stalled = [await asyncio.open_connection(address[0], int(address[1])) for _ in range(STALLED)]
    for _, writer in stalled:
        writer.write(_opening(path, where))
    await asyncio.gather(*(writer.drain() for _, writer in stalled))
    normal = await load(f"{url}{path}", bodies, 1, 200)

    async def fate(reader: asyncio.StreamReader) -> str:
        try:
            answer = await asyncio.wait_for(reader.read(), STALL_WAIT_S)
        except TimeoutError:
            return "still open"
        return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed, no answer"

    fates = Counter(await asyncio.gather(*(fate(reader) for reader, _ in stalled)))
    for _, writer in stalled:
        writer.close()
    return {**normal, "stalled": dict(fates)}


def bodies_of(records: list[dict], size: int, key: str) -> list[bytes]:
    """Pre-encoded request bodies of `size` records each, cycling through the test window."""
    chunks = [records[i : i + size] for i in range(0, len(records) - size, size)][:200]
    return [json.dumps({key: chunk}).encode() for chunk in chunks]


def timed(call: object, repeats: int) -> list[float]:
    """Wall time of `call()` `repeats` times, after 20 warm-up calls."""
    for _ in range(20):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def in_process(models_dir: Path, records: list[dict]) -> dict:
    """Per family: the raw estimator on ready features, the compiled scorer from records."""
    rows = {}
    for scorer_dir in sorted(models_dir.glob(f"*/{SCORER_DIR}")):
        scorer = load_scorer(scorer_dir, threads=1)
        one = cols.from_records(records[:1], scorer.record_fields)
        features = scorer.features(one)
        rows[scorer.family] = {
            "raw estimator, 1 row (ready features)": percentiles(
                timed(lambda s=scorer, x=features: s.estimator.predict(x), 2000)
            ),
            "compiled scorer, 1 record": percentiles(
                timed(lambda s=scorer: s.score_records(records[:1]), 2000)
            ),
            "compiled scorer, 1000 records": percentiles(
                timed(lambda s=scorer: s.score_records(records[:1000]), 100)
            ),
        }
    return rows


def write_params(workspace: Workspace, scratch: Path, batching: bool) -> Path:
    """A params file for the service under test: the project's registry, a scratch log."""
    return workspace.write_params(
        scratch / f"params-batching-{batching}.yaml",
        {
            "registry.ledger": str(scratch / "ledger.jsonl"),
            "serve.batching": batching,
            "serve.workers": WORKERS,
            "serve.prediction_log": str(scratch / f"log-{batching}.sqlite"),
        },
    )


# A peer: how to start its server on a port, logging to a file; its predict path; body key.
Peer = tuple[Callable[[int, Path], Server], str, str]


@dataclass(frozen=True)
class Outside:
    """A peer that is not our service: `command` plus the port, run from the project root."""

    name: str
    command: list[str]
    health: str  # the path that answers 200 once it is up
    env: dict[str, str]

    def __call__(self, port: int, log_file: Path) -> Server:
        """Its server on `port`, output to `log_file`."""
        url = f"http://{HOST}:{port}"
        return Server(
            self.name, [*self.command, str(port)], http_ready(f"{url}{self.health}"), url,
            env=self.env, cwd=ROOT, log_file=log_file,
        )  # fmt: skip


def peers(
    scratch: Path, workspace: Workspace, version: str, env: dict[str, str]
) -> dict[str, Peer]:
    """name: (its server on a port with a log file, predict path, body key)."""
    python = sys.executable
    fastapi = [python, "-m", "uvicorn", "bench.serve.fastapi_app:app", "--host", HOST,
               "--log-level", "warning", "--workers", str(WORKERS), "--port"]  # fmt: skip
    model = f"models:/{workspace.registry.name}/{version}"
    mlflow = [python, "-m", "mlflow", "models", "serve", "-m", model,
              "--env-manager", "local", "-h", HOST, "-w", str(WORKERS), "-p"]  # fmt: skip
    floor = [python, "-m", "bentoml", "serve", "bench.serve.bentoml_floor:Floor",
             "--host", HOST, "--port"]  # fmt: skip
    off, on = write_params(workspace, scratch, False), write_params(workspace, scratch, True)
    service_env = {k: env[k] for k in ("MLFLOW_TRACKING_URI", "BENTOML_HOME")}
    outside_env = {**env, "LOOPLINE_PARAMS": str(off)}
    return {
        "loopline": (partial(bentoml_service, off, HOST, **service_env), "/predict", "records"),
        "loopline-batching": (
            partial(bentoml_service, on, HOST, **service_env), "/predict", "records",
        ),
        "fastapi": (Outside("fastapi", fastapi, "/docs", outside_env), "/predict", "records"),
        "mlflow": (
            Outside("mlflow", mlflow, "/health", outside_env), "/invocations", "dataframe_records",
        ),
        "bentoml-floor": (
            Outside("bentoml-floor", floor, "/readyz", outside_env), "/predict", "records",
        ),
    }  # fmt: skip


def servers_cpu_s() -> float:
    """CPU seconds (user + system) used so far by every process this bench started."""
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that ended meanwhile
            times = process.cpu_times()
            total += times.user + times.system
    return total


def run_peer(url: str, predict: str, key: str, records: list[dict], bursts: bool) -> dict:
    """Every load (and, if asked, the bursts with a recovery check) against one server.

    Each steady load also reports the server's CPU per request (all its processes'
    CPU time over the load, divided by the requests): steadier across runs than req/s on
    a machine whose two cores the load generator shares.
    """
    target = f"{url}{predict}"
    results = {}
    for name, (size, clients, count) in LOADS.items():
        before = servers_cpu_s()
        results[name] = asyncio.run(
            load(target, bodies_of(records, size, key), clients, count, staggered=True)
        )
        results[name]["server_cpu_ms_per_request"] = round(
            1000 * (servers_cpu_s() - before) / count, 3
        )
    singles = bodies_of(records, 1, key)
    for name, where in STALLS.items():
        results[name] = asyncio.run(beside_stalled(url, predict, singles, where))
    if bursts:
        for name, clients in BURSTS.items():
            results[name] = asyncio.run(load(target, singles, clients, clients * 3))
            recovery = asyncio.run(load(target, singles, 1, 20))
            results[name]["recovered"] = recovery["statuses"] == {"200": 20}
    return results


def main() -> None:
    """Run the in-process floors and every peer under every load; print one JSON document."""
    if os.environ.get("OMP_NUM_THREADS") != "1":  # measure as the service runs: one thread
        environment = {**os.environ, **SERVICE_ENV}
        os.execve(  # noqa: S606 - re-runs this very bench
            sys.executable, [sys.executable, "-m", "bench.serve.run", *sys.argv[1:]], environment
        )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", nargs="+", help="only these servers")
    chosen = parser.parse_args().peers
    workspace = Workspace.load(ROOT / "params.yaml")
    version = workspace.registry.alias_version(CHAMPION)
    test = pd.read_parquet(workspace.layout.examples("test"))
    records = json.loads(
        test.drop(columns=["scheduled_departure", "late"]).to_json(orient="records")
    )
    results: dict = {
        "champion_version": version,
        "in_process": in_process(workspace.params.paths.models, records),
        "servers": {},
    }
    tracking = workspace.params.mlflow.tracking_uri  # absolute: the project's store
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        env = tool_environment(  # the venv's bin first on PATH: mlflow runs `uvicorn` by name
            **SERVICE_ENV, MLFLOW_TRACKING_URI=tracking, BENTOML_HOME=str(scratch / "bentoml")
        )
        for name, (server, predict, key) in peers(scratch, workspace, version, env).items():
            if chosen and name not in chosen:
                continue
            with Processes() as processes:
                url = processes.start(server(free_port(), scratch / f"{name}.log"))
                results["servers"][name] = run_peer(url, predict, key, records, bursts=True)
            print(name, json.dumps(results["servers"][name]), file=sys.stderr)
    results["cpus"] = os.cpu_count()
    results["python"] = sys.version.split()[0]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
