"""The loop's own facts as Prometheus metrics: what the alert rules watch beside the service.

The service's `/metrics` (BentoML) says how requests go; what it cannot say lives in the
loop's stores, and this exporter reads them at every scrape (`loopline exporter`):

* the registry: the champion's version, whether the service can load it, whether the
  ledger promoted it (an alias moved in the MLflow UI is drift), each aliased version the
  service would refuse;
* the monitor: its latest decision (when, and whether it asked for a retrain) and the
  newest batch (data-quality incidents, drift share against `monitor.drift_share_limit`);
* the prediction log: when the newest prediction was logged and how far the labels lag
  behind it (the newest prediction minus the newest labeled one, in logged time).

Each store is read on its own: one that cannot be read reports `loopline_source_up 0`
and leaves its metrics out, and the rest still report. Whether a registered version can
be served does not change (its files are fixed), so each version is loaded once.
The alert rules over these and the service's metrics: `loopline.loop.alerting`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from loopline.promotion.audit import unservable
from loopline.registry.versions import CHALLENGER, CHAMPION
from loopline.workspace import Workspace

log = logging.getLogger(__name__)


def _seconds(iso: str) -> float:
    """Seconds since the epoch of an ISO time (one without a zone counts as UTC)."""
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _gauge(name: str, text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, text, value=value)


class LoopCollector(Collector):
    """Reads the workspace's registry, monitor state and prediction log at each scrape."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._refusals: dict[str, str | None] = {}  # version -> why it cannot be served
        self._lock = threading.Lock()  # scrapes may overlap; the stores are read one at a time

    def collect(self) -> Iterator[Metric]:
        """Every metric, each store read once; `loopline_source_up` says which answered."""
        readers: dict[str, Callable[[], list[Metric]]] = {
            "registry": self._registry, "monitor": self._monitor,
            "prediction_log": self._prediction_log,
        }  # fmt: skip
        up = GaugeMetricFamily(
            "loopline_source_up", "1 when the exporter could read the store", labels=["source"]
        )
        with self._lock:
            for source, read in readers.items():
                try:
                    metrics = read()
                except Exception as error:  # any failure to read is that store being down
                    log.warning("cannot read the %s: %s", source, str(error).splitlines()[0])
                    up.add_metric([source], 0)
                    continue
                up.add_metric([source], 1)
                yield from metrics
        yield up

    def _refusal(self, version: str) -> str | None:
        if version not in self._refusals:
            self._refusals[version] = unservable(self.workspace.registry, version)
        return self._refusals[version]

    def _registry(self) -> list[Metric]:
        registry = self.workspace.registry
        refused = GaugeMetricFamily(
            "loopline_version_refused",
            "1 for an aliased version the service refuses to load (no compiled scorer...)",
            labels=["alias", "version"],
        )
        metrics: list[Metric] = [refused]
        aliased = {alias: registry.alias_version(alias) for alias in (CHAMPION, CHALLENGER)}
        for alias, version in aliased.items():
            if version is not None and self._refusal(version) is not None:
                refused.add_metric([alias, version], 1)
        champion = aliased[CHAMPION]
        if champion is None:
            return metrics
        metrics += [
            _gauge("loopline_champion_version", "The version the champion alias points at",
                   int(champion)),
            _gauge("loopline_champion_matches_ledger",
                   "1 when the champion alias points where the ledger's last decision left it",
                   int(champion == registry.ledger_champion())),
        ]  # fmt: skip
        return metrics

    def _monitor(self) -> list[Metric]:
        state = self.workspace.monitor_state
        metrics: list[Metric] = []
        if (decision := state.latest_decision()) is not None:
            metrics += [
                _gauge("loopline_monitor_last_decision_timestamp_seconds",
                       "When the monitor last decided", _seconds(decision["decided_at"])),
                _gauge("loopline_monitor_last_decision_retrain",
                       "1 when the monitor's latest decision asked for a retrain",
                       int(decision["trigger"])),
            ]  # fmt: skip
        if history := state.history(1):
            newest = history[-1]
            share, limit = newest["drift_share"], self.workspace.params.monitor.drift_share_limit
            metrics += [
                _gauge("loopline_monitor_batch_incidents",
                       "Data-quality incidents in the newest monitored batch",
                       len(newest.get("incidents", []))),
                _gauge("loopline_monitor_batch_drift_share",
                       "Share of monitored fields drifted in the newest batch", share),
                _gauge("loopline_monitor_batch_drifted",
                       "1 when the newest batch's drift share is over monitor.drift_share_limit",
                       int(share > limit)),
            ]  # fmt: skip
        return metrics

    def _prediction_log(self) -> list[Metric]:
        prediction_log = self.workspace.prediction_log
        span = prediction_log.logged_span()
        if span is None:
            return []
        oldest, newest = span
        labeled = prediction_log.latest_labeled_arrival() if prediction_log.key_columns else None
        waiting_since = labeled or oldest  # with no label yet, every prediction waits
        lag = _seconds(newest) - _seconds(waiting_since)
        return [
            _gauge("loopline_predictions_last_logged_timestamp_seconds",
                   "When the newest prediction was logged", _seconds(newest)),
            _gauge("loopline_label_lag_seconds",
                   "Logged time from the newest labeled prediction (or the oldest, with no "
                   "label yet) to the newest prediction", lag),
        ]  # fmt: skip


def serve_exporter(workspace: Workspace, host: str, port: int) -> None:
    """Serve the loop's metrics at http://host:port/metrics (in a thread; returns at once)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoopCollector(workspace))
    start_http_server(port, addr=host, registry=registry)
