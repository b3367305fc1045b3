"""The served models: the registry's champion (and, in shadow mode, its challenger).

`ChampionHolder.refresh()` resolves the aliases; when one points at a new version, that
version's compiled scorer is loaded first (`loopline.scoring.registered`) and swapped in
afterwards by replacing one reference. A request takes a snapshot of the reference when it
starts, so requests in flight finish on the model they began with and none fails during a
swap. A background thread calls `refresh()` every `poll_seconds`. A version that cannot be
loaded (no compiled scorer, a damaged file) is refused once, with the reason logged and
kept in `refused`; the current model goes on serving.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from loopline.core.errors import LooplineError
from loopline.data import columns as cols
from loopline.registry.versions import CHALLENGER, CHAMPION, Registry
from loopline.scoring.formats import ScorerError
from loopline.scoring.registered import LoadedModel, load_version

log = logging.getLogger(__name__)


class NoChampionError(LooplineError):
    """Nothing can be scored: no champion registered, or every candidate was refused."""


class ChampionHolder:
    """Keeps the champion (and optional shadow challenger) loaded and current."""

    def __init__(self, registry: Registry, shadow: bool, threads: int | None = None) -> None:
        self.registry = registry
        self.shadow = shadow
        self.threads = threads
        self.refused: dict[str, str] = {}  # version -> why it was not loaded
        self._models: dict[str, LoadedModel | None] = {CHAMPION: None, CHALLENGER: None}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> tuple[LoadedModel | None, LoadedModel | None]:
        """(champion, shadow challenger or None), consistent for one request."""
        models = self._models  # one read of one reference
        shadow = models[CHALLENGER] if self.shadow else None
        champion = models[CHAMPION]
        if shadow is not None and champion is not None and shadow.version == champion.version:
            shadow = None
        return champion, shadow

    def refresh(self) -> bool:
        """Load whatever the aliases point at now, if it changed; True if anything did."""
        with self._refresh_lock:
            current = dict(self._models)
            aliases = (CHAMPION, CHALLENGER) if self.shadow else (CHAMPION,)
            changed = False
            for alias in aliases:
                version = self.registry.alias_version(alias)
                loaded = current[alias]
                if version is None or (loaded is not None and loaded.version == version):
                    continue
                if version in self.refused:
                    continue
                try:
                    current[alias] = load_version(self.registry, version, alias, self.threads)
                except ScorerError as error:
                    self.refused[version] = str(error)
                    log.error(
                        "%s; still serving %s", error, loaded.version if loaded else "nothing"
                    )
                    continue
                changed = True
                log.info("serving %s version %s as %s", self.registry.name, version, alias)
            if changed:
                self._models = current  # the swap: readers see the old or the new dict
            return changed

    def score(self, columns: cols.Columns) -> list[dict[str, Any]]:
        """Probability, label and version per row of validated record columns (and shadow).

        Raises NoChampionError, naming any refused version, when no model is loaded.
        """
        champion, shadow = self.snapshot()
        if champion is None:
            raise NoChampionError(
                "; ".join(self.refused.values()) or "no champion model is registered yet"
            )
        probability = champion.scorer.probabilities(columns)
        labels = champion.scorer.labels(probability)
        shadows = (
            shadow.scorer.probabilities(columns).tolist() if shadow else [None] * len(probability)
        )
        return [
            {"probability": p, "label": label, "model_name": champion.name,
             "model_version": champion.version,
             "shadow_version": shadow.version if shadow else None, "shadow_probability": s}
            for p, label, s in zip(probability.tolist(), labels.tolist(), shadows, strict=True)
        ]  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The loaded champion (and shadow) as /metadata shows them, plus refused versions."""
        champion, shadow = self.snapshot()
        return {
            "champion": champion.describe() if champion else None,
            "shadow": shadow.describe() if shadow else None,
            "refused_versions": dict(self.refused),
        }

    def reload(self) -> dict[str, Any]:
        """Check the aliases now instead of at the next poll."""
        changed = self.refresh()
        champion, _ = self.snapshot()
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
