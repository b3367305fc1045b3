"""Durability under SIGKILL: no prediction a client received with 200 is missing from the log.

The service answers only after the group commit holding a request's rows is on disk, so
killing a process mid-load may fail requests in flight, but never loses an answered one.
Killed: an API worker (scoring in-process, batching off) and, separately, the model
worker behind the API (batching on). The arbiter restarts the victim; the load goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from loopline.infra.prediction_log import read_predictions
from tests.integration.conftest import ServingWorld, bento_server

pytestmark = pytest.mark.slow
CLIENTS = 8
LOAD_S = 8.0
KILL_AFTER_S = 2.0
# A commit window long enough that a kill always lands while rows wait in it: a service
# that answered before its rows were durable would lose them, and this test would fail.
COMMIT_DELAY_MS = 100


def _worker_pid(params_file: Path, service: str) -> int:
    """PID of a BentoML worker of `service` started with this params file."""
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "_bentoml_impl.worker.service" not in command or service not in command:
            continue
        if command[command.index("--service-name") + 1] != service:
            continue
        try:
            if process.environ().get("LOOPLINE_PARAMS") == str(params_file.resolve()):
                return process.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no {service} worker for {params_file}")


def _hammer(url: str, body: dict, stop: threading.Event, answered: list, failed: list) -> None:
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            try:
                response = http.post(f"{url}/predict", json=body)
            except httpx.HTTPError as error:
                failed.append(type(error).__name__)
                continue
            if response.status_code == 200:
                answered.append(response.json())
            else:
                failed.append(response.status_code)


def _recovers(url: str, body: dict, within_s: float = 120) -> bool:
    """True once a prediction succeeds again (the arbiter restarts the killed worker)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(f"{url}/predict", json=body, timeout=30).status_code == 200:
                return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize(("batching", "victim"), [(False, "loopline"), (True, "loopline-model")])
def test_no_answered_prediction_is_lost_when_a_worker_is_killed(
    serving_world: ServingWorld, tmp_path: Path, dataset, batching: bool, victim: str
) -> None:
    columns = dataset.record_columns()
    log_name = f"kill-{victim}.sqlite"
    params = serving_world.write_params(
        f"params-kill-{victim}.yaml", batching=batching, workers=2, prediction_log=log_name,
        log_commit_delay_ms=COMMIT_DELAY_MS,
    )  # fmt: skip
    rows = serving_world.test_records.iloc[:5][columns]
    body = {"records": json.loads(rows.to_json(orient="records"))}
    answered: list = []
    failed: list = []
    stop = threading.Event()
    with bento_server(params, tmp_path) as url:
        pid = _worker_pid(params, victim)
        clients = [
            threading.Thread(target=_hammer, args=(url, body, stop, answered, failed))
            for _ in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        time.sleep(KILL_AFTER_S)
        os.kill(pid, signal.SIGKILL)
        time.sleep(LOAD_S - KILL_AFTER_S)
        stop.set()
        for thread in clients:
            thread.join()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert _recovers(url, body), "the service did not answer again after the kill"
    received = {p["prediction_id"] for r in answered for p in r["predictions"]}
    logged = set(read_predictions(serving_world.root / log_name)["prediction_id"])
    assert received, "no request succeeded"
    assert received <= logged, f"{len(received - logged)} answered predictions missing"
