"""Judging a running canary: guardrails on its traffic at once, an always-valid test on labels.

A look (the `canary` flow: on its schedule, or after each replay batch) reads what the
prediction log holds since the canary began (`PredictionLog.read_answered`) and decides
one of the registry's canary actions (`Registry.decide_canary`):

1. **Guardrails**, on the requests since the current step began, need no labels: the
   challenger's failures and timeouts per request; its p99 scoring time against the
   champion's on the same requests; the share of keys actually routed to it against the
   step's share (a sample-ratio check, a two-sided binomial test); its predicted positive
   rate against the champion's on the same records. Any trip rolls the canary back.
2. **The test.** Both models score every record (one answers, the other is logged beside
   it), so each labeled record gives one paired loss difference, canary minus champion.
   Only matured cohorts count: a cohort is an event day (a log day for a dataset without
   time), matured once every record logged for it has its label; the pairs are those of
   the matured days from the canary's first day up to the first day still waiting. Late
   flights are labeled last, so the labeled part of an unfinished day leans on-time; a
   whole day does not. A later look only appends days, so the pairs form one growing
   sequence, which the confidence sequence needs (`loopline.promotion.sequential`). One
   pair per key (its first prediction): a record scored again adds no evidence.
3. **The decision.** A trip or a "worse" verdict rolls back. After the last step a
   "better" verdict promotes. Still undecided after `max_pairs` pairs or `max_days`, it
   rolls back (the champion stays). A step whose canary has answered `min_step_records`
   records moves to the next share. Otherwise it holds.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from loopline.core.params import CanaryParams, Guardrails
from loopline.infra.prediction_log import PredictionLog
from loopline.promotion.sequential import Comparison, compare
from loopline.registry.canary import CANARY_ARM, Canary
from loopline.registry.versions import CanaryAction

EPS = 1e-15  # probabilities are clipped this far from 0 and 1 for the log loss


@dataclass(frozen=True)
class Guarded:
    """The guardrails' numbers on the current step's traffic, and the ones that tripped."""

    requests: int
    error_rate: float | None = None
    p99_ms: dict[str, float] = field(default_factory=dict)  # champion, canary
    routed_share: float | None = None
    srm_p_value: float | None = None
    positive_rate: dict[str, float] = field(default_factory=dict)  # champion, canary
    trips: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Look:
    """One judgement of a canary: what to do, why, and the evidence for the ledger."""

    action: CanaryAction
    reason: str
    evidence: dict[str, Any]
    share: float | None = None  # the next step's share, for "step"


def record_loss(probability: np.ndarray, outcome: np.ndarray, kind: str) -> np.ndarray:
    """Each record's loss: log loss (clipped) or Brier (squared error)."""
    if kind == "brier":
        return (probability - outcome) ** 2
    p = np.clip(probability, EPS, 1 - EPS)
    return -(outcome * np.log(p) + (1 - outcome) * np.log1p(-p))


def paired(rows: pd.DataFrame, canary: Canary) -> pd.DataFrame:
    """The rows both of the canary's models scored, each model's score under its name."""
    models = [canary.champion, canary.version]
    both = rows[
        rows["model_version"].isin(models)
        & rows["shadow_version"].isin(models)
        & (rows["model_version"] != rows["shadow_version"])
    ]
    by_canary = (both["model_version"] == canary.version).to_numpy()
    answer, beside = both[["probability", "label"]], both[["shadow_probability", "shadow_label"]]
    return both.assign(
        champion_p=np.where(by_canary, beside.iloc[:, 0], answer.iloc[:, 0]),
        canary_p=np.where(by_canary, answer.iloc[:, 0], beside.iloc[:, 0]),
        champion_label=np.where(by_canary, beside.iloc[:, 1], answer.iloc[:, 1]),
        canary_label=np.where(by_canary, answer.iloc[:, 1], beside.iloc[:, 1]),
    )


