"""The README's make targets pass PARAMS on to the command they run."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

# The targets that run one `loopline` command on a params file, and that command.
TARGETS = {"run": "run", "data": "data", "ui": "ui", "team": "up", "serve": "serve",
           "deploy": "deploy", "replay": "replay"}  # fmt: skip


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_runs_its_command_on_the_params_file_it_is_given(target: str) -> None:
    # -n prints the recipes without running them; --old-file: the venv and Prometheus are made
    made = [".venv/.installed", "prometheus"]
    dry = subprocess.run(
        ["make", "-n", *(f"--old-file={file}" for file in made), target,
         "PARAMS=params.wa_churn.yaml"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    command = TARGETS[target]
    runs = [line for line in dry.splitlines() if re.search(rf"/loopline {command}\b", line)]
    assert runs, f"make {target} runs no `loopline {command}`:\n{dry}"
    assert all("--params params.wa_churn.yaml" in line for line in runs), runs
