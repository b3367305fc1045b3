"""The model registry: one registered model, its aliases, the promotion ledger.

`champion` is the served model; `challenger` is the latest registered candidate. Moving an
alias is one MLflow call that replaces it in place (never delete-then-set), so a reader
resolving `models:/<name>@champion` sees the old version or the new one, never none.

Every decision (promotion, rejection, dry run, rollback) is appended to a JSON-lines
ledger, and tagged on the MLflow version it concerns.

Changes are serialised by a lock kept in the MLflow registry itself (`RegistryLock`), so
they serialise across machines too, against a remote tracking server as much as the
embedded SQLite one. A decision is linearizable: the evidence is gathered outside the
lock (it is slow), then, under the lock, the champion is read again; if it moved meanwhile
the challenger is judged again against the new champion, so no challenger ever replaces a
champion it did not face.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import URL

from loopline.core.errors import LooplineError
from loopline.core.params import DateWindow, KeyedSplit, Params, RegistryParams
from loopline.data.datasets.base import Dataset
from loopline.infra.database import create_engine, database_url
from loopline.promotion.rule import Evidence, GateResult, decide, no_fresh_window
from loopline.scoring.registered import TEST_METRIC_TAG, load_version
from loopline.scoring.scorer import CompiledScorer
from loopline.training.tracking import ARRIVALS, window_tag

CHAMPION = "champion"
CHALLENGER = "challenger"
REJUDGE_ATTEMPTS = 3  # a champion that moves this often while judging is an operator's fight
logger = logging.getLogger(__name__)


class RegistryError(LooplineError):
    """A registry operation cannot be done (no champion, unknown version...)."""


class ChampionMovedError(RegistryError):
    """The champion changed between gathering the evidence and deciding."""

    def __init__(self, faced: str | None, current: str | None) -> None:
        super().__init__(f"champion moved from {faced} to {current} while judging")
        self.faced, self.current = faced, current


class Ledger:
    """Append-only JSON lines in a file; each append is fsync'd under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: dict) -> None:
        """Add one entry at the end (whole lines: writers on this machine queue on a flock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self.path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
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


LEDGER_TABLE = sa.Table(
    "ledger", sa.MetaData(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # append order
    sa.Column("entry", sa.Text, nullable=False),  # the decision as JSON
)  # fmt: skip


class TableLedger:
    """The ledger as rows of a database table: one ledger for every machine (team mode)."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url)
        LEDGER_TABLE.metadata.create_all(self.engine)

    def append(self, entry: dict) -> None:
        """Add one entry, committed before this returns."""
        with self.engine.begin() as db:
            db.execute(LEDGER_TABLE.insert(), {"entry": json.dumps(entry, sort_keys=True,
                                                                   default=str)})  # fmt: skip

    def entries(self) -> list[dict]:
        """All entries, oldest first."""
        with self.engine.connect() as db:
            rows = db.scalars(sa.select(LEDGER_TABLE.c.entry).order_by(LEDGER_TABLE.c.seq))
            return [json.loads(row) for row in rows]


def open_ledger(location: str | Path, root: Path = Path()) -> Ledger | TableLedger:
    """`registry.ledger`: a JSON-lines file (relative to `root`), or a database URL."""
    if "://" in str(location):
        return TableLedger(database_url(location))
    return Ledger(root / location)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _actor() -> str:
    try:
        return os.environ.get("LOOPLINE_ACTOR") or getpass.getuser()
    except OSError:  # pragma: no cover - no user database in some containers
        return "unknown"