def guardrails(
    rows: pd.DataFrame, canary: Canary, key: Sequence[str], limits: Guardrails
) -> Guarded:
    """The guardrails on the traffic since the canary's current step began."""
    step = rows[rows["logged_at"] >= canary.stepped_at]
    requests = step.groupby("request_id").agg(
        champion_ms=("champion_ms", "first"),
        challenger_ms=("challenger_ms", "first"),
        failed=("challenger_error", lambda errors: errors.notna().any()),
    )
    if len(requests) < limits.min_requests:
        return Guarded(len(requests))
    trips = []
    timeouts = int((requests["challenger_ms"] > limits.timeout_ms).sum())
    failures = int(requests["failed"].sum())
    error_rate = (failures + timeouts) / len(requests)
    if error_rate > limits.max_error_rate:
        trips.append(
            f"errors: {failures} failures and {timeouts} timeouts (> {limits.timeout_ms:g} ms) "
            f"in {len(requests)} requests, {error_rate:.1%} > {limits.max_error_rate:.1%}"
        )
    p99 = {"champion": float(requests["champion_ms"].quantile(0.99)),
           "canary": float(requests["challenger_ms"].quantile(0.99))}  # fmt: skip
    if p99["canary"] > max(limits.p99_floor_ms, limits.max_p99_ratio * p99["champion"]):
        trips.append(
            f"latency: p99 scoring {p99['canary']:.1f} ms vs the champion's "
            f"{p99['champion']:.1f} ms, over {limits.max_p99_ratio:g}x"
        )
    keys = step.drop_duplicates(list(key))
    routed = int((keys["arm"] == CANARY_ARM).sum())
    srm = binomtest(routed, len(keys), canary.share).pvalue if 0 < canary.share < 1 else 1.0
    if srm < limits.srm_alpha:
        trips.append(
            f"sample ratio: {routed} of {len(keys)} keys routed ({routed / len(keys):.1%}) "
            f"for a share of {canary.share:.0%}, p = {srm:.1e} < {limits.srm_alpha:g}"
        )
    both = paired(step, canary)
    rates = {arm: float(both[f"{arm}_label"].mean()) for arm in ("champion", "canary")}
    if len(both) and _ratio(rates["canary"], rates["champion"]) > limits.max_positive_rate_ratio:
        trips.append(
            f"positive rate: {rates['canary']:.1%} predicted positive vs the champion's "
            f"{rates['champion']:.1%} on the same {len(both)} records, beyond "
            f"{limits.max_positive_rate_ratio:g}x either way"
        )
    return Guarded(len(requests), error_rate, p99, routed / len(keys), srm, rates, trips)


def _ratio(a: float, b: float) -> float:
    """How far apart two rates are, as the larger over the smaller (inf if one is 0)."""
    low, high = sorted((a, b))
    return 1.0 if high == 0 else (math.inf if low == 0 else high / low)


@dataclass(frozen=True)
class Matured:
    """The paired, labeled records of the matured cohorts, in the sequence's order."""

    pairs: pd.DataFrame
    matured_until: str | None  # the last matured cohort
    waiting_from: str | None  # the first cohort still waiting for labels


def _cohorts(rows: pd.DataFrame) -> pd.Series:
    """Each row's cohort: its event day, or the day it was logged (a dataset without time)."""
    return rows["event_day"].fillna(rows["logged_at"].str[:10])


def _newest_cohort(rows: pd.DataFrame) -> str | None:
    return str(_cohorts(rows).max()) if len(rows) else None


def matured_pairs(rows: pd.DataFrame, canary: Canary, key: Sequence[str], target: str) -> Matured:
    """The pairs of the matured days from the canary's first day (see the module's 2.)."""
    cohort = _cohorts(rows)
    complete = rows[target].notna().groupby(cohort).all().sort_index()
    waiting = complete.index[~complete.to_numpy()]
    first_waiting = waiting[0] if len(waiting) else None
    days = (
        complete.index if first_waiting is None else complete.index[complete.index < first_waiting]
    )
    chosen = rows.assign(cohort=cohort)[cohort.isin(days)]
    pairs = paired(chosen, canary).drop_duplicates(list(key))
    pairs = pairs.sort_values(["cohort", "logged_at", "prediction_id"], kind="stable")
    return Matured(pairs, days[-1] if len(days) else None, first_waiting)


