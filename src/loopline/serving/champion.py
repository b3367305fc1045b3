"""The served models: the registry's champion, and a canary or shadow challenger beside it.

`ChampionHolder.refresh()` resolves the aliases and the registry's running canary
(`loopline.registry.canary`); when one points at a new version, that version's compiled
scorer is loaded first (`loopline.scoring.registered`) and swapped in afterwards by
replacing one reference. A request takes a snapshot of the reference when it starts, so
requests in flight finish on the models they began with and none fails during a swap. A
background thread calls `refresh()` every `poll_seconds`. A version that cannot be loaded
(no compiled scorer, a damaged file) is refused once, with the reason logged and kept in
`refused`; the current model goes on serving.

Beside the champion, one challenger is scored on every record: the canary's version while
a canary runs, else in shadow mode the `challenger` alias. A canary answers the records
its share gives it (by a hash of their key) and the champion the rest; a shadow answers
none. Either way both scores are logged, the one not answered as `shadow_*`, so the two
models can later be compared on the same records. A challenger that fails to score
fails no request: the champion answers, and the log keeps why (`challenger_error`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.core.errors import LooplineError
from loopline.data import columns as cols
from loopline.registry.canary import CANARY_ARM, CHAMPION_ARM, Canary
from loopline.registry.versions import CHALLENGER, CHAMPION, Registry
from loopline.scoring.formats import ScorerError
from loopline.scoring.registered import LoadedModel, load_version

log = logging.getLogger(__name__)
CANARY_ALIAS = "canary"  # how /metadata names the canary's model


class NoChampionError(LooplineError):
    """Nothing can be scored: no champion registered, or every candidate was refused."""


@dataclass(frozen=True)
class Served:
    """What one request is scored by: the champion, the challenger beside it, the canary."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None  # the canary's version, or a shadow
    canary: Canary | None = None  # None: the challenger (if any) is a shadow


@dataclass
class Scores:
    """One model's scores of a request's records, or why it has none."""

    probability: np.ndarray | None
    label: np.ndarray | None
    ms: float
    error: str | None = None


def _scores(model: LoadedModel, columns: cols.Columns) -> Scores:
    """One model's scores; a probability that is not a number is that model's failure."""
    started = time.perf_counter()
    probability = model.scorer.probabilities(columns)
    if not np.isfinite(probability).all():
        bad = int((~np.isfinite(probability)).sum())
        raise ScorerError(f"version {model.version} gave {bad} probabilities that are not numbers")
    label = model.scorer.labels(probability)
    return Scores(probability, label, (time.perf_counter() - started) * 1000)


