"""Mergeable profiles of monitored traffic: a batch as counts and sums, not rows.

A `Profile` holds, per monitored field, what the drift tests, the quality metrics and the
data-quality checks need, and nothing that grows with the rows:

* a number field (`NumberSketch`): its nulls and sum of squares, and its values in narrow
  bins whose edges grow geometrically (each `GROWTH - 1` = 0.05% wide relative to its
  values, as in DDSketch), with each bin's count and sum. The bins depend on no data, so two
  profiles merge by adding bin by bin. A bin's mean stands for its values: a Wasserstein
  distance from two profiles is within a bin's width of the exact one, and exact where a
  bin holds one distinct value (integer fields);
* a category field (`CategoryCounts`): its nulls and the count of every value;
* the served probability (its sum, and its counts in `PROBABILITY_BINS` equal bins) and
  rows per model version;
* for labeled rows (`LabeledStats`): the served labels against the truth, the Brier and
  log-loss sums, and the probability in `PROBABILITY_BINS` equal bins per class (ROC-AUC
  and PR-AUC to about 1e-3, `quality`);
* per day: rows and the nulls of the rarely-missing fields (the feed-outage check).

Profiles of parts (chunks of the log, days, a Dask worker's partitions) add up to the
profile of the whole, the same whichever way it was cut: "this week", "this month" and
"since the champion was promoted" are merges of stored batch profiles, never re-reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from loopline.data.contract import GroupRule, RowRule
from loopline.data.rules import row_verdicts

GROWTH = 1.0005  # a number bin's upper edge over its lower one
SMALLEST = 1e-9  # magnitudes below this share the zero bin
_LOG_GROWTH = math.log(GROWTH)
_BIAS = math.ceil(-math.log(SMALLEST) / _LOG_GROWTH) + 1  # the smallest magnitude's bin is 1
DENSE_SPAN = 1 << 22  # key ranges up to this are counted densely
PROBABILITY_BINS = 2048  # equal-width bins of [0, 1] per class, for the ranking metrics
_EPSILON = 1e-15  # log loss clips probabilities to [eps, 1 - eps], as scikit-learn does


def bin_keys(values: np.ndarray) -> np.ndarray:
    """The bin of each finite value: 0 near zero, +k above, -k below, in the values' order."""
    magnitude = np.abs(values)
    keys = np.zeros(len(values), dtype=np.int64)
    big = magnitude >= SMALLEST
    keys[big] = np.ceil(np.log(magnitude[big]) / _LOG_GROWTH).astype(np.int64) + _BIAS
    return np.where(values < 0, -keys, keys)


