"""The replay's wait for a retrain rides out a Prefect server restart, or says so in one line."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from loopline.core.errors import LooplineError
from loopline.infra import processes
from loopline.infra.prefect import wait_for_flow_run
from loopline.infra.processes import Processes, free_port

pytestmark = pytest.mark.slow


def _post(url: str, body: dict) -> httpx.Response:
    """POST, asking again while a just-started server answers 503 (its database busy)."""
    for _ in range(20):
        response = httpx.post(url, json=body, timeout=10)
        if response.status_code != 503:
            return response.raise_for_status()
        time.sleep(min(float(response.headers.get("Retry-After", "0.5")), 2.0))
    return response.raise_for_status()


def _finished_retrain(api_url: str, decision_id: str) -> None:
    """A completed run of a flow named retrain with this decision id, straight through the API."""
    flow = _post(f"{api_url}/flows/", {"name": "retrain"}).json()
    run = {"flow_id": flow["id"], "parameters": {"decision_id": decision_id},
           "state": {"type": "COMPLETED", "name": "Completed"}}  # fmt: skip
    _post(f"{api_url}/flow_runs/", run)


def test_waiting_for_a_run_survives_the_prefect_server_restarting(tmp_path: Path) -> None:
    server = processes.prefect_server(tmp_path / "prefect", "127.0.0.1", free_port())
    with Processes() as running:
        api_url = running.start(server)
        _finished_retrain(api_url, "d-1")
        os.killpg(running.running[0].process.pid, signal.SIGKILL)
        running.running[0].process.wait()
        again = Processes()
        later = threading.Timer(3, again.start, args=(server,))
        later.start()
        try:
            started = time.monotonic()
            finished = wait_for_flow_run(api_url, "retrain", {"decision_id": "d-1"}, 180)
            waited = time.monotonic() - started
        finally:
            later.join()
            again.stop_all()
    assert finished["state"] == "COMPLETED"
    assert waited > 3  # it was down when asked, and asked again until it answered


def test_a_prefect_server_that_stays_down_is_named_in_one_line() -> None:
    api_url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(LooplineError) as raised:
        wait_for_flow_run(api_url, "retrain", {"decision_id": "d-2"}, 5)
    assert "Prefect server unreachable at " + api_url in str(raised.value)
    assert "\n" not in str(raised.value)
