"""The loop's exporter: what each store says, and a store that cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from prometheus_client.core import Metric

from loopline.loop.exporter import LoopCollector
from loopline.workspace import Workspace
from tests.conftest import fast_params_dict


def _workspace(root: Path, **stores: str) -> Workspace:
    raw = fast_params_dict()
    raw["mlflow"].update(
        tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "mlruns")
    )
    raw["registry"].update(ledger=str(root / "ledger.jsonl"), cards=str(root / "cards"))
    raw["serve"]["prediction_log"] = stores.get("log", str(root / "log.sqlite"))
    raw["monitor"]["state"] = stores.get("state", str(root / "state.sqlite"))
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return Workspace.load(root / "params.yaml")


def _values(metrics: list[Metric]) -> dict[tuple, float]:
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for metric in metrics for sample in metric.samples
    }  # fmt: skip


def test_empty_stores_report_up_with_nothing_to_say(tmp_path: Path) -> None:
    values = _values(list(LoopCollector(_workspace(tmp_path)).collect()))
    assert values == {
        ("loopline_source_up", ("source", source)): 1.0
        for source in ("registry", "monitor", "prediction_log")
    }


def test_label_lag_runs_from_the_newest_labeled_prediction(
    tmp_path: Path, small_features_dir: Path
) -> None:
    workspace = _workspace(tmp_path)
    log = workspace.prediction_log
    examples = pd.read_parquet(small_features_dir / "examples" / "test.parquet").head(3)
    records = json.loads(examples[workspace.dataset.record_columns()].to_json(orient="records"))
    times = ["2026-01-01T00:00:00+00:00", "2026-01-01T06:00:00+00:00", "2026-01-02T00:00:00+00:00"]
    log.append([
        {**record, "prediction_id": f"p{i}", "request_id": f"r{i}", "logged_at": at,
         "model_name": "m", "model_version": "1", "probability": 0.5, "label": 1}
        for i, (record, at) in enumerate(zip(records, times, strict=True))
    ])  # fmt: skip
    lag = ("loopline_label_lag_seconds",)
    collector = LoopCollector(workspace)
    assert _values(list(collector.collect()))[lag] == 86400.0  # no label yet: from the oldest
    log.deliver_labels(examples.iloc[[1]], delivered_at="2026-01-02T01:00:00+00:00")
    assert _values(list(collector.collect()))[lag] == 18 * 3600.0  # from 06:00 to the newest


def test_a_store_that_cannot_be_read_is_down_and_the_others_still_report(
    tmp_path: Path,
) -> None:
    refused = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    values = _values(list(LoopCollector(_workspace(tmp_path, state=refused)).collect()))
    assert values[("loopline_source_up", ("source", "monitor"))] == 0.0
    assert values[("loopline_source_up", ("source", "registry"))] == 1.0
    assert values[("loopline_source_up", ("source", "prediction_log"))] == 1.0
