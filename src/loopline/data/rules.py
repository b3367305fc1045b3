"""The contract's row and group rules, evaluated on pandas tables.

A row rule (`DateParts`, `ClockDelay`, `NullTogether`, `ValueTogether`, `FieldOrder`) becomes one
verdict per row: True (holds), False (broken) or None (not judged, e.g. a null the rule
does not cover). A group
rule becomes one value per group (rows, a null fraction or a link's coverage), indexed by
a readable group label such as `JFK 2013-03-05`; every period between the table's first
and last is a group, so a missing day is a group with 0 rows rather than no group.

Validation hands these to Great Expectations (one column per rule) and uses the failing
rows and groups here as the examples in its messages.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd

from loopline.data.contract import (
    PERIOD_CODES,
    ClockDelay,
    DataContract,
    DateParts,
    FieldOrder,
    GroupRule,
    Link,
    NullTogether,
    RowRule,
    ValueTogether,
)

MINUTES_PER_DAY = 1440


def local_time(utc: pd.Series, timezone: str) -> pd.Series:
    """Naive UTC timestamps as naive local time in `timezone`."""
    if timezone == "UTC":
        return utc
    return utc.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)


def _verdicts(ok: pd.Series, judged: pd.Series) -> pd.Series:
    """True/False where judged, None elsewhere (object dtype, as GX's set check wants)."""
    return ok.astype(object).where(judged, None)


def clock_minutes(hhmm: pd.Series) -> pd.Series:
    """Minutes after midnight of HHMM clock values, a Series or an array (NaN stays NaN)."""
    return (hhmm // 100) * 60 + hhmm % 100


def clock_verdicts(hhmm: pd.Series) -> pd.Series:
    """Whether each HHMM value has minutes 00-59 (None where the value is missing)."""
    return _verdicts(hhmm % 100 < 60, hhmm.notna())


def row_verdicts(rule: RowRule, frame: pd.DataFrame) -> pd.Series:
    """Whether each row of `rule.table` obeys `rule` (None: not judged)."""
    if isinstance(rule, DateParts):
        local = local_time(frame[rule.timestamp], rule.timezone)
        ok = pd.Series(True, index=frame.index)
        for column, part in rule.parts.items():
            ok &= frame[column] == getattr(local.dt, part)
        judged = frame[list(rule.columns())].notna().all(axis=1)
        return _verdicts(ok, judged)
    if isinstance(rule, ClockDelay):
        gap = clock_minutes(frame[rule.actual]) - clock_minutes(frame[rule.scheduled])
        ok = (gap - frame[rule.delay]) % MINUTES_PER_DAY == 0
        return _verdicts(ok, frame[list(rule.columns())].notna().all(axis=1))
    if isinstance(rule, NullTogether):
        ok = frame[list(rule.then)].isna().all(axis=1)
        return _verdicts(ok, frame[rule.column].isna())
    if isinstance(rule, FieldOrder):
        left, right = frame[rule.left], frame[rule.right]
        return _verdicts(rule.holds(left, right), left.notna() & right.notna())
    if isinstance(rule, ValueTogether):
        holds = frame[rule.column] == rule.value
        ok = pd.Series(True, index=frame.index)
        for column, value in rule.then.items():
            ok &= holds == (frame[column].isna() if value is None else frame[column] == value)
        return _verdicts(ok, frame[list(rule.judged_columns())].notna().all(axis=1))
    raise TypeError(f"unknown row rule {rule!r}")


def link_found(link: Link, tables: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Per source row: True if its key is in the target, None if the key is null."""
    source, target = tables[link.source], tables[link.target]
    keys = pd.MultiIndex.from_frame(source[list(link.columns)])
    known = pd.MultiIndex.from_frame(target[list(link.target_columns)])
    found = pd.Series(keys.isin(known), index=source.index, dtype="object")
    return found.where(source[list(link.columns)].notna().all(axis=1), None)


GroupKeys = tuple[list[pd.Series], list[list[str]]]  # row keys, and every group's labels


def group_values(
    rule: GroupRule,
    tables: Mapping[str, pd.DataFrame],
    contract: DataContract,
    keys_cache: dict[tuple, GroupKeys] | None = None,
) -> pd.Series:
    """The rule's metric per group, indexed by group label (float; NaN: nothing to judge).

    `keys_cache` shares the (costly) group keys between rules that group a table alike.
    """
    frame = tables[rule.table]
    keys, levels = _group_keys(rule, frame, {} if keys_cache is None else keys_cache)
    full = pd.MultiIndex.from_tuples(list(itertools.product(*levels)))
    if rule.metric in ("distinct", "period_shift"):
        return _labeled(_column_statistic(rule, frame, keys, full))
    if rule.metric == "rows":
        rows = pd.Series(1.0, index=frame.index)
    elif rule.metric == "null_fraction":
        rows = frame[rule.column].isna().astype(float)
    elif rule.metric == "share_at_least":
        known = frame[rule.column]
        rows = (known >= rule.at_least).astype(float).where(known.notna())
    else:
        rows = pd.to_numeric(link_found(contract.link(rule.link or ""), tables), errors="coerce")
    grouped = rows.groupby(keys, dropna=True).agg(["sum", "mean", "count"])
    values = grouped["sum"] if rule.metric == "rows" else grouped["mean"]
    if rule.metric != "rows":  # a ratio over too few rows is noise: not judged
        values = values.where(grouped["count"] >= rule.min_group_rows)
    values = _tuples(values).reindex(full, fill_value=0.0 if rule.metric == "rows" else np.nan)
    values = _labeled(values)
    if rule.metric == "rows" and values.median() < rule.min_group_rows:
        return values * np.nan  # too small a sample to judge row counts
    return values / values.median() if rule.relative else values


def _tuples(values: pd.Series) -> pd.Series:
    """A groupby result indexed by tuples, whether it grouped by one key or several."""
    values.index = pd.MultiIndex.from_tuples(
        [k if isinstance(k, tuple) else (k,) for k in values.index]
    )
    return values


def _labeled(values: pd.Series) -> pd.Series:
    """Values per group indexed by readable labels (`JFK 2013-03`), as floats."""
    values.index = [" ".join(parts) for parts in values.index]
    return values.astype(float)


def _column_statistic(
    rule: GroupRule, frame: pd.DataFrame, keys: list[pd.Series], full: pd.MultiIndex
) -> pd.Series:
    """`distinct` values of `column` per group, or each period's `period_shift`.

    A period's shift is |its median - the mean of the previous and the next period's
    medians| over its standard deviation (one neighbour at either end); groups under
    `min_group_rows` rows, and their neighbours' use of them, are not judged.
    """
    if rule.metric == "distinct":
        grouped = frame[rule.column].groupby(keys, dropna=True)
        stats = _tuples(grouped.agg(["nunique", "count"])).reindex(full)
        return stats["nunique"].where(stats["count"] >= max(rule.min_group_rows, 1))
    values = pd.to_numeric(frame[rule.column], errors="coerce")  # a wrong type: the type check's
    stats = _tuples(values.groupby(keys, dropna=True).agg(["median", "std", "count"])).reindex(full)
    median = stats["median"].where(stats["count"] >= max(rule.min_group_rows, 2))
    # periods are the last level: each row of the table below is one `by` group over time
    table = median.unstack(level=-1) if rule.by else median.to_frame().T
    before, after = table.shift(1, axis=1), table.shift(-1, axis=1)
    neighbours = (before.fillna(after) + after.fillna(before)) / 2
    shift = (table - neighbours).abs()
    shift = shift.stack(future_stack=True) if rule.by else shift.iloc[0]
    return shift.reindex(median.index) / stats["std"]


def values_by_group(rule: GroupRule, frame: pd.DataFrame, groups: list[str]) -> dict[str, str]:
    """The distinct values of `rule.column` in each of `groups` (labels as `group_values`'s)."""
    labels = frame[list(rule.by)].astype(str).agg(" ".join, axis=1)
    wanted = labels.isin(groups)
    values = frame.loc[wanted, rule.column].groupby(labels[wanted]).unique()
    return {g: ", ".join(str(v) for v in sorted(values[g])) for g in groups if g in values}


def _group_keys(rule: GroupRule, frame: pd.DataFrame, cache: dict[tuple, GroupKeys]) -> GroupKeys:
    """Each row's group key parts, and every group's labels.

    The labels are the `by` values seen and every period from the first to the last.
    """
    signature = (rule.table, rule.by, rule.time, rule.period, rule.timezone)
    if signature in cache:
        return cache[signature]
    keys: list[pd.Series] = [frame[c].astype(str).where(frame[c].notna(), None) for c in rule.by]
    levels = [sorted(key.dropna().unique()) for key in keys]
    if rule.period is not None and rule.time is not None:
        code = PERIOD_CODES[rule.period]
        periods = local_time(frame[rule.time], rule.timezone).dt.to_period(code)
        keys.append(periods.astype(str).where(periods.notna(), None))
        seen = periods.dropna()
        span = pd.period_range(seen.min(), seen.max()) if len(seen) else []
        levels.append([str(p) for p in span])
    cache[signature] = (keys, levels)
    return keys, levels


def breaking(values: pd.Series, rule: GroupRule) -> pd.Series:
    """The groups whose value is outside the rule's limit, furthest outside first."""
    below = rule.min - values if rule.min is not None else values * 0 - np.inf
    above = values - rule.max if rule.max is not None else values * 0 - np.inf
    excess = np.maximum(below, above)
    return values[excess > 0].reindex(excess[excess > 0].sort_values(ascending=False).index)
