"""The promotion gate: gather the evidence on the freshest window, apply the rule, record it.

The window is the pipeline's test split (the family was chosen on validation), less any
rows the champion was fitted or chosen on (the time axis decides which those are). Both
models are scored on it as they are served, by their compiled scorers. If the champion
moves while this runs, the challenger is judged again against the new one (at most
`REJUDGE_ATTEMPTS` times), so no challenger replaces a champion it did not face.

A champion alias can point at a version that cannot be served (moved outside Loopline to
a version without a compiled scorer): then the challenger is judged against the last good
champion the ledger recorded (`comparable_champion`), and the ledger says so.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from loopline.core import tags
from loopline.core.params import CanaryParams
from loopline.promotion.audit import unservable
from loopline.promotion.rule import Evidence, GateResult, decide, no_fresh_window
from loopline.registry.lock import RegistryError
from loopline.registry.versions import CHAMPION, ChampionMovedError, Registry
from loopline.scoring.registered import load_version
from loopline.scoring.scorer import CompiledScorer
from loopline.workspace import Workspace

REJUDGE_ATTEMPTS = 3  # a champion that moves this often while judging is an operator's fight
log = logging.getLogger(__name__)


def latency_ms_per_1000(scorer: CompiledScorer, records: pd.DataFrame, repeats: int = 5) -> float:
    """Median wall time of scoring 1,000 records (after one warm-up call)."""
    batch = records.head(1000)
    scorer.score_frame(batch)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        scorer.score_frame(batch)
        timings.append((time.perf_counter() - started) * 1000 * 1000 / len(batch))
    return float(np.median(timings))


def collect_evidence(
    registry: Registry,
    version: str,
    champion_version: str | None,
    window: pd.DataFrame,
    *,
    record_columns: list[str],
    target_column: str,
    slice_columns: tuple[str, ...],
) -> Evidence:
    """Score the challenger and `champion_version`, as served, on the same rows."""
    records = window[record_columns]
    challenger_version = load_version(registry, version)
    challenger = challenger_version.scorer
    champion = None
    if champion_version is not None and champion_version != version:
        champion_scorer = load_version(registry, champion_version).scorer
        champion = champion_scorer.score_frame(records)["probability"].to_numpy()
    return Evidence(
        labels=window[target_column].to_numpy(),
        challenger=challenger.score_frame(records)["probability"].to_numpy(),
        champion=champion,
        slices=window[list(slice_columns)].reset_index(drop=True),
        latency_ms_per_1000=latency_ms_per_1000(challenger, records),
        size_mb=challenger_version.size_mb,
    )


def ledger_evidence(gate: GateResult) -> dict:
    """What the ledger keeps of a verdict: its window, checks (as read, and as fields), scores."""
    return {
        "window": gate.window, "checks": gate.reasons(),
        "check_results": [
            {"name": c.name, "passed": c.passed, "detail": c.detail} for c in gate.checks
        ],
        "challenger_scores": gate.challenger, "champion_scores": gate.champion,
        "difference": gate.difference,
    }  # fmt: skip


def comparable_champion(
    registry: Registry, champion: str | None, version: str
) -> tuple[str | None, dict]:
    """The version to judge `version` against, and what the ledger should note about it.

    That is the champion, if it can be loaded as the service loads it; otherwise the newest
    version the ledger recorded as a good champion that can (None: judged as the first).
    """
    if champion is None or champion == version:
        return champion, {}
    refused = unservable(registry, champion)
    if refused is None:
        return champion, {}
    good = next(
        (
            good
            for good in reversed(registry.ledger_champions())
            if good not in (champion, version) and unservable(registry, good) is None
        ),
        None,
    )
    log.warning("champion version %s cannot be served (%s): judging against %s",
                champion, refused, good)  # fmt: skip
    return good, {"judged_against": good, "unservable_champion": refused}


def record(
    registry: Registry,
    version: str,
    gate: GateResult,
    *,
    dry_run: bool,
    faced: str | None,
    notes: dict | None = None,
    canary: CanaryParams | None = None,
) -> dict:
    """Apply `gate` to the registry; the ledger entry.

    If it passed, `champion` moves to `version`, or with `canary` settings (and a champion
    to face) `version` enters a canary at the first step's share instead.
    """
    evidence = ledger_evidence(gate) | (notes or {})
    if canary is not None and gate.passed and not dry_run and faced is not None:
        share = canary.steps[0]
        return registry.start_canary(
            version, faced=faced, share=share, evidence=evidence,
            reason=f"gate passed: a canary answers {share:.0%} of traffic first",
        )  # fmt: skip
    return registry.record_decision(
        version, passed=gate.passed, dry_run=dry_run, faced=faced, evidence=evidence
    )


def apply_rule(
    registry: Registry,
    version: str,
    evidence: Evidence,
    *,
    seed: int,
    dry_run: bool,
    faced: str | None,
    window: str = "given",
    notes: dict | None = None,
    canary: CanaryParams | None = None,
) -> tuple[GateResult, dict]:
    """Decide on `version` with the promotion rule and record the decision.

    `window` describes the rows the evidence was gathered on; `faced` is the champion;
    `notes` join the ledger entry (see `comparable_champion`); `canary`: see `record`.
    """
    gate = decide(evidence, registry.params, seed, window=window)
    return gate, record(
        registry, version, gate, dry_run=dry_run, faced=faced, notes=notes, canary=canary
    )


def judge_on_recent_window(
    workspace: Workspace, version: str, dry_run: bool, canary: CanaryParams | None = None
) -> tuple[GateResult, dict]:
    """Apply the promotion rule to `version` on the newest window neither model has used.

    With `canary` settings a version that passes enters a canary (`record`).
    """
    registry, dataset, params = workspace.registry, workspace.dataset, workspace.params
    test = pd.read_parquet(workspace.layout.examples("test"))
    min_rows = params.registry.min_window_rows
    for _ in range(REJUDGE_ATTEMPTS):
        champion = registry.alias_version(CHAMPION)
        against, notes = comparable_champion(registry, champion, version)
        window, described = workspace.axis.gate_window(
            test, params, registry.tag(version, tags.window("valid")),
            registry.tag(None if against == version else against, tags.window("valid")),
        )  # fmt: skip
        try:
            if len(window) < min_rows or window[dataset.target_column].nunique() < 2:
                gate = no_fresh_window(described, min_rows)
                return gate, record(
                    registry, version, gate, dry_run=dry_run, faced=champion, notes=notes
                )
            evidence = collect_evidence(
                registry, version, against, window, record_columns=dataset.record_columns(),
                target_column=dataset.target_column, slice_columns=dataset.slice_columns,
            )  # fmt: skip
            return apply_rule(
                registry, version, evidence, seed=params.seed, dry_run=dry_run,
                faced=champion, window=described, notes=notes, canary=canary,
            )  # fmt: skip
        except ChampionMovedError as moved:
            log.info("%s: judging version %s again", moved, version)
    raise RegistryError(
        f"the champion moved {REJUDGE_ATTEMPTS} times while version {version} was judged; "
        "nothing was changed: judge it again when the registry is quiet"
    )
