"""Drift tests on profiles, with limits that know the batch's size.

Which columns are tested comes from the data contract: fields marked `drift="share"` (the
traffic mix: schedule, carrier, airports, distance) make up the drift share that can
trigger a retrain; `drift="report"` fields (weather) are tested and shown per field but
not counted, because a week of weather always differs from months of it.

Each field gets the distance Evidently would pick for it (`loopline.monitoring.snapshot`):
the Wasserstein distance divided by the reference's standard deviation for a number field
with more than five distinct values, else the Jensen-Shannon distance (natural log) of the
value shares. Both come from the two profiles (`loopline.monitoring.profile`), never from
rows, and agree with Evidently's on the same rows (tests/unit/test_profile.py,
bench/README.md).

A fixed limit on a distance cries wolf on small batches: 200 rows drawn from the training
data itself put a 100-value category field far above 0.1, by chance alone. So a field
drifts only when its distance is above both

* `effect_limit`: a shift that matters, at any size (Evidently's 0.1), and
* the noise limit: what the distance between two samples of the reference's distribution,
  of the sizes at hand (the reference's and the batch's), exceeds only `false_alarm / c`
  of the time, with c the number of counted fields: simulated from the reference profile
  (`noise_draws` pairs, seeded per field and size). Dividing by c (Bonferroni) holds the
  chance that a batch of the reference itself drifts *any* counted field, and so raises
  the drift share, to at most `false_alarm`, not just each field's.

Before the Jensen-Shannon distance, categories the batch would hold fewer than
`min_expected` times (rare ones, and those the reference never saw) are pooled into one,
as a chi-squared test would, so a few stray values cannot drift a field by themselves.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.special import rel_entr

from loopline.core.params import DriftTests
from loopline.data.contract import DataContract, GroupRule, RowRule
from loopline.monitoring.profile import (
    CategoryCounts,
    NumberSketch,
    Profile,
    ProfiledColumns,
    profile_frame,
)

PROBABILITY = "probability"
LABEL = "label"
FEW_VALUES = 5  # a number field with at most this many distinct values is tested by shares
NOISE_SUPPORT = 256  # a number field's bins are grouped into this many for the simulation
POOLED = "(pooled)"  # the category that rare ones are pooled into


@dataclass(frozen=True)
class MonitoredColumns:
    """Columns of a batch by their part in monitoring."""

    share: tuple[str, ...]
    report: tuple[str, ...]
    numeric: frozenset[str]
    target: str
    rarely_missing: tuple[str, ...] = ()  # tested fields whose missing share is plotted
    outage: tuple[str, ...] = ()  # record fields rarely missing: nulls counted per day
    allowed: tuple[str, ...] = ()  # record fields with an allowed set: counted (categories gone)
    row_rules: tuple[RowRule, ...] = ()  # the contract's row rules on record fields alone
    key_rules: tuple[GroupRule, ...] = ()  # ... and its "a key determines" rules on them

    @classmethod
    def from_contract(cls, contract: DataContract, target: str) -> MonitoredColumns:
        """Read the drift use of every record field from the contract."""
        share, report = contract.drift_fields("share"), contract.drift_fields("report")
        numeric = frozenset(f.name for f in (*share, *report) if f.numeric)
        tested = {f.name for f in (*share, *report)}
        outage = tuple(f.name for f in contract.rarely_missing_fields())
        record = {f.name for f in contract.record_fields()}
        return cls(
            tuple(f.name for f in share), tuple(f.name for f in report), numeric, target,
            rarely_missing=tuple(f for f in outage if f in tested), outage=outage,
            allowed=tuple(f.name for f in contract.record_fields() if f.allowed),
            row_rules=tuple(r for r in contract.row_rules if set(r.columns()) <= record),
            key_rules=tuple(r for r in contract.group_rules
                            if r.metric == "distinct" and set(r.columns()) <= record),
        )  # fmt: skip

    @property
    def tested(self) -> tuple[str, ...]:
        """Every column with a drift test."""
        return (*self.share, *self.report)

    def profiled(self, day: str, keys: tuple[str, ...] = ()) -> ProfiledColumns:
        """What a profile of a batch reads: the tested and checked fields, nulls per `day`.

        And the contract's rules on records (a breaking record named by its `keys`).
        """
        categories = [c for c in self.tested if c not in self.numeric]
        return ProfiledColumns(
            numbers=tuple(c for c in self.tested if c in self.numeric),
            categories=(*categories, *(c for c in self.allowed if c not in categories)),
            target=self.target, day=day, rarely_missing=self.outage,
            row_rules=self.row_rules, key_rules=self.key_rules, keys=keys,
        )  # fmt: skip

    def reference_profile(self, reference: pd.DataFrame) -> Profile:
        """The profile of a drift reference (training rows: no day, no model answered them)."""
        return profile_frame(reference, replace(self.profiled(""), day=None, version=None))


@dataclass(frozen=True)
class FieldDrift:
    """One field's drift test: the distance, the limit at this batch size, and why."""

    field: str
    test: str  # "wasserstein" or "jensenshannon"
    distance: float
    noise_limit: float  # what chance alone reaches, `false_alarm` of the time, at this size
    effect_limit: float

    @property
    def limit(self) -> float:
        """The distance above which the field drifts."""
        return max(self.effect_limit, self.noise_limit)

    @property
    def drifted(self) -> bool:
        """Above both limits."""
        return self.distance > self.limit


