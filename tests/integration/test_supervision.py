"""Supervision: a server that dies comes back, one restarts on request, stop takes all it started.

Real processes (Python's own HTTP server, and a parent whose child leaves its session the
way a Prefect worker's flow run does), the same `Processes` every command uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from loopline.cli.servers import request_restart
from loopline.core.errors import LooplineError
from loopline.core.io import read_json
from loopline.infra.processes import STATE_FILE, Processes, Server, free_port, http_ready, stop
from tests.conftest import supervising

# A parent that starts a child in a session of its own (as a Prefect worker starts each
# flow run), prints the child's pid, and waits.
DETACHING_PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
    " start_new_session=True)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _http_server(tmp: Path, name: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}/"
    return Server(f"test {name}", command, http_ready(url), url, cwd=tmp,
                  log_file=tmp / f"{name}.log")  # fmt: skip


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Processes, Path, list[str]]]:
    """Two servers under a supervisor thread; its reports; stopped after the test."""
    running, control = Processes(), tmp_path / "control"
    running.start(_http_server(tmp_path, "alpha"))
    running.start(_http_server(tmp_path, "beta"))
    with supervising(running, control) as reports:
        yield running, control, reports


def _pids(control: Path) -> dict[str, int]:
    return {key: s["pid"] for key, s in read_json(control / STATE_FILE)["servers"].items()}


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.2)


def test_a_server_that_dies_is_reported_and_started_again(
    supervised: tuple[Processes, Path, list[str]],
) -> None:
    running, control, reports = supervised
    _wait_for((control / STATE_FILE).is_file)
    first = _pids(control)
    os.kill(first["alpha"], signal.SIGKILL)
    _wait_for(lambda: any("alpha up again" in line for line in reports))
    assert any(line.startswith("alpha exited with code -9") for line in reports), reports
    _wait_for(lambda: _pids(control)["alpha"] != first["alpha"])
    assert _pids(control)["beta"] == first["beta"]  # the other one left alone
    assert running.running[0].server.ready()


def test_one_server_restarts_on_request_and_the_others_stay(
    supervised: tuple[Processes, Path, list[str]],
) -> None:
    _running, control, reports = supervised
    _wait_for((control / STATE_FILE).is_file)
    first = _pids(control)
    said = request_restart(control, "beta", timeout_s=60)
    assert said.startswith("beta restarted in")
    assert _pids(control)["beta"] != first["beta"]
    assert _pids(control)["alpha"] == first["alpha"]
    assert "beta: restart requested" in reports
    with pytest.raises(LooplineError, match=r"no server 'gamma'; the servers are: alpha, beta"):
        request_restart(control, "gamma", timeout_s=1)


def test_stop_also_ends_a_child_that_left_the_process_group() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", DETACHING_PARENT], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    child = int(parent.stdout.readline())
    assert os.getpgid(child) != os.getpgid(parent.pid)  # out of reach of killpg
    stop(parent, grace_s=5)
    _wait_for(lambda: not psutil.pid_exists(child) or
              psutil.Process(child).status() == psutil.STATUS_ZOMBIE, timeout_s=10)  # fmt: skip