def look(
    log: PredictionLog, canary: Canary, params: CanaryParams, key: Sequence[str],
    now: dt.datetime | None = None,
) -> Look:  # fmt: skip
    """Judge `canary` on what the log holds now (see the module docstring)."""
    rows = log.read_answered(canary.started_at, [canary.champion, canary.version])
    guarded = guardrails(rows, canary, key, params.guardrails)
    matured = matured_pairs(rows, canary, key, log.target_column)
    pairs = matured.pairs
    outcome = pairs[log.target_column].to_numpy(dtype=float)
    losses = {
        arm: record_loss(pairs[f"{arm}_p"].to_numpy(float), outcome, params.loss)
        for arm in ("champion", "canary")
    }
    difference = losses["canary"] - losses["champion"]
    comparison = compare(difference, params.alpha, params.planned_pairs, params.min_pairs)
    step_rows = rows[rows["logged_at"] >= canary.stepped_at]
    answered = int((step_rows["arm"] == CANARY_ARM).sum())
    evidence = {
        "step": canary.step, "share": canary.share, "step_records": answered,
        "pairs": comparison.pairs, "loss": params.loss, "verdict": comparison.verdict,
        "mean_difference": _number(comparison.mean),
        "interval": [_number(comparison.low), _number(comparison.high)],
        "matured_until": matured.matured_until, "waiting_from": matured.waiting_from,
        "roc_auc": {arm: _auc(outcome, pairs[f"{arm}_p"]) for arm in ("champion", "canary")},
        "mean_loss": {arm: _number(loss.mean()) if len(loss) else None
                      for arm, loss in losses.items()},
        "traffic_until": _newest_cohort(rows),
        "guardrails": asdict(guarded),
    }  # fmt: skip
    now = now or dt.datetime.now(dt.UTC)
    days = (now - dt.datetime.fromisoformat(canary.started_at)).total_seconds() / 86400
    return decide(
        canary, params, comparison=comparison, guarded=guarded, answered=answered, days=days,
        evidence=evidence,
    )  # fmt: skip


def decide(
    canary: Canary, params: CanaryParams, *, comparison: Comparison, guarded: Guarded,
    answered: int, days: float, evidence: dict[str, Any],
) -> Look:  # fmt: skip
    """The action for this look, in the order of the module docstring's 3."""
    interval = (
        f"loss difference {comparison.mean:+.4f}, interval [{comparison.low:+.4f}, "
        f"{comparison.high:+.4f}] over {comparison.pairs} pairs"
    )
    last = canary.step == len(params.steps) - 1
    if guarded.trips:
        return Look("rollback", "guardrail: " + "; ".join(guarded.trips), evidence)
    if comparison.verdict == "worse":
        return Look("rollback", f"worse than the champion: {interval}", evidence)
    if last and comparison.verdict == "better":
        return Look("promote", f"better than the champion: {interval}", evidence)
    if comparison.pairs >= params.max_pairs or days >= params.max_days:
        return Look(
            "rollback",
            f"no decision after {comparison.pairs} pairs and {days:.1f} days: the champion "
            f"stays ({interval})",
            evidence,
        )
    if not last and answered >= params.min_step_records:
        share = params.steps[canary.step + 1]
        return Look(
            "step",
            f"step {canary.step + 1}: {share:.0%} of traffic; {answered} records answered at "
            f"{canary.share:.0%} with the guardrails clean ({interval})",
            evidence,
            share,
        )
    return Look("hold", f"{comparison.verdict}: {interval}", evidence)


def _number(value: float) -> float | None:
    """A float for JSON: None for the infinite bounds before two pairs."""
    return float(value) if math.isfinite(value) else None


def _auc(outcome: np.ndarray, probability: pd.Series) -> float | None:
    """ROC-AUC on the pairs (None without both classes)."""
    if len(np.unique(outcome)) < 2:
        return None
    return float(roc_auc_score(outcome, probability.to_numpy(float)))