@dataclass(frozen=True)
class DriftResult:
    """What the drift tests found."""

    share: float  # drifted share of the `share` columns
    drifted: list[str]  # drifted `share` columns
    reported_drifted: list[str]  # drifted `report` columns
    fields: dict[str, FieldDrift]  # every tested field

    @property
    def scores(self) -> dict[str, float]:
        """Distance per field (higher = more different)."""
        return {name: test.distance for name, test in self.fields.items()}

    @property
    def limits(self) -> dict[str, float]:
        """The limit each field's distance was held to."""
        return {name: test.limit for name, test in self.fields.items()}


def drift_tests(
    reference: Profile, current: Profile, columns: MonitoredColumns, tests: DriftTests, seed: int
) -> DriftResult:
    """Every tested field's drift test, the batch against the reference.

    A field with no value in either profile is not tested (it counts as not drifted: a
    dead feed is the traffic checks' to report).
    """
    level = tests.false_alarm / max(1, len(columns.share))
    fields = {}
    for name in columns.tested:
        before, now = reference.fields[name], current.fields[name]
        if before.count and now.count:
            fields[name] = field_drift(name, before, now, tests, seed=seed, level=level)
    drifted = {name for name, test in fields.items() if test.drifted}
    share_drifted = [c for c in columns.share if c in drifted]
    return DriftResult(
        share=len(share_drifted) / max(1, len(columns.share)),
        drifted=share_drifted,
        reported_drifted=[c for c in columns.report if c in drifted],
        fields=fields,
    )


def field_drift(
    name: str,
    reference: NumberSketch | CategoryCounts,
    current: NumberSketch | CategoryCounts,
    tests: DriftTests,
    *,
    seed: int,
    level: float,
) -> FieldDrift:
    """One field's distance and the limit chance exceeds `level` of the time at these sizes."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), current.count, reference.count])
    if isinstance(reference, NumberSketch) and isinstance(current, NumberSketch):
        if len(np.union1d(reference.keys, current.keys)) > FEW_VALUES:
            distance = wasserstein_norm(reference, current)
            noise = _wasserstein_noise(reference, current.count, tests.noise_draws, level, rng)
            return FieldDrift(name, "wasserstein", distance, noise, tests.effect_limit)
        reference, current = _as_counts(reference), _as_counts(current)
    pooled = pool_rare(reference.counts, current.counts, current.count, tests.min_expected)  # type: ignore[union-attr]
    distance = jensen_shannon(*pooled)
    sizes = (reference.count, current.count)
    noise = _shares_noise(pooled[0], sizes, tests.noise_draws, level, rng)
    return FieldDrift(name, "jensenshannon", distance, noise, tests.effect_limit)


def wasserstein_norm(reference: NumberSketch, current: NumberSketch) -> float:
    """Wasserstein-1 distance between the two sketches over the reference's std.

    Each sketch is its bins' means weighted by their counts (exact where a bin holds one
    distinct value); the norm is at least 0.001, as in Evidently.
    """
    values = np.concatenate([reference.support, current.support])
    order = np.argsort(values, kind="stable")
    weights = np.concatenate([reference.counts / reference.count, -current.counts / current.count])
    gaps = np.diff(values[order])
    distance = float(np.sum(np.abs(np.cumsum(weights[order])[:-1]) * gaps))
    return distance / max(reference.std, 0.001)


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two count vectors over the same values."""
    return float(_js_rows(reference[None, :], current[None, :])[0])


