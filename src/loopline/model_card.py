"""Model cards: a one-page description of every registered version, in Markdown."""

from __future__ import annotations

from dataclasses import dataclass

from loopline.promotion import GateResult

INTENDED_USE = (
    "Ranking and flagging scheduled departures from EWR, JFK and LGA by their risk of "
    "arriving 15+ minutes late (or not at all), a few hours before departure, when the "
    "schedule and an hourly weather forecast at the origin are known. Suitable for "
    "prioritising attention (crew, gate, passenger notices), not for automated decisions "
    "about individual passengers."
)
LIMITATIONS = (
    "Trained on 2013 flights from three New York airports only; other airports, years or "
    "operating regimes are out of distribution. Observed weather stands in for the forecast "
    "in training, so live accuracy with real forecasts will be lower. The late rate moves "
    "strongly with the season (13% in September to 32% in December): probabilities drift "
    "with it, which the monitoring loop watches. Tail numbers missing from the planes "
    "registry (about 16% of flights) get no aircraft features."
)


@dataclass(frozen=True)
class CardFacts:
    """What a card states about one registered version."""

    model_name: str
    version: str
    family: str
    tags: dict[str, str]
    test_metrics: dict[str, float]
    decision: dict
    gate: GateResult


def render_card(facts: CardFacts) -> str:
    """The model card as Markdown."""
    t, m, gate = facts.tags, facts.test_metrics, facts.gate
    metric_rows = "\n".join(
        f"| {name} | {m[name]:.4f} |"
        for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall", "f1")
    )
    slice_rows = (
        "\n".join(
            f"| {s['slice']} | {s['rows']} | {s['challenger']:.4f} | {s['champion']:.4f} "
            f"| {s['regression']:+.4f} |"
            for s in gate.slices[:12]
        )
        or "| (no champion to compare with) | | | | |"
    )
    checks = "\n".join(f"- {line}" for line in gate.reasons())
    return f"""# Model card: {facts.model_name} version {facts.version}

**Family:** {facts.family}  \\
**Decision:** {facts.decision["action"]} ({facts.decision["reason"]}), {facts.decision["time"]}  \\
**Champion after this decision:** version {facts.decision["champion"]}

## Data
- Training window {t.get("loopline.train_window")},
  validation {t.get("loopline.valid_window")}, test {t.get("loopline.test_window")}
- Raw data version (data.dvc): `{t.get("loopline.data_md5")}`
- Code: `{t.get("loopline.git_commit")}`, params hash `{t.get("loopline.params_hash")}`

## Test-window metrics (threshold {m["threshold"]:.3f}, chosen on validation)
| metric | value |
|---|---:|
{metric_rows}

Rows: {m["rows"]}, late rate {m["positive_rate"]:.3f}.

## Promotion gate
{checks}

## Slices (primary metric, recent window)
| slice | rows | this version | champion | regression |
|---|---:|---:|---:|---:|
{slice_rows}

## Intended use
{INTENDED_USE}

## Limitations
{LIMITATIONS}
"""
