"""The alert rules: `promtool test rules`, and every rule fired on a real Prometheus.

The live test runs Prometheus (Debian's package) over the real service and the real
exporter, scraping and evaluating every second. The rules are the shipped ones with each
`for` set to 0 s, so a condition fires at its first evaluation: the expressions are the
ones that ship, and how long each must hold is what the promtool tests check. Where
Prometheus is not installed these tests skip with the one line that installs it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from sqlalchemy.engine import URL

from loopline.infra import processes
from loopline.infra.monitor_state import DECISIONS
from loopline.infra.processes import Processes, free_port
from loopline.loop import alerting
from loopline.monitoring.records import BatchOutcome, Decision, Incident
from loopline.registry.versions import CHAMPION
from loopline.workspace import Workspace
from tests.builders import NotCompiled
from tests.conftest import database_away, fresh_database
from tests.integration.conftest import ServingWorld

pytestmark = pytest.mark.slow
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMTOOL is None or shutil.which("prometheus") is None,
    reason=f"Prometheus is not installed: {alerting.INSTALL}",
)
DAY = 86400


def _promtool(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"], cwd=folder, capture_output=True,
        text=True, check=False,
    )  # fmt: skip


@needs_prometheus
def test_every_rule_passes_its_promtool_unit_tests_and_each_alert_has_one() -> None:
    result = _promtool(alerting.FOLDER)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(alerting.RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == set(alerting.alert_names())


@needs_prometheus
def test_the_promtool_tests_catch_a_rule_that_is_wrong(tmp_path: Path) -> None:
    """The error-rate limit raised from 5% to 50%: its promtool test goes red."""
    shutil.copy(alerting.RULE_TESTS, tmp_path / "rules_test.yml")
    rules = alerting.RULES.read_text()
    assert rules.count("> 0.05") == 1
    (tmp_path / "rules.yml").write_text(rules.replace("> 0.05", "> 0.5"))
    result = _promtool(tmp_path)
    assert result.returncode != 0
    assert "alertname: LooplineHighErrorRate" in result.stdout + result.stderr


def _at_once(rules: Path, target: Path) -> Path:
    """The rules with every `for` set to 0 s (they fire at their first evaluation)."""
    loaded = yaml.safe_load(rules.read_text())
    for group in loaded["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    target.write_text(yaml.safe_dump(loaded, sort_keys=False))
    return target


def _faulty_workspace(world: ServingWorld, root: Path, state: URL) -> Workspace:
    """A loop in trouble, for the exporter: its own registry whose champion alias was moved
    (outside Loopline) to a version the service refuses; a monitored batch with an incident
    and drift; the monitor's last decision three days old; three days of predictions
    without a label. Its monitor state lives in PostgreSQL (`state`), to be taken away."""
    params = world.workspace().write_params(root / "params.yaml", {
        "mlflow.tracking_uri": f"sqlite:///{root}/mlflow.db",
        "mlflow.artifact_root": str(root / "mlruns"), "registry.ledger": str(root / "ledger.jsonl"),
        "registry.cards": str(root / "cards"), "serve.prediction_log": str(root / "log.sqlite"),
        "monitor.state": state.render_as_string(hide_password=False),
    })  # fmt: skip
    workspace = Workspace.load(params)
    registry = workspace.registry
    with mlflow.start_run():
        plain = mlflow.pyfunc.log_model(name="model", python_model=NotCompiled())
    version = registry.register(plain.model_uri, plain.run_id, {})
    registry.client.set_registered_model_alias(registry.name, CHAMPION, version)  # the UI

    monitor = workspace.monitor_state
    day = dt.date(2013, 7, 7)
    batch = BatchOutcome(
        "b1", day, day, rows=500, labeled_rows=0, model_version=version, drift_share=0.9,
        drifted_columns=["dep_delay"], reported_drifted_columns=["dep_delay"],
        mean_probability=0.2, incidents=[Incident("feed_outage", ("origin",), "EWR sent nothing")],
    )  # fmt: skip
    monitor.save_batch(batch)
    decision_id = monitor.save_decision(Decision(False, "incident", "b1", []), batch.ends_at)
    three_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).isoformat()
    with monitor.engine.begin() as db:  # as if it had been decided then
        db.execute(
            DECISIONS.update().where(DECISIONS.c.decision_id == decision_id),
            {"decided_at": three_days_ago},
        )
    record = json.loads(world.test_records[workspace.dataset.record_columns()].head(1).to_json(
        orient="records"))[0]  # fmt: skip
    rows = [
        {**record, "prediction_id": f"p{i}", "request_id": f"r{i}", "logged_at": logged_at,
         "event_day": "2013-07-07", "model_name": registry.name, "model_version": "1",
         "probability": 0.3, "label": 0}
        for i, logged_at in enumerate([three_days_ago, dt.datetime.now(dt.UTC).isoformat()])
    ]  # fmt: skip
    workspace.prediction_log.append(rows)
    return workspace


class Alerts:
    """What a Prometheus server says is firing, and every alert seen firing so far."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[str, dict] = {}

    def firing(self) -> dict[str, dict]:
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        found = {
            alert["labels"]["alertname"]: alert["labels"]
            for alert in response["data"]["alerts"] if alert["state"] == "firing"
        }  # fmt: skip
        self.seen.update(found)
        return found

    def wait_for(
        self, names: set[str], gone: frozenset[str] = frozenset(), timeout_s: float = 60
    ) -> dict[str, dict]:
        """Poll until every alert in `names` fires and none in `gone` does; what fires then."""
        deadline = time.monotonic() + timeout_s
        while True:
            firing = self.firing()
            if names <= firing.keys() and not gone & firing.keys():
                return firing
            assert time.monotonic() < deadline, (
                f"not firing: {names - firing.keys()}; still firing: {gone & firing.keys()}"
            )
            time.sleep(0.5)


