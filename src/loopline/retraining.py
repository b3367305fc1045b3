"""Retraining: move the time windows to the newest labels and re-run the DVC pipeline.

The new windows end at the latest labeled day: test on the last `test_days`, validate on
the `valid_days` before, train on everything from the original training start up to
that (an expanding window). No day after the labels is touched, so the retrained model
never sees the future. The pipeline runs as a DVC experiment (`dvc exp run -S ...`), so
`dvc exp show` lists every retrain with its windows and metrics, and its register stage
decides on promotion exactly as a manual run would.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from loopline.config import DateWindow, RetrainParams, SplitParams
from loopline.errors import LooplineError


def moved_split(current: SplitParams, labeled_until: dt.date, params: RetrainParams) -> SplitParams:
    """Windows ending at `labeled_until`; training keeps its start and grows."""
    test_start = labeled_until - dt.timedelta(days=params.test_days - 1)
    valid_start = test_start - dt.timedelta(days=params.valid_days)
    if valid_start <= current.train.start:
        raise LooplineError(
            f"labels up to {labeled_until} leave no training days before {valid_start}"
        )
    return SplitParams(
        train=DateWindow(start=current.train.start, end=valid_start - dt.timedelta(days=1)),
        valid=DateWindow(start=valid_start, end=test_start - dt.timedelta(days=1)),
        test=DateWindow(start=test_start, end=labeled_until),
    )


def dvc_overrides(split: SplitParams) -> list[str]:
    """`-S key="value"` arguments setting every split date (quoted: DVC rejects YAML dates)."""
    arguments = []
    for name, window in split.windows().items():
        for edge in ("start", "end"):
            arguments += ["-S", f'featurize.split.{name}.{edge}="{getattr(window, edge)}"']
    return arguments


def run_experiment(
    name: str, split: SplitParams, root: Path, env: dict[str, str], timeout_s: float
) -> str:
    """`dvc exp run` with the new windows in `root`; returns DVC's output (raises on failure)."""
    command = [sys.executable, "-m", "dvc", "exp", "run", "--name", name, *dvc_overrides(split)]
    result = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise LooplineError(f"dvc exp run {name} failed (exit {result.returncode}):\n{tail}")
    return result.stdout