def _js_rows(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance of each row pair of two count matrices."""
    p = reference / reference.sum(axis=1, keepdims=True)
    q = current / current.sum(axis=1, keepdims=True)
    middle = (p + q) / 2
    divergence = (rel_entr(p, middle).sum(axis=1) + rel_entr(q, middle).sum(axis=1)) / 2
    return np.sqrt(np.maximum(divergence, 0.0))


def pool_rare(
    reference: dict[str, int], current: dict[str, int], rows: int, min_expected: float
) -> tuple[np.ndarray, np.ndarray]:
    """Both count vectors over the same categories, those expected rarely pooled into one.

    A category is kept when a batch of `rows` drawn from the reference would hold it at
    least `min_expected` times; every other one, and any the reference never saw, goes
    into `POOLED`.
    """
    total = sum(reference.values())
    kept = sorted(v for v, n in reference.items() if rows * n / total >= min_expected)
    index = {value: i for i, value in enumerate(kept)}
    before, now = np.zeros(len(kept) + 1), np.zeros(len(kept) + 1)
    for counts, into in ((reference, before), (current, now)):
        for value, n in counts.items():
            into[index.get(value, len(kept))] += n
    if not before[-1] and not now[-1]:  # nothing pooled
        before, now = before[:-1], now[:-1]
    return before, now


def _as_counts(sketch: NumberSketch) -> CategoryCounts:
    """A number field with few distinct values as counts per value (bin mean as text)."""
    values = [f"{v:.6g}" for v in sketch.support]
    return CategoryCounts(sketch.nulls, dict(zip(values, sketch.counts.tolist(), strict=True)))


def _shares_noise(
    reference: np.ndarray, sizes: tuple[int, int], draws: int, level: float,
    rng: np.random.Generator,
) -> float:  # fmt: skip
    """The `1 - level` quantile of the distance between two samples of `reference`.

    `sizes`: the reference's rows and the batch's.
    """
    shares = reference / reference.sum()
    before = rng.multinomial(sizes[0], shares, size=draws)
    now = rng.multinomial(sizes[1], shares, size=draws)
    return float(np.quantile(_js_rows(before, now), 1 - level))


def _wasserstein_noise(
    reference: NumberSketch, rows: int, draws: int, level: float, rng: np.random.Generator
) -> float:
    """The same quantile for the normed Wasserstein distance.

    Between two samples of sizes m and n, the difference of their distribution functions
    is, to first order, sqrt(1/m + 1/n) times a Brownian bridge run over the reference's
    distribution function; the distance is the integral of its absolute value. Simulated
    on the reference's bins (grouped for speed); tests/unit/test_profile.py and
    bench/drift.py check the false alarms it leads to, down to batches of 100 rows.
    """
    support, counts = _grouped(reference)
    shares = counts / counts.sum()
    walk = np.cumsum(rng.standard_normal((draws, len(shares))) * np.sqrt(shares), axis=1)
    bridge = walk - np.cumsum(shares) * walk[:, -1:]
    distances = np.abs(bridge[:, :-1]) @ np.diff(support)
    scale = math.sqrt(1 / reference.count + 1 / rows) / max(reference.std, 0.001)
    return float(np.quantile(distances, 1 - level) * scale)


def _grouped(sketch: NumberSketch) -> tuple[np.ndarray, np.ndarray]:
    """The sketch's bins merged into at most `NOISE_SUPPORT` groups of about equal mass."""
    if len(sketch.counts) <= NOISE_SUPPORT:
        return sketch.support, sketch.counts
    cumulative = np.cumsum(sketch.counts)
    group = np.minimum(
        (cumulative - 1) * NOISE_SUPPORT // cumulative[-1], NOISE_SUPPORT - 1
    ).astype(np.int64)
    counts = np.bincount(group, weights=sketch.counts)
    sums = np.bincount(group, weights=sketch.sums)
    present = counts > 0
    return sums[present] / counts[present], counts[present]
