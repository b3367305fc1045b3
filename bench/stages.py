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

from loopline.infra.orchestration import QUIET_ENV, free_port, prefect_server

CORE = {
    "validate": """
from loopline.core.params import load_params
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import read_tables
from loopline.data.validation import validate_tables
p = load_params(); d = get_dataset(p.dataset.name)
r = validate_tables(read_tables(p.paths.data, d.contract), d.contract, p.validate_.min_rows)
assert r.success
""",
    "featurize": """
from loopline.core.params import load_params
from loopline.data.datasets import get_dataset
from loopline.data.datasets.base import read_tables
from loopline.scoring.features import build_feature_sets
p = load_params(); d = get_dataset(p.dataset.name)
t = read_tables(p.paths.data, d.contract)
s, f = build_feature_sets(t, d, p)
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
    with prefect_server(Path(".prefect-bench"), port=free_port()) as api:
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
