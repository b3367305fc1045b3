"""Retraining: learn from the newest labels and re-run the pipeline.

**A dataset with a time column** moves its date windows and re-runs the DVC pipeline.

The new windows end at the latest labeled day: test on the last `test_days`, validate on
the `valid_days` before, train on everything from the original training start up to
that (an expanding window). No day after the labels is touched, so the retrained model
never sees the future. The pipeline runs as a DVC experiment in a temporary workspace
(`dvc exp run --temp -S ...`): the user's checkout (params.yaml, dvc.lock, outputs) is
never touched, `dvc exp show` lists every retrain with its windows and metrics, and its
register stage decides on promotion exactly as a manual run would. The shared state (the
MLflow store, the ledger, the model cards) is pointed at the checkout's by absolute paths,
so the experiment's runs and decision land where the service and the monitor look.

**A dataset without one** learns from its labeled arrivals: the prediction log says which
examples have arrived and had their label delivered, and when. The newest
`retrain.test_arrivals` of them are the test split, the window the promotion gate judges
on; everything before (the examples the first split used, and the older arrivals) is
split into train and valid by the seeded, stratified fractions of `featurize.split`. The
split goes to the pipeline as a file of keys (`featurize.split.keys_file`), and the stages of
dvc.yaml run in order under a params file written for the retrain in a scratch folder:
stage outputs go there, the shared state (MLflow, ledger, cards) stays the checkout's.
Since the test arrivals are always the newest, neither the champion nor the challenger
was fitted or chosen on them (with `test_arrivals` unchanged between retrains).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import (
    PARAMS_ENV,
    DateWindow,
    FractionSplit,
    Params,
    RetrainParams,
    SplitParams,
    required,
)
from loopline.infra.orchestration import stage_commands
from loopline.scoring.features import split_at_random, stratified_parts
from loopline.training.tracking import tracking_uri_at


def moved_split(current: SplitParams, labeled_until: dt.date, params: RetrainParams) -> SplitParams:
    """Windows ending at `labeled_until`; training keeps its start and grows."""
    why = "to move the date windows of a retrain"
    test_days = required(params.test_days, "retrain.test_days", why)
    valid_days = required(params.valid_days, "retrain.valid_days", why)
    test_start = labeled_until - dt.timedelta(days=test_days - 1)
    valid_start = test_start - dt.timedelta(days=valid_days)
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
        overrides[key] = _rooted(location, root)
    return overrides


def _rooted(location: str | Path, root: Path) -> str:
    """A URL as it is; a path resolved against `root` (an absolute one stays as it is)."""
    return str(location) if "://" in str(location) else str(root / location)


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


# -- a dataset without time: retrain on labeled arrivals ---------------------------------------

SPLIT_COLUMN = "split"


def arrival_split(
    examples: pd.DataFrame,
    arrivals: pd.DataFrame,
    *,
    key_columns: Sequence[str],
    target_column: str,
    params: Params,
) -> tuple[pd.DataFrame, str]:
    """Every key's split for a retrain on `arrivals`, and the judged arrivals' time span.

    `arrivals` holds the key columns and `logged_at` of the labeled arrivals, oldest
    first (`PredictionLog.labeled_arrivals`); their records and outcomes are the rows of
    `examples` with those keys. Returns a frame of key columns and `split`.
    """
    split = params.featurize.split
    if not isinstance(split, FractionSplit):
        raise ConfigError("a retrain by arrival starts from a featurize.split of fractions")
    test_rows = required(
        params.retrain.test_arrivals, "retrain.test_arrivals",
        "to retrain a dataset without a time column",
    )  # fmt: skip
    keys = list(key_columns)
    arrived = arrivals.merge(examples, on=keys, how="inner", validate="one_to_one")
    if len(arrived) < test_rows:
        raise LooplineError(
            f"{len(arrived)} labeled arrivals found in the data; a retrain judges on the "
            f"newest {test_rows} (retrain.test_arrivals)"
        )
    test, older = arrived.iloc[-test_rows:], arrived.iloc[:-test_rows]
    first_split = split_at_random(examples, target_column, split, params.seed)
    pool = pd.concat([*first_split.values(), older[examples.columns]], ignore_index=True)
    pool = pool.drop_duplicates(keys)
    pool = pool[~pool.set_index(keys).index.isin(test.set_index(keys).index)]
    share = split.train + split.valid
    fractions = {"train": split.train / share, "valid": split.valid / share}
    parts = stratified_parts(pool.reset_index(drop=True), target_column, fractions, params.seed)
    assigned = pd.concat(
        [pool[keys].assign(**{SPLIT_COLUMN: parts}), test[keys].assign(**{SPLIT_COLUMN: "test"})],
        ignore_index=True,
    )
    span = f"{test['logged_at'].iloc[0]}..{test['logged_at'].iloc[-1]}"
    return assigned, span


def retrain_params_file(
    params_path: Path, params: Params, workspace: Path, keys_file: Path, judged: str
) -> Path:
    """A params file for a retrain by arrival: `params_path`'s, split by `keys_file`.

    Stage outputs go to `workspace`; the data, the shared state (`shared_state`) and the
    monitor's and service's stores stay where `params_path` puts them (made absolute).
    """
    root = params_path.resolve().parent
    raw = yaml.safe_load(params_path.read_text())
    inputs = {"data", "data_dvc"}  # every other path is a stage output: to the scratch folder
    for name, location in params.paths.model_dump().items():
        raw["paths"][name] = str(root / location if name in inputs else workspace / name)
    raw["featurize"]["split"] = {"keys_file": str(keys_file), "judged_arrivals": judged}
    for key, value in shared_state(params, root).items():
        section, name = key.split(".")
        raw[section][name] = value
    for section, name in (("serve", "prediction_log"), ("monitor", "state"),
                          ("monitor", "workspace"), ("monitor", "reports")):  # fmt: skip
        raw[section][name] = _rooted(raw[section][name], root)
    out = workspace / "params.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def run_stages(params_file: Path, root: Path, env: dict[str, str], timeout_s: float) -> None:
    """Run dvc.yaml's stage commands in `root` under `params_file`, all within `timeout_s`.

    Raises LooplineError with the failed stage's last output.
    """
    run_env = env | {PARAMS_ENV: str(params_file)}
    deadline = time.monotonic() + timeout_s
    for name, line in stage_commands(root / "dvc.yaml"):
        result = subprocess.run(
            shlex.split(line), cwd=root, env=run_env, capture_output=True, text=True,
            timeout=max(deadline - time.monotonic(), 1), check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-4000:]
            raise LooplineError(f"stage {name} ({line}) failed (exit {result.returncode}):\n{tail}")
