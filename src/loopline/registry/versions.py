"""The registered model: its versions, their tags, the aliases and the promotion ledger.

`champion` is the served model; `challenger` is the latest registered candidate. Moving an
alias is one MLflow call that replaces it in place (never delete-then-set), so a reader
resolving `models:/<name>@champion` sees the old version or the new one, never none.

Every decision (promotion, rejection, dry run, rollback) is appended to the ledger
(`loopline.infra.ledger`) and tagged on the MLflow version it concerns.

Changes are serialised by a lock kept in the MLflow registry itself (`RegistryLock`), so
they serialise across machines too, against a remote tracking server as much as the
embedded SQLite one. A decision is linearizable: the evidence is gathered outside the
lock (it is slow: `loopline.promotion.gate`), then, under the lock, the champion is read
again; if it moved meanwhile the caller judges the challenger again against the new
champion, so no challenger ever replaces a champion it did not face.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from loopline.core import tags
from loopline.core.params import RegistryParams
from loopline.infra.ledger import Ledger, TableLedger
from loopline.registry.canary import Canary
from loopline.registry.lock import RegistryError, RegistryLock, actor

CHAMPION = "champion"
CHALLENGER = "challenger"
CanaryAction = Literal["hold", "step", "promote", "rollback"]


class ChampionMovedError(RegistryError):
    """The champion changed between gathering the evidence and deciding."""

    def __init__(self, faced: str | None, current: str | None) -> None:
        super().__init__(f"champion moved from {faced} to {current} while judging")
        self.faced, self.current = faced, current


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _entry(
    action: str, version: str, previous: str | None, champion: str | None, reason: str, **more: Any
) -> dict[str, Any]:
    """One ledger entry: what was done to which version, the champion before and after."""
    return {
        "time": _now(), "action": action, "version": version, "actor": actor(),
        "previous_champion": previous, "champion": champion, "reason": reason, **more,
    }  # fmt: skip


class Registry:
    """The registered model named in params.yaml (`registry.model_name`).

    MLflow's tracking and registry URIs must be set first (`Workspace.registry` does it).
    """

    def __init__(
        self,
        params: RegistryParams,
        ledger: Ledger | TableLedger,
        client: MlflowClient | None = None,
    ) -> None:
        self.params = params
        self.name = params.model_name
        self.client = client or MlflowClient()
        self.ledger = ledger
        self.lock = RegistryLock(self.client, self.name, params.lock_wait_s, params.lock_lease_s)

    # -- reading ----------------------------------------------------------------------------

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points to, or None if unset (or the model does not exist)."""
        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def version_tags(self, version: str | None) -> dict[str, str]:
        """A version's tags (empty for None)."""
        if version is None:
            return {}
        return dict(self.client.get_model_version(self.name, version).tags)

    def tag(self, version: str | None, name: str) -> str | None:
        """One tag of a version (None if the version or the tag is missing)."""
        return self.version_tags(version).get(name)

    def model_uri(self, version: str) -> str:
        """MLflow URI of a version (`loopline.scoring.registered` loads it)."""
        return f"models:/{self.name}/{version}"

    def latest_version(self) -> str | None:
        """The newest registered version number, or None before the first."""
        found = self.client.search_model_versions(f"name='{self.name}'")
        return str(max(int(v.version) for v in found)) if found else None

    def ledger_champions(self) -> list[str]:
        """The good champions: each version the ledger recorded as champion, oldest first.

        A version is recorded so when it is promoted (judged or forced) or rolled back to.
        """
        return [
            entry["champion"]
            for entry in self.ledger.entries()
            if entry["action"] in ("promote", "rollback") and entry["champion"] is not None
        ]

    def ledger_champion(self) -> str | None:
        """The champion the ledger's last decision left (None before the first)."""
        champions = self.ledger_champions()
        return champions[-1] if champions else None

    def canary(self) -> Canary | None:
        """The running canary (`loopline.registry.canary`), or None."""
        try:
            found = self.client.get_registered_model(self.name).tags.get(tags.CANARY)
        except MlflowException:  # no such model yet
            return None
        return Canary.from_json(found) if found else None

    def status(self) -> dict[str, Any]:
        """Aliases with their versions, and each version's family and decision tags.

        `ledger_champion` is the champion the ledger's last decision left: when the alias
        points elsewhere, it was moved outside Loopline. `canary` is the running canary and
        `canary_last_look` its latest ledger entry (its start, or the last look).
        """
        canary = self.canary()
        looks = [e for e in self.ledger.entries() if canary and e["version"] == canary.version
                 and e["action"].startswith("canary-")]  # fmt: skip
        status: dict[str, Any] = {
            "model": self.name, "aliases": {}, "ledger_champion": self.ledger_champion(),
            "canary": asdict(canary) if canary else None,
            "canary_last_look": looks[-1] if looks else None,
        }  # fmt: skip
        for alias in (CHAMPION, CHALLENGER):
            version = self.alias_version(alias)
            if version is None:
                status["aliases"][alias] = None
                continue
            found = self.version_tags(version)
            status["aliases"][alias] = {
                "version": version,
                "family": found.get(tags.FAMILY),
                "decision": found.get(tags.DECISION),
                "test_roc_auc": found.get(f"{tags.TEST_METRIC}roc_auc"),
            }
        return status

    # -- changing -------------------------------------------------------------------------

    def register(self, model_uri: str, run_id: str, version_tags: Mapping[str, str]) -> str:
        """Register a logged model as a new version and alias it `challenger`."""
        with self.lock.held():
            version = mlflow.register_model(model_uri, self.name, tags=dict(version_tags)).version
            self.client.set_model_version_tag(self.name, version, tags.RUN_ID, run_id)
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return str(version)

    def record_decision(
        self,
        version: str,
        *,
        passed: bool,
        dry_run: bool,
        faced: str | None,
        evidence: Mapping[str, Any],
        reason: str = "",
    ) -> dict[str, Any]:
        """Apply a gate's verdict: move `champion` if it passed (and this is no dry run).

        `faced` is the champion alias's version when judging began (None: there was none);
        `evidence` joins the ledger entry as it is (its `checks` are the gate's lines, and
        `judged_against` names the version compared when `faced` could not be loaded).
        Under the lock the champion is read again; if it is another version now,
        ChampionMovedError is raised and nothing is changed: the caller judges again.
        """
        with self.lock.held():
            previous = self.alias_version(CHAMPION)
            if previous not in (faced, version):
                raise ChampionMovedError(faced, previous)
            promote = passed and not dry_run
            if promote:
                self.client.set_registered_model_alias(self.name, CHAMPION, version)
            action = "dry-run" if dry_run else ("promote" if promote else "reject")
            reason = reason or ("gate passed" if passed else "gate failed")
            champion = version if promote else previous
            entry = _entry(action, version, previous, champion, reason, faced=faced, **evidence)
            self.ledger.append(entry)
            self._tag(version, action, entry["reason"], entry.get("checks", []))
        return entry

    def rollback(self, reason: str) -> dict[str, Any]:
        """Point `champion` back at the last version the ledger recorded as a good champion.

        If the alias was moved outside Loopline (the MLflow UI lets anyone), that is the
        champion the ledger's last decision left. Otherwise it is the one that was champion
        before the current one; "before" follows promotions only, so repeated rollbacks
        walk back through history (v3 -> v2 -> v1) instead of toggling between two.
        """
        with self.lock.held():
            current = self.alias_version(CHAMPION)
            if current is None:
                raise RegistryError(f"{self.name} has no champion to roll back")
            recorded = self.ledger_champion()
            promotions = [
                entry
                for entry in self.ledger.entries()
                if entry["action"] == "promote" and entry["version"] == current
            ]
            if recorded is not None and recorded != current:
                previous = recorded  # the alias drifted: back to what the ledger decided
                reason = f"{reason} (the alias had been moved outside Loopline)"
            else:
                previous = promotions[-1]["previous_champion"] if promotions else None
            if previous is None:
                raise RegistryError(
                    f"version {current} is the first champion of {self.name}: "
                    "nothing to roll back to"
                )
            self.client.set_registered_model_alias(self.name, CHAMPION, previous)
            entry = _entry("rollback", previous, current, previous, reason)
            self.ledger.append(entry)
            self._tag(previous, "rollback", reason, [])
        return entry

    def force_promote(self, version: str, reason: str) -> dict[str, Any]:
        """Make `version` champion without the gate (recorded as such, with its reason)."""
        self.client.get_model_version(self.name, version)  # raises if unknown
        with self.lock.held():
            previous = self.alias_version(CHAMPION)
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
            entry = _entry("promote", version, previous, version, f"forced: {reason}", checks=[])
            self.ledger.append(entry)
            self._tag(version, "promote", entry["reason"], [])
        return entry

    def start_canary(
        self, version: str, *, faced: str | None, share: float, reason: str,
        evidence: Mapping[str, Any],
    ) -> dict[str, Any]:  # fmt: skip
        """Send `version` into a canary answering `share` of records, facing `faced`.

        `faced` is the champion when the gate judged `version`; under the lock it is read
        again (ChampionMovedError if it moved, as in `record_decision`). A canary already
        running leaves traffic: the newer challenger takes its place, and the entry says so.
        """
        with self.lock.held():
            previous = self.alias_version(CHAMPION)
            if previous != faced:
                raise ChampionMovedError(faced, previous)
            if previous is None:
                raise RegistryError(f"{self.name} has no champion for a canary to face")
            replaced = self.canary()
            now = _now()
            canary = Canary(version, previous, 0, share, now, now)
            self._set_canary(canary)
            entry = _entry(
                "canary-start", version, previous, previous, reason, faced=faced,
                canary=asdict(canary), replaced=replaced.version if replaced else None,
                **evidence,
            )  # fmt: skip
            self.ledger.append(entry)
            self._tag(version, "canary-start", reason, list(evidence.get("checks", [])))
        return entry

    def decide_canary(
        self, judged: Canary, action: CanaryAction, reason: str, evidence: Mapping[str, Any],
        share: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Apply a judgement of the running canary `judged`; the ledger entry it made.

        hold: it stays as it is; step: it moves to its next step, answering `share`;
        promote: `champion` moves to it and it leaves traffic; rollback: it leaves traffic,
        the champion stays. Under the lock the canary is read again: if it is no longer
        `judged` (ended, replaced or stepped meanwhile), RegistryError and nothing changes;
        a promotion whose champion moved meanwhile raises ChampionMovedError.
        """
        with self.lock.held():
            if self.canary() != judged:
                raise RegistryError(
                    f"the canary of version {judged.version} changed while it was judged"
                )
            champion = previous = self.alias_version(CHAMPION)
            canary = judged
            if action == "step":
                if share is None:
                    raise RegistryError("a canary step needs the share it moves to")
                canary = judged.at_step(judged.step + 1, share, _now())
                self._set_canary(canary)
            elif action == "promote":
                if previous != judged.champion:
                    raise ChampionMovedError(judged.champion, previous)
                self.client.set_registered_model_alias(self.name, CHAMPION, judged.version)
                champion = judged.version
            if action in ("promote", "rollback"):
                self.client.delete_registered_model_tag(self.name, tags.CANARY)
            name = "promote" if action == "promote" else f"canary-{action}"
            entry = _entry(
                name, judged.version, previous, champion, reason, canary=asdict(canary),
                **evidence,
            )  # fmt: skip
            self.ledger.append(entry)
            self._tag(judged.version, name, reason, [])
        return entry

    def _set_canary(self, canary: Canary) -> None:
        self.client.set_registered_model_tag(self.name, tags.CANARY, canary.to_json())

    def _tag(self, version: str, decision: str, reason: str, checks: list[str]) -> None:
        values = {
            tags.DECISION: decision,
            tags.DECIDED_AT: _now(),
            tags.REASON: reason[:4000],
            tags.CHECKS: "\n".join(checks)[:4000],
        }
        for key, value in values.items():
            self.client.set_model_version_tag(self.name, version, key, value)
