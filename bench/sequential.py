"""Benchmark: is the always-valid comparison honest when it is looked at after every batch?

Each trial is a synthetic stream of labeled records scored by two models (seeded, so
every number repeats): each record's true log-odds of being late is drawn from N(-0.7,
1) (a third positive, like the flights), its label from that, and each model's
probability is the true log-odds plus its own Gaussian noise: the champion's sd 0.6,
the challenger's 0.6 (equal), 0.65 (worse) or 0.5 (better). The evidence is the paired
per-record log-loss difference (challenger minus champion). After the first `MIN_PAIRS`
labels, every `BATCH` labels, two rules look:

  * the confidence sequence (`loopline.promotion.sequential`): promote once its whole
    interval is below 0, roll back once it is above;
  * a fixed-sample 95% interval (mean +- 1.96 standard errors), looked at just as often:
    what a dashboard that peeks does.

Printed: for each challenger, the share of trials that ever promoted (and ever rolled
back), with a 95% Wilson interval, after 100, 300 and all trials; for the better one the
median labels its promotion needed. Run from the project root (no data needed):
.venv/bin/python -m bench.sequential  (--trials 1000 by default)
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from loopline.promotion.sequential import running

ALPHA = 0.05
RECORDS = 20_000  # labels per trial: the champion stays if nothing is decided by then
PLANNED = 5_000  # where the sequence is tightest
MIN_PAIRS, BATCH = 500, 250
CHAMPION_NOISE = 0.6
CHALLENGERS = {"equal": 0.6, "worse": 0.65, "better": 0.5}  # the challenger's noise sd
Z95 = 1.959963984540054


def paired_differences(seed: int, challenger_noise: float) -> np.ndarray:
    """One trial's per-record log-loss differences, challenger minus champion."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(-0.7, 1.0, RECORDS)
    late = rng.random(RECORDS) < 1 / (1 + np.exp(-truth))

    def log_loss(noise: float) -> np.ndarray:
        p = 1 / (1 + np.exp(-(truth + rng.normal(0.0, noise, RECORDS))))
        return -np.where(late, np.log(p), np.log1p(-p))

    champion = log_loss(CHAMPION_NOISE)
    return log_loss(challenger_noise) - champion


def trial(seed: int, challenger_noise: float) -> dict[str, int | None]:
    """The first look at which each rule promoted or rolled back (labels seen), or None."""
    d = paired_differences(seed, challenger_noise)
    seq = running(d, ALPHA, PLANNED)
    looks = np.arange(MIN_PAIRS, RECORDS + 1, BATCH) - 1
    standard_error = seq.spread / np.sqrt(seq.count)
    fixed_low, fixed_high = seq.mean - Z95 * standard_error, seq.mean + Z95 * standard_error

    def first(hits: np.ndarray) -> int | None:
        where = np.flatnonzero(hits[looks])
        return int(looks[where[0]] + 1) if len(where) else None

    return {
        "sequence promoted": first(seq.high < 0), "sequence rolled back": first(seq.low > 0),
        "peeking promoted": first(fixed_high < 0), "peeking rolled back": first(fixed_low > 0),
    }  # fmt: skip


def wilson(hits: int, n: int) -> tuple[float, float]:
    """A 95% Wilson interval for a proportion."""
    p, z2 = hits / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return round(centre - half, 4), round(centre + half, 4)


def main() -> None:
    """Every challenger over `--trials` seeds; one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    trials = parser.parse_args().trials
    results: dict = {"alpha": ALPHA, "records": RECORDS, "min_pairs": MIN_PAIRS,
                     "batch": BATCH, "planned": PLANNED, "challengers": {}}  # fmt: skip
    for name, noise in CHALLENGERS.items():
        outcomes = [trial(seed, noise) for seed in range(trials)]
        shares = {}
        for count in sorted({100, 300, trials} & set(range(1, trials + 1))):
            shares[count] = {
                rule: {"share": sum(o[rule] is not None for o in outcomes[:count]) / count,
                       "wilson_95": wilson(sum(o[rule] is not None for o in outcomes[:count]),
                                           count)}
                for rule in outcomes[0]
            }  # fmt: skip
        promoted = [o["sequence promoted"] for o in outcomes if o["sequence promoted"]]
        results["challengers"][name] = {
            "noise_sd": noise, "by_trials": shares,
            "median_labels_to_promote": float(np.median(promoted)) if promoted else None,
        }  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
