"""Splitting examples into train, valid and test, and moving those splits for a retrain.

By date windows, by seeded fractions, or by a file of keys.

Pure functions of frames and settings. Which one a dataset uses is its time axis's
choice (`loopline.data.time_axis`): date windows need a time column.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core import tags
from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import (
    DateWindow,
    FractionSplit,
    KeyedSplit,
    RetrainParams,
    SplitParams,
    required,
)

log = logging.getLogger(__name__)
SPLIT_COLUMN = "split"  # a keys file's column naming each key's split


def split_by_time(
    examples: pd.DataFrame, time_column: str, windows: Mapping[str, DateWindow]
) -> dict[str, pd.DataFrame]:
    """Assign each example to the window containing its date; rows outside all are dropped.

    Windows are whole days, inclusive at both ends. An empty window is a configuration
    error, reported with the date range the data actually covers.
    """
    days = examples[time_column].dt.normalize()
    splits = {}
    for name, window in windows.items():
        inside = days.between(pd.Timestamp(window.start), pd.Timestamp(window.end))
        splits[name] = examples[inside].reset_index(drop=True)
        if splits[name].empty:
            raise ConfigError(
                f"split {name!r} ({window}) has no rows; the data covers "
                f"{days.min():%Y-%m-%d}..{days.max():%Y-%m-%d}: adjust featurize.split"
            )
    kept = sum(len(s) for s in splits.values())
    log.info("time split kept %d of %d examples", kept, len(examples))
    return splits


def stratified_parts(
    examples: pd.DataFrame, target_column: str, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Each row's part name (None: in no part), seeded and stratified by the target.

    Within each class the rows are shuffled once with `seed` and cut at the cumulative
    fractions, so the same seed and data always give the same parts.
    """
    labels = examples[target_column].to_numpy()
    generator = np.random.default_rng(seed)
    assigned = np.full(len(examples), None, dtype=object)
    for label in np.unique(labels):
        rows = generator.permutation(np.flatnonzero(labels == label))
        edges = np.round(np.cumsum(list(fractions.values())) * len(rows)).astype(int)
        for name, part in zip(fractions, np.split(rows, edges)[:-1], strict=True):
            assigned[part] = name
    return assigned


def split_at_random(
    examples: pd.DataFrame, target_column: str, split: FractionSplit, seed: int
) -> dict[str, pd.DataFrame]:
    """A seeded split stratified by the target: each split keeps the positive rate.

    Every row lands in at most one split (none: the rest, when the fractions add up to
    less than 1), and each split keeps the rows' original order.
    """
    fractions = split.fractions()
    assigned = stratified_parts(examples, target_column, fractions, seed)
    splits = {name: examples[assigned == name].reset_index(drop=True) for name in fractions}
    for name, frame in splits.items():
        if frame[target_column].nunique() < 2:
            raise ConfigError(
                f"split {name!r} ({fractions[name]:g} of {len(examples)} examples) does not "
                "hold both classes: raise its fraction in featurize.split"
            )
    return splits


def left_out(
    examples: pd.DataFrame, target_column: str, split: FractionSplit, seed: int
) -> pd.DataFrame:
    """The examples a split by fractions keeps out of all three: future traffic."""
    assigned = stratified_parts(examples, target_column, split.fractions(), seed)
    return examples[pd.isna(assigned)].reset_index(drop=True)


def split_by_key(
    examples: pd.DataFrame, key_columns: Sequence[str], keys_file: Path
) -> dict[str, pd.DataFrame]:
    """Train, valid and test examples as a file of keys assigns them (others left out)."""
    if not keys_file.is_file():
        raise ConfigError(f"featurize.split.keys_file: {keys_file} not found")
    keys = pd.read_parquet(keys_file)
    missing = [c for c in (*key_columns, SPLIT_COLUMN) if c not in keys]
    if missing:
        raise ConfigError(f"featurize.split.keys_file: {keys_file} lacks the columns {missing}")
    if keys.duplicated(list(key_columns)).any():
        raise ConfigError(f"featurize.split.keys_file: {keys_file} names a key twice")
    placed = examples.merge(keys[[*key_columns, SPLIT_COLUMN]], on=list(key_columns), how="left")
    splits = {}
    for name in ("train", "valid", "test"):
        chosen = placed[placed[SPLIT_COLUMN] == name]
        splits[name] = chosen.drop(columns=SPLIT_COLUMN).reset_index(drop=True)
        if splits[name].empty:
            raise ConfigError(f"featurize.split.keys_file: {keys_file} puts no example in {name!r}")
    return splits


def window_tags(split: SplitParams | FractionSplit | KeyedSplit) -> dict[str, str]:
    """The split a model was fitted on, as version tags: date windows, fractions, or keys."""
    if isinstance(split, FractionSplit):
        return {  # read as a share, not a date window: /metadata shows the train one
            tags.window(name): f"{f * 100:g}% of the examples, at random (seeded, stratified)"
            for name, f in split.fractions().items()
        }
    if isinstance(split, KeyedSplit):
        return {tags.window("train"): "by key", tags.window("valid"): "by key",
                tags.window("test"): f"{tags.ARRIVALS}{split.judged_arrivals}"}  # fmt: skip
    return {tags.window(name): str(w) for name, w in split.windows().items()}


# -- moving a split for a retrain -------------------------------------------------------------


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


def arrival_split(
    examples: pd.DataFrame,
    arrivals: pd.DataFrame,
    *,
    key_columns: Sequence[str],
    target_column: str,
    split: FractionSplit,
    test_rows: int,
    seed: int,
) -> tuple[pd.DataFrame, str]:
    """Every key's split for a retrain on `arrivals`, and the judged arrivals' time span.

    `arrivals` holds the key columns and `logged_at` of the labeled arrivals, oldest
    first (`PredictionLog.labeled_arrivals`); their records and outcomes are the rows of
    `examples` with those keys. The newest `test_rows` are the test split; the first
    split's rows and the older arrivals are split into train and valid by `split`'s
    fractions. Returns a frame of key columns and `split`.
    """
    keys = list(key_columns)
    arrived = arrivals.merge(examples, on=keys, how="inner", validate="one_to_one")
    if len(arrived) < test_rows:
        raise LooplineError(
            f"{len(arrived)} labeled arrivals found in the data; a retrain judges on the "
            f"newest {test_rows} (retrain.test_arrivals)"
        )
    test, older = arrived.iloc[-test_rows:], arrived.iloc[:-test_rows]
    first_split = split_at_random(examples, target_column, split, seed)
    pool = pd.concat([*first_split.values(), older[examples.columns]], ignore_index=True)
    pool = pool.drop_duplicates(keys)
    pool = pool[~pool.set_index(keys).index.isin(test.set_index(keys).index)]
    share = split.train + split.valid
    fractions = {"train": split.train / share, "valid": split.valid / share}
    parts = stratified_parts(pool.reset_index(drop=True), target_column, fractions, seed)
    assigned = pd.concat(
        [pool[keys].assign(**{SPLIT_COLUMN: parts}), test[keys].assign(**{SPLIT_COLUMN: "test"})],
        ignore_index=True,
    )
    span = f"{test['logged_at'].iloc[0]}..{test['logged_at'].iloc[-1]}"
    return assigned, span