def _sum_by_key(
    keys: np.ndarray, counts: np.ndarray, sums: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts and sums added up per distinct key, keys sorted.

    Keys of one field span a bounded range (a few thousand bins per factor of ten), so
    counting them into a dense array is one pass, where sorting them would be n log n.
    """
    if not len(keys):
        return keys.astype(np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    low = int(keys.min())
    span = int(keys.max()) - low + 1
    distinct = None
    if span <= DENSE_SPAN:
        index = keys - low
    else:  # values over many orders of magnitude and of both signs
        distinct, index = np.unique(keys, return_inverse=True)
        span = len(distinct)
    counted = np.bincount(index, weights=counts, minlength=span)
    present = np.flatnonzero(counted)
    added = np.bincount(index, weights=sums, minlength=span)[present]
    found = present + low if distinct is None else distinct[present]
    return found.astype(np.int64), counted[present].astype(np.int64), added


@dataclass(frozen=True)
class NumberSketch:
    """One number field's values: nulls, sum of squares, and count and sum per bin."""

    nulls: int
    keys: np.ndarray  # sorted bin keys (`bin_keys`), int64
    counts: np.ndarray  # values per bin, int64
    sums: np.ndarray  # their sum per bin, float64
    squares: float  # sum of squared values

    @classmethod
    def of(cls, values: np.ndarray) -> NumberSketch:
        """The sketch of an array of floats (NaN and infinities count as nulls)."""
        finite = values[np.isfinite(values)]
        keys, counts, sums = _sum_by_key(bin_keys(finite), np.ones(len(finite)), finite)
        return cls(len(values) - len(finite), keys, counts, sums, float(np.dot(finite, finite)))

    @property
    def count(self) -> int:
        """Values that are not null."""
        return int(self.counts.sum())

    @property
    def mean(self) -> float:
        """The mean of the values (NaN for none)."""
        return float(self.sums.sum() / self.count) if self.count else math.nan

    @property
    def std(self) -> float:
        """The population standard deviation of the values (NaN for none)."""
        if not self.count:
            return math.nan
        return math.sqrt(max(self.squares / self.count - self.mean**2, 0.0))

    @property
    def support(self) -> np.ndarray:
        """Each bin's mean: the value that stands for the bin (ascending)."""
        return self.sums / np.maximum(self.counts, 1)

    def merge(self, other: NumberSketch) -> NumberSketch:
        """The sketch of both sketches' values."""
        keys, counts, sums = _sum_by_key(
            np.concatenate([self.keys, other.keys]),
            np.concatenate([self.counts, other.counts]),
            np.concatenate([self.sums, other.sums]),
        )
        return NumberSketch(
            self.nulls + other.nulls, keys, counts, sums, self.squares + other.squares
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"kind": "number", "nulls": self.nulls, "keys": self.keys.tolist(),
                "counts": self.counts.tolist(), "sums": self.sums.tolist(),
                "squares": self.squares}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumberSketch:
        """Inverse of `as_dict`."""
        return cls(
            int(data["nulls"]), np.asarray(data["keys"], dtype=np.int64),
            np.asarray(data["counts"], dtype=np.int64), np.asarray(data["sums"], dtype=float),
            float(data["squares"]),
        )  # fmt: skip


@dataclass(frozen=True)
class CategoryCounts:
    """One category field's values: nulls and the count of every value."""

    nulls: int
    counts: dict[str, int]

    @classmethod
    def of(cls, values: pd.Series) -> CategoryCounts:
        """The counts of a column (values read as text)."""
        counted = values.value_counts(dropna=True)
        found = {str(value): int(n) for value, n in counted.items()}
        return cls(int(len(values) - counted.sum()), dict(sorted(found.items())))

    @property
    def count(self) -> int:
        """Values that are not null."""
        return sum(self.counts.values())

    def merge(self, other: CategoryCounts) -> CategoryCounts:
        """The counts of both."""
        return CategoryCounts(self.nulls + other.nulls, _add(self.counts, other.counts))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"kind": "category", "nulls": self.nulls, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryCounts:
        """Inverse of `as_dict`."""
        return cls(int(data["nulls"]), {str(k): int(v) for k, v in data["counts"].items()})


Sketch = NumberSketch | CategoryCounts


def sketch_from_dict(data: Mapping[str, Any]) -> Sketch:
    """A field's sketch from its JSON form."""
    return (
        NumberSketch.from_dict(data) if data["kind"] == "number" else CategoryCounts.from_dict(data)
    )


@dataclass(frozen=True)
class LabeledStats:
    """What the quality metrics of labeled rows need: counts and sums, no rows."""

    positives: np.ndarray  # rows whose truth is 1, per probability bin
    negatives: np.ndarray  # rows whose truth is 0, per probability bin
    served: dict[str, int]  # tp, fp, fn, tn of the labels the service answered with
    brier: float  # sum of squared errors of the probability
    log_loss: float  # sum of log losses

    @classmethod
    def of(cls, truth: np.ndarray, probability: np.ndarray, served: np.ndarray) -> LabeledStats:
        """The statistics of labeled rows (truth and served label 0/1, probability in [0, 1])."""
        bins = _probability_bins(probability)
        positive = truth == 1
        clipped = np.clip(probability, _EPSILON, 1 - _EPSILON)
        losses = -np.where(positive, np.log(clipped), np.log1p(-clipped))
        said = served == 1
        return cls(
            np.bincount(bins[positive], minlength=PROBABILITY_BINS),
            np.bincount(bins[~positive], minlength=PROBABILITY_BINS),
            {"tp": int((said & positive).sum()), "fp": int((said & ~positive).sum()),
             "fn": int((~said & positive).sum()), "tn": int((~said & ~positive).sum())},
            float(np.sum((probability - truth) ** 2)), float(losses.sum()),
        )  # fmt: skip

    @classmethod
    def empty(cls) -> LabeledStats:
        """No labeled row."""
        none = np.zeros(PROBABILITY_BINS, dtype=np.int64)
        return cls(none, none, {"tp": 0, "fp": 0, "fn": 0, "tn": 0}, 0.0, 0.0)

    @property
    def rows(self) -> int:
        """Labeled rows."""
        return int(self.positives.sum() + self.negatives.sum())

    def merge(self, other: LabeledStats) -> LabeledStats:
        """The statistics of both."""
        return LabeledStats(
            self.positives + other.positives, self.negatives + other.negatives,
            {k: self.served[k] + other.served[k] for k in self.served},
            self.brier + other.brier, self.log_loss + other.log_loss,
        )  # fmt: skip

    def quality(self) -> dict[str, float]:
        """ROC-AUC, PR-AUC, precision, recall, F1, Brier and log loss (empty: one class).

        Ranking metrics treat rows in one probability bin as tied: ROC-AUC counts half a
        pair for them (as the exact one does for equal scores), PR-AUC is the average
        precision with the bins as thresholds.
        """
        positives, negatives = int(self.positives.sum()), int(self.negatives.sum())
        if not positives or not negatives:
            return {}
        # from the highest bin down; a positive outranks the negatives in lower bins
        pos, neg = self.positives[::-1].astype(float), self.negatives[::-1].astype(float)
        neg_below = negatives - np.cumsum(neg)
        roc_auc = float(np.sum(pos * (neg_below + neg / 2)) / (positives * negatives))
        true_pos, all_pos = np.cumsum(pos), np.cumsum(pos + neg)
        precision_at = np.divide(true_pos, all_pos, out=np.zeros_like(true_pos), where=all_pos > 0)
        pr_auc = float(np.sum(precision_at * pos) / positives)
        tp, fp, fn = self.served["tp"], self.served["fp"], self.served["fn"]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        rows = positives + negatives
        return {"roc_auc": roc_auc, "pr_auc": pr_auc, "precision": precision, "recall": recall,
                "f1": f1, "brier": self.brier / rows, "log_loss": self.log_loss / rows}  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the bins as index -> count, only those not empty)."""
        return {"positives": _sparse(self.positives), "negatives": _sparse(self.negatives),
                "served": self.served, "brier": self.brier, "log_loss": self.log_loss}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabeledStats:
        """Inverse of `as_dict`."""
        return cls(
            _dense(data["positives"]), _dense(data["negatives"]),
            {k: int(v) for k, v in data["served"].items()}, float(data["brier"]),
            float(data["log_loss"]),
        )  # fmt: skip


def _add(left: Mapping[str, int], right: Mapping[str, int]) -> dict[str, int]:
    """Counts added key by key (zeros kept), keys sorted."""
    return {key: left.get(key, 0) + right.get(key, 0) for key in sorted({*left, *right})}


def _probability_bins(probability: np.ndarray) -> np.ndarray:
    """Each probability's bin of [0, 1]."""
    return np.clip((probability * PROBABILITY_BINS).astype(np.int64), 0, PROBABILITY_BINS - 1)