class RegistryLock:
    """A mutex kept in the MLflow registry: a registered model named `<model>.lock`.

    Creating a registered model is atomic in MLflow's store (the name is its primary key,
    a second create fails with RESOURCE_ALREADY_EXISTS), so the lock works for every
    process that reaches the same tracking server, on any machine. The holder deletes it
    when done. A holder that died leaves it behind: after `lease_s` its lease has expired
    and the next waiter removes it (checking, just before, that it is still the same one).
    The lease must outlast the longest hold (a few MLflow calls), by far.
    """

    OWNER, TOKEN, EXPIRES = "loopline.lock.owner", "loopline.lock.token", "loopline.lock.expires"

    def __init__(
        self, client: MlflowClient, model_name: str, wait_s: float, lease_s: float
    ) -> None:
        self.client = client
        self.name = f"{model_name}.lock"
        self.wait_s, self.lease_s = wait_s, lease_s

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block; raises RegistryError if it stays busy `wait_s`."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        while not self._try_acquire(token):
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"the registry lock {self.name} stayed busy for {self.wait_s:.0f} s "
                    f"(held by {self._holder().get(self.OWNER, 'nobody now')}); try again"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            if self._holder().get(self.TOKEN) == token:
                self.client.delete_registered_model(self.name)

    def _try_acquire(self, token: str) -> bool:
        tags = {
            self.OWNER: f"{_actor()}@{socket.gethostname()} pid {os.getpid()}",
            self.TOKEN: token,
            self.EXPIRES: str(time.time() + self.lease_s),
        }
        try:
            self.client.create_registered_model(
                self.name, tags=tags, description="Held while Loopline moves aliases."
            )
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
            self._break_if_expired()
            return False
        return True

    def _holder(self) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(self.name).tags)
        except MlflowException:
            return {}

    def _break_if_expired(self) -> None:
        holder = self._holder()
        if not holder or float(holder.get(self.EXPIRES, "inf")) > time.time():
            return
        if self._holder().get(self.TOKEN) == holder.get(self.TOKEN):
            logger.warning("removing the expired registry lock of %s", holder.get(self.OWNER))
            with contextlib.suppress(MlflowException):  # another waiter was quicker
                self.client.delete_registered_model(self.name)