class ChampionHolder:
    """Keeps the champion (and a canary or shadow challenger) loaded and current."""

    def __init__(
        self,
        registry: Registry,
        shadow: bool,
        key: Sequence[str] = (),
        threads: int | None = None,
    ) -> None:
        self.registry = registry
        self.shadow = shadow
        self.key = tuple(key)  # the record fields a canary's arms are drawn by
        self.threads = threads
        self.refused: dict[str, str] = {}  # version -> why it was not loaded
        self._served = Served()
        self._failing: set[str] = set()  # challengers whose scoring failure was logged
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> Served:
        """The models of one request, consistent (one read of one reference)."""
        return self._served

    def refresh(self) -> bool:
        """Load whatever the aliases and the canary point at now; True if anything changed."""
        with self._refresh_lock:
            current = self._served
            canary = self.registry.canary() if self.key else None
            champion = self._follow(
                current.champion, self.registry.alias_version(CHAMPION), CHAMPION
            )
            if canary is not None:
                wanted, alias = canary.version, CANARY_ALIAS
            else:
                alias = CHALLENGER
                wanted = self.registry.alias_version(CHALLENGER) if self.shadow else None
            challenger = self._follow(current.challenger, wanted, alias)
            if champion and challenger and challenger.version == champion.version:
                challenger = None
            served = Served(champion, challenger, canary if challenger else None)
            changed = (
                served.champion is not current.champion
                or served.challenger is not current.challenger
                or served.canary != current.canary
            )
            if changed:
                self._served = served  # the swap: readers see the old or the new models
            return changed

    def _follow(
        self, loaded: LoadedModel | None, version: str | None, alias: str
    ) -> LoadedModel | None:
        """The model `alias` should serve: `loaded` if it is `version`, else `version` loaded.

        When `version` is unset or cannot be loaded (refused, once, with the reason
        logged), the champion keeps serving what it had and a challenger is dropped.
        """
        if loaded is not None and loaded.version == version:
            return loaded
        kept = loaded if alias == CHAMPION else None
        if version is None or version in self.refused:
            return kept
        try:
            model = load_version(self.registry, version, alias, self.threads)
        except ScorerError as error:
            self.refused[version] = str(error)
            log.error("%s; still serving %s", error, loaded.version if loaded else "nothing")
            return kept
        log.info("serving %s version %s as %s", self.registry.name, version, alias)
        return model

    def score(self, columns: cols.Columns) -> list[dict[str, Any]]:
        """Each record's answer (probability, label, version, arm) and what the log keeps.

        Raises NoChampionError, naming any refused version, when no model is loaded.
        """
        served = self.snapshot()
        champion, challenger = served.champion, served.challenger
        if champion is None:
            raise NoChampionError(
                "; ".join(self.refused.values()) or "no champion model is registered yet"
            )
        ours = _scores(champion, columns)
        theirs = self._challenger_scores(challenger, columns) if challenger else None
        fields = {"model_name": champion.name, "champion_ms": ours.ms,
                  "challenger_ms": theirs.ms if theirs else None,
                  "challenger_error": theirs.error if theirs else None}  # fmt: skip
        if challenger is None or theirs is None or theirs.probability is None:
            return [
                {"probability": p, "label": label, "model_version": champion.version,
                 "arm": CHAMPION_ARM, "shadow_version": None, "shadow_probability": None,
                 "shadow_label": None, **fields}
                for p, label in zip(ours.probability.tolist(), ours.label.tolist(), strict=True)
            ]  # fmt: skip
        count = len(ours.probability)
        canary = served.canary
        answered = canary.answers(columns, self.key) if canary else np.zeros(count, bool)
        rows = []
        for i, in_canary in enumerate(answered.tolist()):
            answer, other = (theirs, ours) if in_canary else (ours, theirs)
            rows.append({
                "probability": float(answer.probability[i]), "label": int(answer.label[i]),
                "model_version": (challenger if in_canary else champion).version,
                "arm": CANARY_ARM if in_canary else CHAMPION_ARM,
                "shadow_version": (champion if in_canary else challenger).version,
                "shadow_probability": float(other.probability[i]),
                "shadow_label": int(other.label[i]), **fields,
            })  # fmt: skip
        return rows

    def _challenger_scores(self, challenger: LoadedModel, columns: cols.Columns) -> Scores:
        """The challenger's scores; a failure is kept (and logged once per version)."""
        started = time.perf_counter()
        try:
            return _scores(challenger, columns)
        except Exception as error:  # a challenger never fails a request
            if challenger.version not in self._failing:
                self._failing.add(challenger.version)
                log.exception("challenger version %s failed to score", challenger.version)
            why = f"{type(error).__name__}: {error}"[:500]
            return Scores(None, None, (time.perf_counter() - started) * 1000, why)

    def describe(self) -> dict[str, Any]:
        """The loaded models as /metadata shows them, the canary's state, refused versions."""
        served = self.snapshot()
        challenger = served.challenger.describe() if served.challenger else None
        canary = served.canary
        return {
            "champion": served.champion.describe() if served.champion else None,
            "shadow": None if canary else challenger,
            "canary": {**challenger, "step": canary.step, "share": canary.share}
            if canary and challenger
            else None,
            "refused_versions": dict(self.refused),
        }

    def reload(self) -> dict[str, Any]:
        """Check the aliases now instead of at the next poll."""
        changed = self.refresh()
        champion = self.snapshot().champion
        return {"changed": changed, "model_version": champion.version if champion else None}

    def start(self, poll_seconds: float) -> None:
        """Poll the aliases in a daemon thread until `stop()`."""

        def loop() -> None:
            while not self._stop.wait(poll_seconds):
                try:
                    self.refresh()
                except Exception:  # a registry hiccup must not kill serving
                    log.exception("alias refresh failed; still serving the current model")

        self._thread = threading.Thread(target=loop, name="champion-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