def _sparse(counts: np.ndarray) -> dict[str, int]:
    return {str(i): int(counts[i]) for i in np.flatnonzero(counts)}


def _dense(counts: Mapping[str, int]) -> np.ndarray:
    dense = np.zeros(PROBABILITY_BINS, dtype=np.int64)
    for index, n in counts.items():
        dense[int(index)] = n
    return dense


@dataclass(frozen=True)
class RuleCounts:
    """A contract rule on live records: how many it judged, broke, and a few that broke it."""

    judged: int
    broken: int
    examples: tuple[str, ...] = ()  # the keys of the first few breaking records

    def merge(self, other: RuleCounts) -> RuleCounts:
        """Both parts' counts (the first part's examples first)."""
        shown = (*self.examples, *other.examples)[:EXAMPLES]
        return RuleCounts(self.judged + other.judged, self.broken + other.broken, shown)


EXAMPLES = 3  # breaking records named per rule
NO_RECORD = RuleCounts(0, 0)


@dataclass(frozen=True)
class ProfiledColumns:
    """Which columns of a batch a profile reads, and how."""

    numbers: tuple[str, ...]  # number fields
    categories: tuple[str, ...]  # category fields
    target: str
    day: str | None  # the column whose ISO date is a row's day (None: no counts per day)
    rarely_missing: tuple[str, ...] = ()  # fields whose nulls are counted per day
    probability: str = "probability"
    label: str = "label"
    version: str | None = "model_version"  # None: rows that no model answered (a reference)
    row_rules: tuple[RowRule, ...] = ()  # the contract's rules a record can show ...
    key_rules: tuple[GroupRule, ...] = ()  # ... and its keys that determine an attribute
    keys: tuple[str, ...] = ()  # how a breaking record is named

    def columns(self) -> list[str]:
        """Every column a profile reads (the target aside), each once."""
        ruled = [c for rule in (*self.row_rules, *self.key_rules) for c in rule.columns()]
        wanted = [*self.numbers, *self.categories, *self.rarely_missing, self.probability,
                  self.label, self.version, self.day, *ruled, *self.keys]  # fmt: skip
        return list(dict.fromkeys(c for c in wanted if c))