class Registry:
    """The registered model named in params.yaml (`registry.model_name`)."""

    def __init__(
        self, params: RegistryParams, client: MlflowClient | None = None, root: Path = Path()
    ) -> None:
        self.params = params
        self.name = params.model_name
        self.client = client or MlflowClient()
        self.ledger = open_ledger(params.ledger, root)
        self.lock = RegistryLock(self.client, self.name, params.lock_wait_s, params.lock_lease_s)

    @classmethod
    def rooted(cls, params: RegistryParams, root: Path) -> Registry:
        """The registry of a params file in `root`: a relative ledger path resolved there."""
        return cls(params, root=root)

    # -- reading ----------------------------------------------------------------------------

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points to, or None if unset (or the model does not exist)."""
        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def window(self, version: str, split: str) -> DateWindow | None:
        """A version's `train`, `valid` or `test` window, from its lineage tags (or None)."""
        tag = self.client.get_model_version(self.name, version).tags.get(window_tag(split))
        return DateWindow.parse(tag) if tag else None

    def newest_judged_day(self) -> dt.date | None:
        """The last day of the test window the latest registered version was judged on.

        Labels up to that day have been used; None before any registration.
        """
        version = self.alias_version(CHALLENGER)
        window = self.window(version, "test") if version is not None else None
        return window.end if window else None

    def newest_judged_arrival(self) -> str | None:
        """The newest arrival time (ISO) the latest registered version was judged on.

        For a dataset without time: labeled arrivals up to then have been used. None
        before any retrain by arrival (the first version is judged on its held-out split).
        """
        version = self.alias_version(CHALLENGER)
        if version is None:
            return None
        tag = self.client.get_model_version(self.name, version).tags.get(window_tag("test"), "")
        return tag.removeprefix(ARRIVALS).split("..")[-1] if tag.startswith(ARRIVALS) else None

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
        with self.lock.held():
            version = mlflow.register_model(model_uri, self.name, tags=tags).version
            self.client.set_model_version_tag(self.name, version, "loopline.run_id", run_id)
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return str(version)

    def record_decision(
        self, version: str, gate: GateResult, dry_run: bool, faced: str | None, reason: str = ""
    ) -> dict:
        """Apply a gate result: move `champion` if it passed (and this is no dry run).

        `faced` is the champion the gate compared against (None: there was none). Under the
        lock the champion is read again; if it is another version now, ChampionMovedError is
        raised and nothing is changed: the caller judges again.
        """
        with self.lock.held():
            previous = self.alias_version(CHAMPION)
            if previous not in (faced, version):
                raise ChampionMovedError(faced, previous)
            promote = gate.passed and not dry_run
            if promote:
                self.client.set_registered_model_alias(self.name, CHAMPION, version)
            action = "dry-run" if dry_run else ("promote" if promote else "reject")
            entry = {
                "time": _now(), "action": action, "version": version, "actor": _actor(),
                "previous_champion": previous, "champion": version if promote else previous,
                "faced": faced, "window": gate.window,
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
        with self.lock.held():
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
        with self.lock.held():
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


def held_out_described(params: Params, rows: int) -> str:
    """The test split of a dataset without time, as the ledger and the card name it."""
    split = params.featurize.split
    if isinstance(split, KeyedSplit):
        return f"newest labeled arrivals {split.judged_arrivals}, {rows:,} rows"
    return f"held-out test split, {rows:,} rows"


def fitted_until(registry: Registry, version: str | None) -> dt.date | None:
    """The last day `version` was fitted or chosen on (its validation window's end)."""
    window = registry.window(version, "valid") if version is not None else None
    return window.end if window else None


def fresh_window(
    test: pd.DataFrame,
    time_column: str,
    challenger_until: dt.date | None,
    champion_until: dt.date | None,
) -> tuple[pd.DataFrame, str]:
    """The test rows after the last day either model was fitted or chosen on, described.

    The challenger's test window is already after its own validation window; a champion
    fitted on later days (a retrain promoted since this checkout's windows were set) cuts
    the window to the days it has not seen.
    """
    days = test[time_column].dt.date
    newest_used = max((d for d in (challenger_until, champion_until) if d), default=None)
    window = test[days > newest_used] if newest_used else test
    if window.empty:
        return window, f"none: both models were fitted or chosen on days up to {newest_used}"
    first, last = window[time_column].min(), window[time_column].max()
    return window, f"{first:%Y-%m-%d}..{last:%Y-%m-%d}, {len(window):,} rows"


def judge_on_recent_window(
    registry: Registry, version: str, params: Params, dataset: Dataset, dry_run: bool
) -> tuple[GateResult, dict]:
    """Apply the promotion rule to `version` on the newest window neither model has used.

    The window is the pipeline's test split (the family was chosen on validation), less
    any days the champion was fitted or chosen on. Both models are scored on it by their
    compiled scorers. If the champion moves while this runs, the challenger is judged
    again against the new one (at most REJUDGE_ATTEMPTS times).
    """
    test = pd.read_parquet(params.paths.features / "examples" / "test.parquet")
    for _ in range(REJUDGE_ATTEMPTS):
        champion = registry.alias_version(CHAMPION)
        if dataset.time_column is None:  # the split kept it from fitting and choosing
            window, described = test, held_out_described(params, len(test))
        else:
            window, described = fresh_window(
                test, dataset.time_column, fitted_until(registry, version),
                fitted_until(registry, None if champion == version else champion),
            )  # fmt: skip
        min_rows = registry.params.min_window_rows
        try:
            if len(window) < min_rows or window[dataset.target_column].nunique() < 2:
                gate = no_fresh_window(described, min_rows)
                return gate, registry.record_decision(version, gate, dry_run, faced=champion)
            evidence = collect_evidence(
                registry, version, champion, window, record_columns=dataset.record_columns(),
                target_column=dataset.target_column, slice_columns=dataset.slice_columns,
            )  # fmt: skip
            return apply_rule(
                registry, version, evidence, seed=params.seed, dry_run=dry_run, faced=champion,
                window=described,
            )  # fmt: skip
        except ChampionMovedError as moved:
            logger.info("%s: judging version %s again", moved, version)
    raise RegistryError(
        f"the champion moved {REJUDGE_ATTEMPTS} times while version {version} was judged; "
        "nothing was changed: judge it again when the registry is quiet"
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
) -> tuple[GateResult, dict]:
    """Decide on `version` with the promotion rule and record the decision.

    `window` describes the rows the evidence was gathered on; `faced` is the champion.
    """
    gate = decide(evidence, registry.params, seed, window=window)
    return gate, registry.record_decision(version, gate, dry_run, faced=faced)
