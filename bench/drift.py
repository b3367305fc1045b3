"""Benchmark: drift tests on both datasets: false alarms by batch size, real drifts, agreement.

For each dataset, the reference is what the monitor uses (up to `monitor.reference_rows`
training rows, seeded) and the batches are drawn at random from the same training data
(with replacement where a size exceeds it: wa_churn's 3,521 training rows at 10,000):
nothing drifted, so every flag is a false alarm. Each batch is tested twice per field:
"fixed", today's rule before profiles (Evidently's distance above 0.1, whatever the size),
and "by size", the monitor's test (`loopline.monitoring.drift`: above 0.1 and above the
noise limit for its size, rare categories pooled). Then real drifts at the same sizes:
autumn flights (September-December) and a wa_churn segment shifted (month-to-month
customers drawn three times as often). Last, the profile's distances against Evidently's
on the same rows. Run from the project root (no `make run` needed):

    .venv/bin/python -m bench.drift            (--draws 200 per size; about 5 minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core.params import DriftTests, Params, load_params
from loopline.data.datasets import get_dataset
from loopline.data.splits import split_at_random
from loopline.monitoring.drift import MonitoredColumns, drift_tests, field_drift
from loopline.monitoring.profile import Profile, profile_frame
from loopline.monitoring.snapshot import evidently_drift, run_report

ROOT = Path(__file__).resolve().parents[1]
SIZES = (100, 200, 1_000, 10_000)
PARAMS = {"nycflights13": "params.yaml", "wa_churn": "params.wa_churn.yaml"}


def training_and_later(name: str, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, rows that really drifted) of a dataset, as logged predictions."""
    dataset = get_dataset(name)
    examples = dataset.build_examples(dataset.materialize(), params.dataset)
    if dataset.time_column:
        when = examples[dataset.time_column]
        window = params.featurize.split.train  # type: ignore[union-attr]
        train = examples[(when.dt.date >= window.start) & (when.dt.date <= window.end)]
        drifted = examples[when.dt.month >= 9]  # autumn: weather and schedules move
    else:
        train = split_at_random(
            examples,
            dataset.target_column,
            params.featurize.split,
            params.seed,  # type: ignore[arg-type]
        )["train"]
        segment = (train["contract"] == "Month-to-month").to_numpy()
        weights = np.where(segment, 3.0, 1.0)
        drifted = train.sample(len(train), replace=True, weights=weights, random_state=1)
    return _as_logged(train), _as_logged(drifted)


def _as_logged(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a profile reads beside the fields (no model scored these rows)."""
    return frame.assign(probability=0.5, label=0, model_version="bench", day="bench")


@dataclass(frozen=True)
class Setup:
    """One dataset's reference (rows and profile), monitored fields and drift tests."""

    reference_rows: pd.DataFrame
    reference: Profile
    columns: MonitoredColumns
    tests: DriftTests
    share_limit: float  # monitor.drift_share_limit

    def flag_rates(self, batches: pd.DataFrame, size: int, draws: int, seed: int) -> dict:
        """Per field, the share of `draws` batches of `size` rows flagged, fixed and by size.

        Also the share of batches whose drift share is over the limit (what can retrain).
        """
        columns, tests = self.columns, self.tests
        flags = {rule: dict.fromkeys(columns.tested, 0) for rule in ("fixed", "by_size")}
        over = {"fixed": 0, "by_size": 0}
        for draw in range(draws):
            rows = batches.sample(size, replace=size > len(batches), random_state=seed + draw)
            profile = profile_frame(rows, columns.profiled("day"))
            found = drift_tests(self.reference, profile, columns, tests, seed=draw)
            fixed = {
                name: self.distance(name, profile) > tests.effect_limit for name in found.fields
            }
            for name, test in found.fields.items():
                flags["fixed"][name] += fixed[name]
                flags["by_size"][name] += test.drifted
            over["fixed"] += (
                sum(fixed[c] for c in columns.share) / len(columns.share) > self.share_limit
            )
            over["by_size"] += found.share > self.share_limit
        rates = {
            rule: {n: round(k / draws, 3) for n, k in per.items()} for rule, per in flags.items()
        }
        for rule, per in rates.items():
            per["batch over the drift share limit"] = round(over[rule] / draws, 3)
        return rates

    def distance(self, name: str, profile: Profile) -> float:
        """A field's distance as Evidently computes it (no pooling of rare categories)."""
        unpooled = self.tests.model_copy(update={"min_expected": 1e-9})
        found = field_drift(name, self.reference.fields[name], profile.fields[name], unpooled,
                            seed=0, level=0.05)  # fmt: skip
        return found.distance

    def agreement(self, current: pd.DataFrame) -> dict:
        """The largest |profile distance - Evidently's| / Evidently's over fields, same rows."""
        snapshot = run_report(
            self.reference_rows, current, self.columns, labeled=False,
            timestamp=dt.datetime(2013, 1, 1), name="bench",
        )  # fmt: skip
        theirs = evidently_drift(snapshot)
        profile = profile_frame(current, self.columns.profiled("day"))
        gaps = {
            name: abs(self.distance(name, profile) - theirs[name]) / max(theirs[name], 1e-3)
            for name in self.columns.tested
        }
        worst = max(gaps, key=gaps.__getitem__)
        return {"rows": len(current), "max_relative_gap": round(gaps[worst], 5), "field": worst}


def bench_dataset(name: str, draws: int) -> dict:
    """Every table of the benchmark for one dataset."""
    params = load_params(ROOT / PARAMS[name])
    dataset = get_dataset(name)
    train, drifted = training_and_later(name, params)
    monitor = params.monitor
    rows = train.sample(min(len(train), monitor.reference_rows), random_state=params.seed)
    columns = MonitoredColumns.from_contract(dataset.contract, dataset.target_column)
    setup = Setup(rows, columns.reference_profile(rows), columns, monitor.drift,
                  monitor.drift_share_limit)  # fmt: skip
    result: dict = {"training_rows": len(train), "reference_rows": len(rows),
                    "false_alarms": {}, "real_drift": {}}  # fmt: skip
    for size in SIZES:
        result["false_alarms"][size] = setup.flag_rates(train, size, draws, 1000)
        result["real_drift"][size] = setup.flag_rates(drifted, size, max(draws // 4, 20), 9000)
        print(name, size, "done", file=sys.stderr, flush=True)
    result["agreement"] = [
        setup.agreement(drifted.sample(size, replace=size > len(drifted), random_state=5))
        for size in (1_000, 10_000)
    ]
    return result


def main() -> None:
    """Print every table as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="batches per size")
    parser.add_argument("--datasets", nargs="+", default=list(PARAMS))
    args = parser.parse_args()
    results = {name: bench_dataset(name, args.draws) for name in args.datasets}
    print(json.dumps({"draws": args.draws, "cpus": os.cpu_count(), **results}, indent=1))


if __name__ == "__main__":
    main()
