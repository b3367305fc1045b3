"""Retraining: move the time windows to the newest labels and re-run the DVC pipeline.

The new windows end at the latest labeled day: test on the last `test_days`, validate on
the `valid_days` before, train on everything from the original training start up to
that (an expanding window). No day after the labels is touched, so the retrained model
never sees the future. The pipeline runs as a DVC experiment in a temporary workspace
(`dvc exp run --temp -S ...`): the user's checkout (params.yaml, dvc.lock, outputs) is
never touched, `dvc exp show` lists every retrain with its windows and metrics, and its
register stage decides on promotion exactly as a manual run would. The shared state (the
MLflow store, the ledger, the model cards) is pointed at the checkout's by absolute paths,
so the experiment's runs and decision land where the service and the monitor look.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from loopline.config import DateWindow, Params, RetrainParams, SplitParams
from loopline.errors import LooplineError
from loopline.tracking import tracking_uri_at


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


def shared_state(params: Params, root: Path) -> dict[str, str]:
    """Settings that point a temporary workspace at `root`'s MLflow store and registry.

    All are passed, always: the experiment starts from params.yaml, and `params` may be
    another file (team mode's, pointed at servers). Relative paths are made absolute (in
    the temporary copy they would be lost with it); URLs and absolute paths stay as they are.
    """
    overrides = {"mlflow.tracking_uri": tracking_uri_at(params.mlflow.tracking_uri, root)}
    for key, location in (
        ("mlflow.artifact_root", params.mlflow.artifact_root),
        ("registry.ledger", params.registry.ledger),
        ("registry.cards", params.registry.cards),
    ):
        overrides[key] = str(location) if "://" in str(location) else str(root / location)
    return overrides


def dvc_overrides(split: SplitParams, shared: dict[str, str]) -> list[str]:
    """`-S key="value"` arguments: every split date, and the shared state's locations.

    Values are JSON-quoted: DVC parses `-S` values as YAML, which would turn a bare date
    into a date object (rejected) and read some paths as something else.
    """
    settings = {
        f"featurize.split.{name}.{edge}": str(getattr(window, edge))
        for name, window in split.windows().items()
        for edge in ("start", "end")
    } | shared
    return [arg for key, value in settings.items() for arg in ("-S", f"{key}={json.dumps(value)}")]


def run_experiment(
    name: str, overrides: list[str], root: Path, env: dict[str, str], timeout_s: float
) -> str:
    """`dvc exp run --temp` in `root` with these `-S` overrides; returns DVC's output.

    Raises LooplineError with DVC's last output if the experiment fails.
    """
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name, *overrides]
    result = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise LooplineError(f"dvc exp run {name} failed (exit {result.returncode}):\n{tail}")
    return result.stdout
