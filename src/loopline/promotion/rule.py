"""The promotion rule: does a challenger deserve to replace the champion?

Pure functions over predictions already made, so the rule is testable without MLflow.
A challenger is promoted only if every check passes:
  * window:    the newest labeled window that neither model was fitted or chosen on has
               at least `min_window_rows` rows with both classes (else nothing is scored);
  * floors:    each configured metric is at least its absolute floor, and PR-AUC is at
               least `min_pr_auc_lift` times the window's positive rate (a random
               ranking scores exactly that rate, which moves with the season);
  * beats:     on the same recent labeled window it beats the champion's primary metric by
               `margin` (a paired bootstrap interval of the difference is reported);
  * slices:    no slice (e.g. one carrier, one origin airport) with enough rows loses more
               than `slice_max_regression` against the champion;
  * latency:   scoring 1,000 records takes at most the budget;
  * size:      the logged model is at most the budget.
With no champion yet, `beats` and `slices` pass by definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from loopline.core.params import RegistryParams
from loopline.training.metrics import RANKING_METRICS, paired_bootstrap


@dataclass(frozen=True)
class Check:
    """One named check of the rule, with a sentence saying why it passed or failed."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    """All checks, the overall verdict and the numbers behind them."""

    passed: bool
    checks: list[Check]
    challenger: dict[str, float]
    champion: dict[str, float] | None
    difference: dict[str, float] | None = None
    slices: list[dict] = field(default_factory=list)
    window: str = ""  # the rows judged on: "first..last, N rows" (or why there were none)

    def reasons(self) -> list[str]:
        """One line per check, failures first."""
        ordered = sorted(self.checks, key=lambda c: c.passed)
        return [f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in ordered]

    def as_dict(self) -> dict:
        """JSON-friendly form (for the ledger, tags and the decision file)."""
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """What the rule looks at: labels, both models' probabilities on the same rows, costs."""

    labels: np.ndarray
    challenger: np.ndarray
    champion: np.ndarray | None
    slices: pd.DataFrame  # one column per slicing attribute, aligned with labels
    latency_ms_per_1000: float
    size_mb: float


def ranking_scores(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """ROC-AUC and PR-AUC of one model."""
    return {name: round(float(fn(labels, proba)), 6) for name, fn in RANKING_METRICS.items()}


def slice_regressions(evidence: Evidence, params: RegistryParams) -> list[dict]:
    """Per slice with enough rows and both classes: champion minus challenger metric."""
    metric = RANKING_METRICS[params.primary_metric]
    rows = []
    for column in evidence.slices.columns:
        for value, index in evidence.slices.groupby(column).indices.items():
            labels = evidence.labels[index]
            if len(index) < params.slice_min_rows or labels.min() == labels.max():
                continue
            challenger = metric(labels, evidence.challenger[index])
            champion = metric(labels, evidence.champion[index])
            rows.append({
                "slice": f"{column}={value}", "rows": len(index),
                "challenger": round(float(challenger), 4), "champion": round(float(champion), 4),
                "regression": round(float(champion - challenger), 4),
            })  # fmt: skip
    return sorted(rows, key=lambda row: row["regression"], reverse=True)


def no_fresh_window(described: str, min_rows: int) -> GateResult:
    """The verdict when there is no window fresh enough to judge on: not promoted."""
    detail = f"{described} (at least {min_rows} rows with both classes needed)"
    return GateResult(
        False, [Check("window", False, detail)], challenger={}, champion=None, window=described
    )


def floors_check(challenger: dict, labels: np.ndarray, params: RegistryParams) -> Check:
    """Every metric at or above its floor, and PR-AUC a multiple of the positive rate."""
    below = {m: challenger[m] for m, floor in params.floors.items() if challenger[m] < floor}
    floors = ", ".join(f"{m} {challenger[m]:.4f} >= {f}" for m, f in params.floors.items())
    positive_rate = float(np.mean(labels))
    lift = challenger["pr_auc"] / positive_rate if positive_rate > 0 else 0.0
    if lift < params.min_pr_auc_lift:
        below["pr_auc_lift"] = round(lift, 3)
    floors += (
        f", pr_auc lift {lift:.2f}x positive rate {positive_rate:.3f} >= {params.min_pr_auc_lift}x"
    )
    detail = f"{floors or 'none configured'}" + (f"; below: {below}" if below else "")
    return Check("floors", not below, detail)


def beats_champion_check(
    challenger: dict, champion: dict, difference: dict, params: RegistryParams
) -> Check:
    """The paired bootstrap difference in the primary metric at least the margin."""
    primary = params.primary_metric
    return Check(
        "beats champion", difference["difference"] >= params.margin,
        f"{primary} {challenger[primary]:.4f} vs {champion[primary]:.4f}: difference "
        f"{difference['difference']:+.4f} ({params.confidence:.0%} interval "
        f"{difference['low']:+.4f}..{difference['high']:+.4f}), margin {params.margin}",
    )  # fmt: skip


def slices_check(slices: list[dict], params: RegistryParams) -> Check:
    """No slice regressed by more than the limit against the champion (worst first)."""
    worst = [s for s in slices if s["regression"] > params.slice_max_regression]
    detail = "no slice large enough"
    if slices:
        first = slices[0]
        detail = f"{len(slices)} slices compared, worst {first['slice']} {first['regression']:+.4f}"
    return Check(
        "slices", not worst,
        detail + (f"; regressed: {[s['slice'] for s in worst]}" if worst else ""),
    )  # fmt: skip


def budget_checks(evidence: Evidence, params: RegistryParams) -> list[Check]:
    """Scoring latency and model size within their budgets."""
    budget = params.latency_budget_ms_per_1000
    return [
        Check(
            "latency", evidence.latency_ms_per_1000 <= budget,
            f"{evidence.latency_ms_per_1000:.1f} ms per 1,000 rows (budget {budget})",
        ),
        Check(
            "size", evidence.size_mb <= params.size_budget_mb,
            f"{evidence.size_mb:.2f} MB (budget {params.size_budget_mb})",
        ),
    ]  # fmt: skip


def decide(
    evidence: Evidence, params: RegistryParams, seed: int, window: str = "given"
) -> GateResult:
    """Apply every check of the rule (see the module docstring) on `window`'s rows."""
    challenger = ranking_scores(evidence.labels, evidence.challenger)
    checks = [Check("window", True, window), floors_check(challenger, evidence.labels, params)]
    champion = difference = None
    slices: list[dict] = []
    if evidence.champion is None:
        checks.append(Check("beats champion", True, "no champion yet"))
        checks.append(Check("slices", True, "no champion to compare slices with"))
    else:
        champion = ranking_scores(evidence.labels, evidence.champion)
        difference = paired_bootstrap(
            evidence.labels, evidence.challenger, evidence.champion,
            metric=RANKING_METRICS[params.primary_metric], samples=params.bootstrap_samples,
            confidence=params.confidence, seed=seed,
        )  # fmt: skip
        checks.append(beats_champion_check(challenger, champion, difference, params))
        slices = slice_regressions(evidence, params)
        checks.append(slices_check(slices, params))
    checks += budget_checks(evidence, params)
    return GateResult(
        passed=all(c.passed for c in checks), checks=checks, challenger=challenger,
        champion=champion, difference=difference, slices=slices, window=window,
    )  # fmt: skip
