"""What one single-record request costs in Loopline's own code, step by step, in-process.

The serving bench measures the whole service against the framework floor; a sampling
profile of the loaded service blurs small steps (a thread waiting for the GIL is sampled
in whatever it runs next). This times each step `PredictionAPI.predict` takes for one
record, with the project's champion, in a loop on one core: validation of the body,
record columns, scoring (and within it the features and the estimator), the event days,
the log rows, one prediction-log commit, the answer's JSON. What the steps do not add up
to, against a request's share of the machine in `bench.serve.run`, is the HTTP path:
BentoML, the mounted app, the guards, the hand-off to the log writer.

Run from the project root after `make run`:  .venv/bin/python -m bench.serve.request_cost
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from loopline.data import columns as cols
from loopline.infra.prediction_log import PredictionLog
from loopline.serving.champion import ChampionHolder
from loopline.serving.schema import RequestSchema
from loopline.workspace import Workspace

REPEATS = 3000
COMMITS = 500  # each one an SQLite transaction: fewer


def microseconds(step: Callable[[], object], repeats: int = REPEATS) -> float:
    """Mean wall time of one call of `step`, after one warm-up call."""
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return round((time.perf_counter() - started) / repeats * 1e6, 1)


def main() -> None:
    """Print each step's cost (µs per single-record request) as JSON."""
    workspace = Workspace.load()
    dataset = workspace.dataset
    fields = dataset.record_fields()
    schema = RequestSchema.of(dataset.contract, 1000, dataset.record_type_name)
    test = pd.read_parquet(workspace.layout.folder / "examples" / "test.parquet")
    body = json.dumps({"records": json.loads(test[dataset.record_columns()].iloc[:1].to_json(
        orient="records"))}).encode()  # fmt: skip
    holder = ChampionHolder(workspace.registry, shadow=False, threads=1)
    holder.refresh()
    champion = holder.snapshot()[0]
    records = schema.records(body)
    columns = cols.from_records(records, fields)
    features = champion.scorer.features(columns)
    scored = holder.score(columns)

    def rows() -> list[dict]:
        request_id = uuid.uuid4().hex
        logged_at = dt.datetime.now(dt.UTC).isoformat()
        days = workspace.axis.event_days(columns)
        return [
            {**record, **result, "prediction_id": f"{request_id}-{i}", "request_id": request_id,
             "logged_at": logged_at, "event_day": day}
            for i, (record, result, day) in enumerate(zip(records, scored, days, strict=True))
        ]  # fmt: skip

    with tempfile.TemporaryDirectory() as scratch:
        log = PredictionLog(Path(scratch) / "log.sqlite", fields, durability="process")
        steps = {
            "validation (pydantic, body to records)": microseconds(lambda: schema.records(body)),
            "record columns": microseconds(lambda: cols.from_records(records, fields)),
            "scoring, whole (features, estimator, label, dicts)": microseconds(
                lambda: holder.score(columns)
            ),
            "  of which features": microseconds(lambda: champion.scorer.features(columns)),
            "  of which estimator": microseconds(
                lambda: champion.scorer.estimator.predict(features)
            ),
            "event days": microseconds(lambda: workspace.axis.event_days(columns)),
            "log rows (ids, time, event days)": microseconds(rows),
            "one log commit, alone (the writer thread's, shared by a group)": microseconds(
                lambda: log.append(rows()), COMMITS
            ),
            "answer JSON": microseconds(lambda: json.dumps({"predictions": scored})),
        }
        log.close()
    print(json.dumps({"champion": f"{champion.version} ({champion.scorer.family})",
                      "microseconds": steps}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
