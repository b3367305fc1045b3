"""Alerts a human would want: Prometheus over the service and the loop's exporter.

Prometheus scrapes two jobs, `loopline-service` (the prediction service's /metrics) and
`loopline-exporter` (`loopline.loop.exporter`: the registry, the monitor, the labels), and
evaluates the rules in `prometheus/rules.yml` beside this module (their unit tests:
`prometheus/rules_test.yml`, run with `promtool test rules`). `loopline ui` starts it with
the other UIs; Debian's `prometheus` package provides the server and `promtool`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from loopline.core.errors import LooplineError
from loopline.core.io import atomic_path

FOLDER = Path(__file__).parent / "prometheus"
RULES = FOLDER / "rules.yml"
RULE_TESTS = FOLDER / "rules_test.yml"
SERVICE_JOB, EXPORTER_JOB = "loopline-service", "loopline-exporter"
INSTALL = (
    "sudo apt-get install prometheus (Debian or Ubuntu; elsewhere, the release from "
    "prometheus.io on PATH)"
)


def prometheus_binary() -> str:
    """The `prometheus` program on PATH; a LooplineError saying how to install it if none."""
    found = shutil.which("prometheus")
    if found is None:
        raise LooplineError(f"Prometheus is not installed: {INSTALL}")
    return found


def alert_names(rules: Path = RULES) -> list[str]:
    """The alerts a rules file defines, in its order."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def write_config(
    folder: Path,
    service: str,
    exporter: str,
    scrape_interval_s: float = 15,
    rules: Path = RULES,
) -> Path:
    """prometheus.yml in `folder`: scrape the service and the exporter (host:port), `rules`.

    The rules are evaluated as often as the targets are scraped.
    """
    interval = f"{scrape_interval_s:g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules.resolve())],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in ((SERVICE_JOB, service), (EXPORTER_JOB, exporter))
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    with atomic_path(path) as temporary:
        temporary.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
