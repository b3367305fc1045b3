"""The served models: the registry's champion (and, in shadow mode, its challenger).

`ChampionHolder.refresh()` resolves the aliases; when one points at a new version, that
version is loaded through MLflow first and swapped in afterwards by replacing one
reference. A request takes a snapshot of the reference when it starts, so requests in
flight finish on the model they began with and none fails during a swap. A background
thread calls `refresh()` every `poll_seconds`; a failed load keeps the current model.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd

from loopline.models.base import LooplineModel
from loopline.registry import CHALLENGER, CHAMPION, TEST_METRIC_TAG, Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, loaded and ready to score raw records."""

    name: str
    version: str
    alias: str
    model: LooplineModel
    tags: dict[str, str]
    loaded_at: str

    def score(self, records: pd.DataFrame) -> pd.DataFrame:
        """`probability` and `label` per record.

        Calls the logged LooplineModel directly, skipping MLflow's own input-schema check:
        the API has already validated every record against a stricter schema generated
        from the same data contract, and the check would cost more than the model.
        """
        return self.model.predict(records)

    def describe(self) -> dict[str, Any]:
        """What /metadata shows about this model."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "family": self.tags.get("loopline.family"),
            "loaded_at": self.loaded_at,
            "training_data_md5": self.tags.get("loopline.data_md5"),
            "train_window": self.tags.get("loopline.train_window"),
            "git_commit": self.tags.get("loopline.git_commit"),
            "test_metrics": {
                key.removeprefix(TEST_METRIC_TAG): value
                for key, value in self.tags.items()
                if key.startswith(TEST_METRIC_TAG)
            },
        }


class ChampionHolder:
    """Keeps the champion (and optional shadow challenger) loaded and current."""

    def __init__(self, registry: Registry, shadow: bool) -> None:
        self.registry = registry
        self.shadow = shadow
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
                current[alias] = self._load(alias, version)
                changed = True
                log.info("serving %s version %s as %s", self.registry.name, version, alias)
            if changed:
                self._models = current  # the swap: readers see the old or the new dict
            return changed

    def _load(self, alias: str, version: str) -> LoadedModel:
        pyfunc = mlflow.pyfunc.load_model(self.registry.model_uri(version))
        model = pyfunc.unwrap_python_model().model
        tags = self.registry.client.get_model_version(self.registry.name, version).tags
        return LoadedModel(
            name=self.registry.name, version=version, alias=alias, model=model, tags=dict(tags),
            loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )  # fmt: skip

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
