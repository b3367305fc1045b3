"""The model registry: one registered model, its aliases, the promotion ledger.

`champion` is the served model; `challenger` is the latest registered candidate. Moving an
alias is one MLflow call that replaces it in place (never delete-then-set), so a reader
resolving `models:/<name>@champion` sees the old version or the new one, never none.

Every decision (promotion, rejection, dry run, rollback) is appended to a JSON-lines
ledger, and tagged on the MLflow version it concerns. Changes are serialised by a lock
file, so two promotions cannot interleave.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from loopline.config import Params, RegistryParams
from loopline.datasets.base import Dataset
from loopline.errors import LooplineError
from loopline.promotion import Evidence, GateResult, decide
from loopline.scoring.registered import TEST_METRIC_TAG, load_version
from loopline.scoring.scorer import CompiledScorer

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(LooplineError):
    """A registry operation cannot be done (no champion, unknown version...)."""


class Ledger:
    """Append-only JSON lines; each append is flushed and fsync'd under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger's lock (serialises every registry change)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, entry: dict) -> None:
        """Add one entry at the end (call while holding `locked()`)."""
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self.path.open("a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[dict]:
        """All entries, oldest first (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
        return entries


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _actor() -> str:
    try:
        return os.environ.get("LOOPLINE_ACTOR") or getpass.getuser()
    except OSError:  # pragma: no cover - no user database in some containers
        return "unknown"


class Registry:
    """The registered model named in params.yaml (`registry.model_name`)."""

    def __init__(self, params: RegistryParams, client: MlflowClient | None = None) -> None:
        self.params = params
        self.name = params.model_name
        self.client = client or MlflowClient()
        self.ledger = Ledger(params.ledger)

    @classmethod
    def rooted(cls, params: RegistryParams, root: Path) -> Registry:
        """The registry of a params file in `root`: its relative ledger path resolved there."""
        return cls(params.model_copy(update={"ledger": root / params.ledger}))

    # -- reading ----------------------------------------------------------------------------

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points to, or None if unset (or the model does not exist)."""
        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def model_uri(self, version: str) -> str:
        """MLflow URI of a version (`loopline.scoring.registered` loads it)."""
        return f"models:/{self.name}/{version}"

    def status(self) -> dict[str, Any]:
        """Aliases with their versions, and each version's family and decision tags."""
        status: dict[str, Any] = {"model": self.name, "aliases": {}}
        for alias in (CHAMPION, CHALLENGER):
            version = self.alias_version(alias)
            if version is None:
                status["aliases"][alias] = None
                continue
            tags = self.client.get_model_version(self.name, version).tags
            status["aliases"][alias] = {
                "version": version,
                "family": tags.get("loopline.family"),
                "decision": tags.get("loopline.decision"),
                "test_roc_auc": tags.get(f"{TEST_METRIC_TAG}roc_auc"),
            }
        return status

    # -- changing -------------------------------------------------------------------------

    def register(self, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
        """Register a logged model as a new version and alias it `challenger`."""
        with self.ledger.locked():
            version = mlflow.register_model(model_uri, self.name, tags=tags).version
            self.client.set_model_version_tag(self.name, version, "loopline.run_id", run_id)
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return str(version)

    def record_decision(
        self, version: str, gate: GateResult, dry_run: bool, reason: str = ""
    ) -> dict:
        """Apply a gate result: move `champion` if it passed (and this is no dry run)."""
        with self.ledger.locked():
            previous = self.alias_version(CHAMPION)
            promote = gate.passed and not dry_run
            if promote:
                self.client.set_registered_model_alias(self.name, CHAMPION, version)
            action = "dry-run" if dry_run else ("promote" if promote else "reject")
            entry = {
                "time": _now(), "action": action, "version": version, "actor": _actor(),
                "previous_champion": previous, "champion": version if promote else previous,
                "reason": reason or ("gate passed" if gate.passed else "gate failed"),
                "checks": gate.reasons(), "challenger_scores": gate.challenger,
                "champion_scores": gate.champion, "difference": gate.difference,
            }  # fmt: skip
            self.ledger.append(entry)
            self._tag(version, action, entry["reason"], gate.reasons())
        return entry

    def rollback(self, reason: str) -> dict:
        """Point `champion` back at the version that was champion before the current one.

        "Before" follows promotions only, so repeated rollbacks walk back through history
        (v3 -> v2 -> v1) instead of toggling between two versions.
        """
        with self.ledger.locked():
            current = self.alias_version(CHAMPION)
            if current is None:
                raise RegistryError(f"{self.name} has no champion to roll back")
            promotions = [
                entry
                for entry in self.ledger.entries()
                if entry["action"] == "promote" and entry["version"] == current
            ]
            previous = promotions[-1]["previous_champion"] if promotions else None
            if previous is None:
                raise RegistryError(
                    f"version {current} is the first champion of {self.name}: "
                    "nothing to roll back to"
                )
            self.client.set_registered_model_alias(self.name, CHAMPION, previous)
            entry = {
                "time": _now(), "action": "rollback", "version": previous, "actor": _actor(),
                "previous_champion": current, "champion": previous, "reason": reason,
            }  # fmt: skip
            self.ledger.append(entry)
            self._tag(previous, "rollback", reason, [])
        return entry

    def force_promote(self, version: str, reason: str) -> dict:
        """Make `version` champion without the gate (recorded as such, with its reason)."""
        self.client.get_model_version(self.name, version)  # raises if unknown
        with self.ledger.locked():
            previous = self.alias_version(CHAMPION)
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
            entry = {
                "time": _now(), "action": "promote", "version": version, "actor": _actor(),
                "previous_champion": previous, "champion": version,
                "reason": f"forced: {reason}", "checks": [],
            }  # fmt: skip
            self.ledger.append(entry)
            self._tag(version, "promote", entry["reason"], [])
        return entry

    def _tag(self, version: str, decision: str, reason: str, checks: list[str]) -> None:
        tags = {
            "loopline.decision": decision,
            "loopline.decided_at": _now(),
            "loopline.reason": reason[:4000],
            "loopline.checks": "\n".join(checks)[:4000],
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)


# -- gathering the evidence the rule needs -------------------------------------------------------


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
    recent: pd.DataFrame,
    *,
    record_columns: list[str],
    target_column: str,
    slice_columns: tuple[str, ...],
) -> Evidence:
    """Score the challenger and the current champion, as served, on the same rows."""
    records = recent[record_columns]
    challenger_version = load_version(registry, version)
    challenger = challenger_version.scorer
    champion_version = registry.alias_version(CHAMPION)
    champion = None
    if champion_version is not None and champion_version != version:
        champion_scorer = load_version(registry, champion_version).scorer
        champion = champion_scorer.score_frame(records)["probability"].to_numpy()
    return Evidence(
        labels=recent[target_column].to_numpy(),
        challenger=challenger.score_frame(records)["probability"].to_numpy(),
        champion=champion,
        slices=recent[list(slice_columns)].reset_index(drop=True),
        latency_ms_per_1000=latency_ms_per_1000(challenger, records),
        size_mb=challenger_version.size_mb,
    )


def judge_on_recent_window(
    registry: Registry, version: str, params: Params, dataset: Dataset, dry_run: bool
) -> tuple[GateResult, dict]:
    """Apply the promotion rule to `version` on the most recent labeled window.

    The window is the pipeline's test split (the newest labeled days it has); the
    challenger and the current champion are both scored on it by their compiled scorers.
    """
    recent = pd.read_parquet(params.paths.features / "examples" / "test.parquet")
    evidence = collect_evidence(
        registry, version, recent, record_columns=dataset.record_columns(),
        target_column=dataset.target_column, slice_columns=dataset.slice_columns,
    )  # fmt: skip
    return apply_rule(registry, version, evidence, params.seed, dry_run)


def apply_rule(
    registry: Registry, version: str, evidence: Evidence, seed: int, dry_run: bool
) -> tuple[GateResult, dict]:
    """Decide on `version` with the promotion rule and record the decision."""
    gate = decide(evidence, registry.params, seed)
    return gate, registry.record_decision(version, gate, dry_run)
