"""Data-quality checks on a batch of live traffic, before anyone looks at drift.

A broken feed looks like drift to a drift test: a day of missing weather, a carrier whose
flights stopped arriving, one record sent a thousand times. Retraining on that would
teach the model the outage. So the monitor first checks the batch against the data
contract, per day and per category, and a batch with an incident is reported as such and
never counts toward a retrain:

* **feed outage**: a field the contract says is rarely missing (`max_null_fraction` at
  most `contract.RARELY_MISSING`) is missing for `outage_null_fraction` or more of a day's
  flights (days with at least `min_day_rows` flights);
* **category gone**: a value of a field with an allowed set (carrier, origin) that made
  up at least `category_share` of the champion's training data has fallen below
  `category_drop` times that share in the batch;
* **repeated records**: more than `duplicate_share` of the batch repeats the key of a
  flight already in it (a client or a queue re-sending).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from loopline.core.params import TrafficChecks
from loopline.data.contract import RARELY_MISSING, DataContract
from loopline.data.time_axis import EVENT_DAY
from loopline.monitoring.records import Incident


def incidents(
    batch: pd.DataFrame,
    reference: pd.DataFrame,
    contract: DataContract,
    key_columns: Sequence[str],
    checks: TrafficChecks,
    *,
    day_column: str = EVENT_DAY,
) -> list[Incident]:
    """Every data-quality incident in `batch` (empty: clean).

    Outages are judged per day of `day_column`: the example's own day, or (a dataset
    without time) the day it arrived.
    """
    return [
        *_outages(batch, contract, checks, day_column),
        *_categories_gone(batch, reference, contract, checks),
        *_repeats(batch, key_columns, checks),
    ]


def _outages(
    batch: pd.DataFrame, contract: DataContract, checks: TrafficChecks, day_column: str
) -> list[Incident]:
    fields = [f.name for f in contract.rarely_missing_fields() if f.name in batch]
    if not fields:
        return []
    days = batch[day_column]
    missing = batch[fields].isna().groupby(days).mean()
    records = days.value_counts()
    lines = []
    for day, shares in missing.iterrows():
        out = shares[shares >= checks.outage_null_fraction]
        if len(out) and records[day] >= checks.min_day_rows:
            share = f"{out.min():.0%}" + (f"-{out.max():.0%}" if out.max() > out.min() else "")
            lines.append(Incident(
                "feed_outage", tuple(out.index),
                f"feed outage on {day}: {', '.join(out.index)} missing for {share} of its "
                f"{records[day]} records (the contract allows {RARELY_MISSING:.0%} or less)",
            ))  # fmt: skip
    return lines


def _categories_gone(
    batch: pd.DataFrame, reference: pd.DataFrame, contract: DataContract, checks: TrafficChecks
) -> list[Incident]:
    lines = []
    for field in contract.record_fields():
        if not field.allowed or field.name not in batch or field.name not in reference:
            continue
        before = reference[field.name].value_counts(normalize=True)
        now = batch[field.name].value_counts(normalize=True)
        for value, share in before[before >= checks.category_share].items():
            seen = float(now.get(value, 0.0))
            if seen < share * checks.category_drop:
                lines.append(Incident(
                    "category_gone", (field.name,),
                    f"{field.name} {value} nearly gone: {seen:.1%} of the batch, {share:.1%} "
                    "of the champion's training data (a feed that stopped?)",
                ))  # fmt: skip
    return lines


def _repeats(
    batch: pd.DataFrame, key_columns: Sequence[str], checks: TrafficChecks
) -> list[Incident]:
    keys = [c for c in key_columns if c in batch]
    if not keys or batch.empty:
        return []
    repeated = batch.duplicated(keys)
    share = float(repeated.mean())
    if share <= checks.duplicate_share:
        return []
    top = batch.loc[repeated, keys].value_counts().head(1)
    example = " ".join(f"{k}={v}" for k, v in zip(keys, top.index[0], strict=True))
    return [Incident(
        "repeated_records", tuple(keys),
        f"repeated records: {share:.1%} of the batch repeats a record already in it "
        f"(limit {checks.duplicate_share:.0%}); most repeated: {example} "
        f"({int(top.iloc[0]) + 1} times)",
    )]  # fmt: skip
