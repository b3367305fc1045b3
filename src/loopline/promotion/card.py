"""Model cards: a one-page description of every registered version, in Markdown."""

from __future__ import annotations

from dataclasses import dataclass

from loopline.data.datasets.base import Wording
from loopline.promotion.rule import GateResult


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
    wording: Wording  # the dataset's words: target, label names, use and limitations


def render_card(facts: CardFacts) -> str:
    """The model card as Markdown."""
    t, m, gate, words = facts.tags, facts.test_metrics, facts.gate, facts.wording
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

**Predicts:** {words.target}. {words.definition}  \\
**Family:** {facts.family}  \\
**Decision:** {facts.decision["action"]} ({facts.decision["reason"]}), {facts.decision["time"]}  \\
**Champion after this decision:** version {facts.decision["champion"]}

## Data
- Split: train {t.get("loopline.train_window")},
  validation {t.get("loopline.valid_window")}, test {t.get("loopline.test_window")}
- Raw data version (DVC): `{t.get("loopline.data_md5")}`
- Code: `{t.get("loopline.git_commit")}`, params hash `{t.get("loopline.params_hash")}`

## Test metrics (threshold {m["threshold"]:.3f}, chosen on validation)
| metric | value |
|---|---:|
{metric_rows}

Rows: {m["rows"]}, {words.positive} rate {m["positive_rate"]:.3f}.

## Promotion gate
{checks}

## Slices (primary metric, recent window)
| slice | rows | this version | champion | regression |
|---|---:|---:|---:|---:|
{slice_rows}

## Intended use
{words.intended_use}

## Limitations
{words.limitations}
"""
