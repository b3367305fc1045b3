"""Benchmark: wall time and peak memory of the validate and featurize stages on the full data.

Each stage runs twice in one session, on the same machine state:
  * as its real command (`python -m pipelines.<stage>`, reporting to one local Prefect
    server), measured from outside: wall time and the child's peak RSS;
  * its library core only, in a fresh process (no Prefect), to show what orchestration
    and imports add.
Run from the project root after `make data`:  .venv/bin/python bench/stages.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from loopline.infra.environment import QUIET_ENV
from loopline.infra.processes import Processes, free_port, prefect_server

CORE = {
    "validate": """
from loopline.data.validation import validate_tables
from loopline.workspace import Workspace
w = Workspace.load()
r = validate_tables(w.tables(), w.dataset.contract, w.params.validate_.min_rows)
assert r.success
""",
    "featurize": """
from loopline.training.featurize import build_feature_sets
from loopline.workspace import Workspace
w = Workspace.load(); d = w.dataset
s, f = build_feature_sets(w.tables(), d, w.params)
for frame in s.values():
    f.transform(frame[d.record_columns()])
""",
}


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    pid = os.posix_spawn(command[0], command, env)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }  # KiB on Linux


def main() -> None:
    """Measure both stages both ways and print a JSON summary."""
    env = {**os.environ, **QUIET_ENV}
    results: dict[str, dict] = {}
    server = prefect_server(Path(".prefect-bench").resolve(), "127.0.0.1", free_port())
    with Processes() as processes:
        api = processes.start(server)
        for stage, code in CORE.items():
            stage_env = {**env, "PREFECT_API_URL": api}
            full = measure([sys.executable, "-m", f"pipelines.{stage}"], stage_env)
            core = measure([sys.executable, "-c", code], env)
            results[stage] = {
                "stage": full,
                "core": core,
                "stage_over_core": round(full["wall_s"] / core["wall_s"], 2),
            }
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