def _slow_upload(url: str, body: bytes, seconds: float) -> bytes:
    """POST /predict whose body trickles in over `seconds` (inside serve.client_timeout_s)."""
    address = httpx.URL(url)
    with socket.create_connection((address.host, address.port), timeout=30) as client:
        client.sendall(
            b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), len(body) // 4 + 1):
            client.sendall(body[start : start + len(body) // 4 + 1])
            time.sleep(seconds / 4)
        return client.recv(64).split(b"\r\n", 1)[0]


@needs_prometheus
def test_every_alert_fires_on_a_real_prometheus(
    serving_world: ServingWorld, postgres: URL, tmp_path: Path
) -> None:
    """A troubled loop, then a burst over capacity and slow uploads, then the monitor's
    store gone, then the exporter and the service stopped: each alert fires in its turn,
    the ones of a healthy part stay quiet, and every rule has fired by the end."""
    state = fresh_database(postgres)
    faulty = _faulty_workspace(serving_world, tmp_path / "faulty", state)
    service_params = serving_world.write_params("params-alerts.yaml", max_in_flight=1)
    service_port, exporter_port, prometheus_port = free_port(), free_port(), free_port()
    service = f"http://127.0.0.1:{service_port}"
    folder = tmp_path / "prometheus"
    config = alerting.write_config(
        folder, f"127.0.0.1:{service_port}", f"127.0.0.1:{exporter_port}", scrape_interval_s=1,
        rules=_at_once(alerting.RULES, tmp_path / "rules.yml"),
    )  # fmt: skip
    servers = [
        processes.bentoml_service(
            service_params, "127.0.0.1", service_port, tmp_path / "bentoml.log",
            BENTOML_HOME=str(tmp_path / "bentoml"),
        ),
        processes.loop_exporter(
            faulty.params_file, "127.0.0.1", exporter_port, tmp_path / "exporter.log"
        ),
        processes.prometheus(
            alerting.prometheus_binary(), config, folder / "data", host="127.0.0.1",
            port=prometheus_port, log_file=folder / "prometheus.log",
        ),
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        bento, exporter, prometheus = [stack.enter_context(Processes()) for _ in servers]
        for running, server in zip((bento, exporter, prometheus), servers, strict=True):
            running.start(server)  # each stops on its own (`stop_all`), all at the end
        alerts = Alerts(f"http://127.0.0.1:{prometheus_port}")

        # the loop in trouble, and a service nobody calls yet
        troubled = {
            "LooplineChampionRefused",
            "LooplineRegistryDrift",
            "LooplineDataIncident",
            "LooplineDriftDetected",
            "LooplineMonitorStale",
            "LooplineLabelsStopped",
        }
        firing = alerts.wait_for({*troubled, "LooplineNoTraffic"})
        assert set(firing) == {*troubled, "LooplineNoTraffic"}
        assert firing["LooplineChampionRefused"]["version"] == faulty.registry.alias_version(
            CHAMPION
        )

        # a burst over capacity (one request in flight per worker), then slow uploads
        columns = faulty.dataset.record_columns()
        records = json.loads(serving_world.test_records[columns].head(5).to_json(orient="records"))
        body = json.dumps({"records": records}).encode()

        def post(_: int) -> int:
            headers = {"content-type": "application/json"}
            return httpx.post(f"{service}/predict", content=body, headers=headers).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            assert set(pool.map(post, range(200))) == {200, 503}
        slow = [_slow_upload(service, body, 1.2) for _ in range(4)]  # 2% of requests
        assert set(slow) == {b"HTTP/1.1 200 OK"}
        alerts.wait_for(
            {"LooplineHighErrorRate", "LooplineShedding", "LooplineSlowPredictions"},
            gone=frozenset({"LooplineNoTraffic"}),
        )

        # the monitor's store goes away under the exporter: its alerts go blind, not quiet
        with database_away(postgres, state.database):
            firing = alerts.wait_for(
                {"LooplineSourceUnreachable"}, gone=frozenset({"LooplineDataIncident"})
            )
            assert firing["LooplineSourceUnreachable"]["source"] == "monitor"
            assert "LooplineChampionRefused" in firing  # the registry is still read

        # the exporter stops, then the service
        exporter.stop_all()
        alerts.wait_for({"LooplineExporterDown"})
        bento.stop_all()
        alerts.wait_for({"LooplineServiceDown"})
    assert set(alerts.seen) == set(alerting.alert_names())
