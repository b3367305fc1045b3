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
  flight already in it (a client or a queue re-sending);
* **a contract rule broken**: the data gate's rules that a record shows, checked on the
  live records: an order inside a row (a flight landing where it left, a dew point above
  its temperature) broken by more than `rule_break_share` of the records, or more keys
  than the rule allows carrying two values of what they determine (a route, its distance).

The first two read the batch's profile (its nulls per day, its category counts) against
the reference's; repeats come from a 64-bit hash of each record's key, collected chunk by
chunk (8 bytes a row), and the most repeated key is named from one more read of the key
columns, only when the check fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from loopline.core.params import TrafficChecks
from loopline.data.contract import RARELY_MISSING, DataContract
from loopline.monitoring.profile import CategoryCounts, Profile, as_text
from loopline.monitoring.records import Incident


def key_hashes(chunk: pd.DataFrame, key_columns: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each row's key (the same key, the same hash, in any chunk)."""
    return pd.util.hash_pandas_object(chunk[list(key_columns)], index=False).to_numpy()


@dataclass(frozen=True)
class KeyReader:
    """The key columns of a batch, and how to read them again chunk by chunk."""

    columns: tuple[str, ...]
    chunks: Callable[[], Iterator[pd.DataFrame]]


@dataclass(frozen=True)
class Repeats:
    """How many of a batch's records repeat a key already in it, and the most repeated."""

    rows: int
    repeated: int  # records whose key came earlier in the batch
    top_hash: int  # the most repeated key's hash ...
    top_count: int  # ... and how often it came

    @classmethod
    def of(cls, hashes: Iterable[np.ndarray]) -> Repeats:
        """Count repeats over the hashes of every chunk."""
        every = np.concatenate([np.zeros(0, dtype=np.uint64), *hashes])
        if not len(every):
            return cls(0, 0, 0, 0)
        distinct, counts = np.unique(every, return_counts=True)
        top = int(np.argmax(counts))
        return cls(len(every), len(every) - len(distinct), int(distinct[top]), int(counts[top]))

    @property
    def share(self) -> float:
        """Repeated records per record."""
        return self.repeated / self.rows if self.rows else 0.0


def incidents(
    batch: Profile,
    reference: Profile,
    contract: DataContract,
    checks: TrafficChecks,
    *,
    repeats: Repeats,
    keys: KeyReader,
) -> list[Incident]:
    """Every data-quality incident of the batch (empty: clean).

    Outages are judged per day of the profile: the example's own day, or (a dataset
    without time) the day it arrived. `keys` reads the batch's key columns again, to name
    the most repeated key.
    """
    return [
        *_outages(batch, contract, checks),
        *_categories_gone(batch, reference, contract, checks),
        *_repeats(repeats, keys, checks),
        *_rules_broken(batch, contract, checks),
    ]


def _outages(batch: Profile, contract: DataContract, checks: TrafficChecks) -> list[Incident]:
    fields = [f.name for f in contract.rarely_missing_fields()]
    lines = []
    for day, counts in batch.days.items():
        records = counts["rows"]
        shares = pd.Series({f: counts[f] / records for f in fields if f in counts})
        out = shares[shares >= checks.outage_null_fraction]
        if len(out) and records >= checks.min_day_rows:
            share = f"{out.min():.0%}" + (f"-{out.max():.0%}" if out.max() > out.min() else "")
            lines.append(Incident(
                "feed_outage", tuple(out.index),
                f"feed outage on {day}: {', '.join(out.index)} missing for {share} of its "
                f"{records} records (the contract allows {RARELY_MISSING:.0%} or less)",
            ))  # fmt: skip
    return lines


def _categories_gone(
    batch: Profile, reference: Profile, contract: DataContract, checks: TrafficChecks
) -> list[Incident]:
    lines = []
    for field in contract.record_fields():
        before, now = reference.fields.get(field.name), batch.fields.get(field.name)
        if not (field.allowed and isinstance(before, CategoryCounts)):
            continue
        if not isinstance(now, CategoryCounts):  # both profiled alike: never
            raise TypeError(f"{field.name} is profiled as counts in the reference only")
        for value, count in before.counts.items():
            share, seen = count / before.count, now.counts.get(value, 0) / max(now.count, 1)
            if share >= checks.category_share and seen < share * checks.category_drop:
                lines.append(Incident(
                    "category_gone", (field.name,),
                    f"{field.name} {value} nearly gone: {seen:.1%} of the batch, {share:.1%} "
                    "of the champion's training data (a feed that stopped?)",
                ))  # fmt: skip
    return lines


def _rules_broken(batch: Profile, contract: DataContract, checks: TrafficChecks) -> list[Incident]:
    """The contract's rules on records, as the data gate states them, on the live batch."""
    lines = []
    for rule in contract.row_rules:
        counts = batch.rules.get(rule.name)
        if counts and counts.broken > checks.rule_break_share * counts.judged:
            lines.append(Incident(
                "rule_broken", rule.columns(),
                f"{rule.name} broken by {counts.broken} of {counts.judged} records (limit "
                f"{checks.rule_break_share:.1%}); e.g. {'; '.join(counts.examples)}",
            ))  # fmt: skip
    for rule in contract.group_rules:
        carried = {key: values for key, values in batch.key_values.get(rule.name, {}).items()
                   if len(values) > 1}  # fmt: skip
        if len(carried) > rule.allowed_failures:
            shown = "; ".join(f"{key}: {_some(v)}" for key, v in list(carried.items())[:3])
            lines.append(Incident(
                "rule_broken", rule.columns(),
                f"{' '.join(rule.by)} determines {rule.column} in the contract, but "
                f"{len(carried)} keys of the batch carry two or more (at most "
                f"{rule.allowed_failures} may); e.g. {shown}",
            ))  # fmt: skip
    return lines


def _repeats(repeats: Repeats, keys: KeyReader, checks: TrafficChecks) -> list[Incident]:
    if repeats.share <= checks.duplicate_share:
        return []
    example = _key_of(repeats.top_hash, keys)
    return [Incident(
        "repeated_records", tuple(example),
        f"repeated records: {repeats.share:.1%} of the batch repeats a record already in it "
        f"(limit {checks.duplicate_share:.0%}); most repeated: "
        f"{' '.join(f'{k}={as_text(v)}' for k, v in example.items())} ({repeats.top_count} times)",
    )]  # fmt: skip


def _key_of(wanted: int, keys: KeyReader) -> dict:
    """The key whose hash is `wanted`, read back from the batch."""
    for chunk in keys.chunks():
        found = np.flatnonzero(key_hashes(chunk, keys.columns) == np.uint64(wanted))
        if len(found):
            return chunk[list(keys.columns)].iloc[int(found[0])].to_dict()
    raise AssertionError("a counted key is no longer in its batch")  # the log is append-only


def _some(values: tuple[str, ...], most: int = 5) -> str:
    """The first values, and how many there are when not all are shown."""
    shown = ", ".join(values[:most])
    return shown if len(values) <= most else f"{shown}, ... ({len(values)} values)"