@dataclass(frozen=True)
class Profile:
    """A batch of predictions (or any merge of batches) as mergeable statistics."""

    rows: int
    fields: dict[str, Sketch]
    probability_sum: float  # of the served probability
    scores: np.ndarray  # rows per probability bin (`PROBABILITY_BINS` of [0, 1])
    versions: dict[str, int]  # rows per model version that answered
    labeled: LabeledStats
    days: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> rows and nulls
    rules: dict[str, RuleCounts] = field(default_factory=dict)  # row rule name -> counts
    # key rule name -> each key seen -> the attribute values it carried (sorted, as text)
    key_values: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def merge(self, other: Profile) -> Profile:
        """The profile of both batches' rows."""
        fields = dict(self.fields)
        for name, sketch in other.fields.items():
            fields[name] = fields[name].merge(sketch) if name in fields else sketch  # type: ignore[arg-type]
        days = {day: _add(self.days.get(day, {}), other.days.get(day, {}))
                for day in sorted({*self.days, *other.days})}  # fmt: skip
        return Profile(
            self.rows + other.rows, fields, self.probability_sum + other.probability_sum,
            self.scores + other.scores, _add(self.versions, other.versions),
            self.labeled.merge(other.labeled), days,
            {name: self.rules.get(name, NO_RECORD).merge(other.rules.get(name, NO_RECORD))
             for name in {**self.rules, **other.rules}},
            {name: _union(self.key_values.get(name, {}), other.key_values.get(name, {}))
             for name in {**self.key_values, **other.key_values}},
        )  # fmt: skip

    @property
    def mean_probability(self) -> float:
        """The mean served probability (NaN for no rows)."""
        return self.probability_sum / self.rows if self.rows else math.nan

    @property
    def labeled_rows(self) -> int:
        """Rows whose label had arrived when profiled."""
        return self.labeled.rows

    def main_version(self) -> str:
        """The model version that answered most rows (the earliest of a tie, by name)."""
        return max(sorted(self.versions), key=lambda v: self.versions[v])

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what the monitor's state stores per batch)."""
        return {
            "rows": self.rows, "fields": {n: s.as_dict() for n, s in self.fields.items()},
            "probability_sum": self.probability_sum, "scores": _sparse(self.scores),
            "versions": self.versions,
            "labeled": self.labeled.as_dict(), "days": self.days,
            "rules": {n: [r.judged, r.broken, list(r.examples)] for n, r in self.rules.items()},
            "key_values": {n: {k: list(v) for k, v in keys.items()}
                           for n, keys in self.key_values.items()},
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Inverse of `as_dict`."""
        return cls(
            int(data["rows"]), {n: sketch_from_dict(s) for n, s in data["fields"].items()},
            float(data["probability_sum"]), _dense(data["scores"]),
            {str(k): int(v) for k, v in data["versions"].items()},
            LabeledStats.from_dict(data["labeled"]),
            {d: {k: int(v) for k, v in c.items()} for d, c in data.get("days", {}).items()},
            {name: RuleCounts(int(judged), int(broken), tuple(shown))
             for name, (judged, broken, shown) in data.get("rules", {}).items()},
            {n: {k: tuple(v) for k, v in keys.items()}
             for n, keys in data.get("key_values", {}).items()},
        )  # fmt: skip


def profile_frame(frame: pd.DataFrame, columns: ProfiledColumns) -> Profile:
    """The profile of a frame of logged predictions (one chunk, or a whole batch).

    Rows whose target is known count in `labeled`; the others only in the fields.
    """
    fields: dict[str, Sketch] = {}
    for name in columns.numbers:
        fields[name] = NumberSketch.of(pd.to_numeric(frame[name], errors="coerce").to_numpy(float))
    for name in columns.categories:
        fields[name] = CategoryCounts.of(frame[name])
    probability = frame[columns.probability].to_numpy(float)
    truth = pd.to_numeric(frame[columns.target], errors="coerce").to_numpy(float)
    known = ~np.isnan(truth)
    labeled = LabeledStats.of(
        truth[known].astype(np.int64), probability[known],
        frame[columns.label].to_numpy()[known].astype(np.int64),
    )  # fmt: skip
    versions = {}
    if columns.version is not None:
        counted = frame[columns.version].astype(str).value_counts()
        versions = {str(v): int(n) for v, n in sorted(counted.items())}
    return Profile(
        len(frame), fields, float(probability.sum()),
        np.bincount(_probability_bins(probability), minlength=PROBABILITY_BINS), versions, labeled,
        _day_counts(frame, columns.day, columns.rarely_missing) if columns.day else {},
        {rule.name: _rule_counts(rule, frame, columns.keys) for rule in columns.row_rules},
        {rule.name: _key_values(rule, frame) for rule in columns.key_rules},
    )  # fmt: skip


def _rule_counts(rule: RowRule, frame: pd.DataFrame, keys: tuple[str, ...]) -> RuleCounts:
    verdicts = row_verdicts(rule, frame)
    broken = verdicts.eq(False)
    shown = frame.loc[broken, list(dict.fromkeys([*keys, *rule.columns()]))].head(EXAMPLES)
    examples = tuple(" ".join(f"{c}={as_text(v)}" for c, v in row.items())
                     for _, row in shown.iterrows())  # fmt: skip
    return RuleCounts(int(verdicts.notna().sum()), int(broken.sum()), examples)


def _key_values(rule: GroupRule, frame: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Each key seen and the values it carried (a few hundred pairs, whatever the rows)."""
    pairs = frame[[*rule.by, rule.column]].dropna().drop_duplicates()
    found: dict[str, set[str]] = {}
    for *key, value in pairs.itertuples(index=False, name=None):
        found.setdefault(" ".join(map(as_text, key)), set()).add(as_text(value))
    return {key: _ordered(values) for key, values in sorted(found.items())}


def _ordered(values: set[str]) -> tuple[str, ...]:
    """Values as text in their order: numbers by value, anything else alphabetically."""
    try:
        return tuple(sorted(values, key=float))
    except ValueError:
        return tuple(sorted(values))


def _union(
    left: Mapping[str, tuple[str, ...]], right: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    return {key: _ordered({*left.get(key, ()), *right.get(key, ())})
            for key in sorted({*left, *right})}  # fmt: skip


def as_text(value: object) -> str:
    """A value as records show it (a whole number read back as a float: no `.0`)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _day_counts(
    frame: pd.DataFrame, day: str, rarely_missing: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    days = frame[day].astype(str).str.slice(0, 10)  # an ISO date, or the date of an ISO time
    counts = frame[list(rarely_missing)].isna().groupby(days).sum()
    counts.insert(0, "rows", days.value_counts())
    return {str(day): {k: int(v) for k, v in row.items()} for day, row in counts.iterrows()}


def merge_all(profiles: Iterable[Profile]) -> Profile:
    """The merge of one or more profiles, in the order given."""
    return reduce(Profile.merge, profiles)
