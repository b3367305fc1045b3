"""An always-valid comparison of two models on the same labeled records.

The evidence is one number per record, the difference of the two models' losses on it
(challenger minus champion: negative where the challenger did better). A confidence
sequence for the mean difference holds at every number of records at once, so it may be
looked at after every batch of labels without inflating false decisions, where a
fixed-sample interval looked at repeatedly would (bench/sequential.py measures both).

The sequence is Robbins' normal mixture. For t observations of spread sigma with sum
S_t around the true mean, M_t = (1 + t rho^2)^(-1/2) exp(rho^2 (S_t / sigma)^2 /
(2 (1 + t rho^2))) starts at 1 and is a nonnegative supermartingale, so by Ville's
inequality P(M_t >= 1/alpha for some t) <= alpha. Solving M_t < 1/alpha for the mean
gives the radius

    sigma * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))

(Robbins 1970; Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Annals of Statistics 2021). With the running sample
standard deviation in place of sigma it is the asymptotic confidence sequence of
Waudby-Smith, Arnold, Wu and Ramdas ("Time-uniform central limit theory and asymptotic
confidence sequences", Annals of Statistics 2024): valid as the count grows, which is
why a decision also waits for a minimum number of pairs. `rho` sets where the sequence
is tightest; `mixture_scale` puts that at a planned number of records (Howard et al.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Verdict = Literal["better", "worse", "undecided"]


def mixture_scale(planned: int, alpha: float) -> float:
    """The `rho` that makes the radius smallest near `planned` observations."""
    _check(alpha, planned)
    a = -2 * math.log(alpha)
    return math.sqrt((a + math.log(a + 1)) / planned)


def radius(count: np.ndarray, spread: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    """The sequence's half-width after `count` observations of standard deviation `spread`."""
    r2 = rho * rho
    t = np.asarray(count, dtype=float)
    return spread * np.sqrt(2 * (t * r2 + 1) / (t * t * r2) * np.log(np.sqrt(t * r2 + 1) / alpha))


@dataclass(frozen=True)
class Running:
    """The sequence after each observation: count, mean, sample spread, bounds of the mean."""

    count: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    low: np.ndarray
    high: np.ndarray


def running(differences: np.ndarray, alpha: float, planned: int) -> Running:
    """The confidence sequence of the mean difference after each of `differences`.

    The spread is the running sample standard deviation; before two observations the
    bounds are infinite.
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise ValueError("differences must be a flat array of finite numbers")
    t = np.arange(1, len(d) + 1, dtype=float)
    mean = np.cumsum(d) / t
    squares = np.maximum(np.cumsum(d * d) / t - mean * mean, 0.0)
    spread = np.sqrt(squares * t / np.maximum(t - 1, 1))
    half = np.where(t >= 2, radius(t, spread, alpha, mixture_scale(planned, alpha)), np.inf)
    return Running(t.astype(int), mean, spread, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """Where the sequence stands after all the differences seen so far."""

    pairs: int
    mean: float
    low: float
    high: float
    verdict: Verdict  # better: the whole interval below 0; worse: above; else undecided


def compare(differences: np.ndarray, alpha: float, planned: int, min_pairs: int) -> Comparison:
    """The latest interval, and whether it has left 0 (only once `min_pairs` are in)."""
    if min_pairs < 2:
        raise ValueError(f"min_pairs must be at least 2, not {min_pairs}")
    if len(differences) == 0:
        return Comparison(0, math.nan, -math.inf, math.inf, "undecided")
    seq = running(differences, alpha, planned)
    low, high = float(seq.low[-1]), float(seq.high[-1])
    verdict: Verdict = "undecided"
    if len(differences) >= min_pairs:
        verdict = "better" if high < 0 else "worse" if low > 0 else "undecided"
    return Comparison(len(differences), float(seq.mean[-1]), low, high, verdict)


def _check(alpha: float, planned: int) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if planned < 1:
        raise ValueError(f"planned must be a positive number of observations, not {planned}")
