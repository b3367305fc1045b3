"""Loopline's prediction service (BentoML): the registry's champion behind a typed API.

`bentoml serve serving.service:LateArrivalAPI` starts it. The public `LateArrivalAPI`
validates requests against the schema generated from the data contract, gives each
request and prediction an id, logs every prediction durably (group commit) before it
answers, and returns probability, label, model name and version. API key, body-size,
JSON-only and load-shedding guards run before BentoML sees a request. GET /healthz,
/readyz, /metadata; POST /predict, /reload.

The champion is scored by its compiled scorer (`loopline.scoring`): NumPy features and a
safe-format estimator, well under a millisecond per record. `serve.batching` picks where:

* `false`: in each API worker's own process (`serve.workers` of them), no internal hop;
* `true`: in the internal `LateArrivalModel` service, whose `score` is a BentoML batchable
  API: records of concurrent requests are merged into one model call (adaptive batching).

Either way the scorer follows the `champion` alias (polling, or at once on /reload) and,
in shadow mode, scores the challenger too. Settings come from params.yaml
(`LOOPLINE_PARAMS` names another file); relative paths in it are resolved against that
file's folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import bentoml
from bentoml.exceptions import ServiceUnavailable
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from loopline import columns as cols
from loopline.config import load_params
from loopline.datasets import get_dataset
from loopline.orchestration import configure_logging, quiet_environment
from loopline.registry import Registry
from loopline.serving.champion import ChampionHolder, NoChampionError
from loopline.serving.guards import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    JsonOnlyMiddleware,
    LoadShedMiddleware,
)
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.schema import Prediction, PredictResponse, record_model
from loopline.tracking import configure_mlflow

# BentoML reads batching, workers and limits from the decorators, so settings load at import.
PARAMS_FILE = Path(os.environ.get("LOOPLINE_PARAMS", "params.yaml")).resolve()
ROOT = PARAMS_FILE.parent
SETTINGS = load_params(PARAMS_FILE)
SERVE = SETTINGS.serve
DATASET = get_dataset(SETTINGS.dataset.name)
RECORD_FIELDS = DATASET.record_fields()
FlightRecord = record_model(DATASET.contract)
SCORE_ATTEMPTS = 3
log = logging.getLogger("loopline.serving")


def _holder() -> ChampionHolder:
    """The champion (and shadow challenger), loaded and followed; one scoring thread."""
    quiet_environment()
    configure_logging()
    configure_mlflow(SETTINGS.mlflow, root=ROOT)
    registry = Registry.rooted(SETTINGS.registry, ROOT)
    holder = ChampionHolder(registry, shadow=SERVE.shadow, threads=1)
    holder.refresh()
    holder.start(SERVE.poll_seconds)
    return holder


def score_with(holder: ChampionHolder, columns: cols.Columns) -> list[dict[str, Any]]:
    """The holder's scores; no loaded model is a 503 naming why (e.g. a refused version)."""
    try:
        return holder.score(columns)
    except NoChampionError as error:
        raise ServiceUnavailable(str(error)) from None


@bentoml.service(name="loopline-model", workers=1, traffic={"timeout": 60})
class LateArrivalModel:
    """Scores records with adaptive batching (started only when `serve.batching` is on)."""

    def __init__(self) -> None:
        self.holder = _holder()

    def __is_ready__(self) -> bool:
        return self.holder.snapshot()[0] is not None

    @bentoml.api(
        batchable=True, max_batch_size=SERVE.max_batch_size, max_latency_ms=SERVE.max_latency_ms
    )
    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Probability, label and version for each record (a batch from many requests)."""
        return score_with(self.holder, cols.from_records(records, RECORD_FIELDS))

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """The loaded champion (and shadow)."""
        return self.holder.describe()

    @bentoml.api
    def reload(self) -> dict[str, Any]:
        """Check the aliases now."""
        return self.holder.reload()


Records = Annotated[
    list[FlightRecord], Field(min_length=1, max_length=SERVE.max_records_per_request)
]  # type: ignore[valid-type]


@bentoml.service(
    name="loopline",
    workers=SERVE.workers,
    traffic={"timeout": 60},
    endpoints={"livez": "/healthz", "readyz": "/readyz"},
    metrics={"enabled": SERVE.metrics},
    logging={"access": {"enabled": SERVE.access_log}},
)
class LateArrivalAPI:
    """The public prediction API."""

    if SERVE.batching:
        model = bentoml.depends(LateArrivalModel)

    def __init__(self) -> None:
        self.holder = None if SERVE.batching else _holder()
        self.log = PredictionLog(
            ROOT / SERVE.prediction_log,
            DATASET.contract,
            DATASET.key_columns,
            DATASET.target_column,
            commit_delay_ms=SERVE.log_commit_delay_ms,
        )

    def __is_ready__(self) -> bool:
        return self.holder is None or self.holder.snapshot()[0] is not None

    @bentoml.api(route="/predict")
    async def predict(self, records: Records) -> PredictResponse:
        """Probability that each flight arrives 15+ minutes late, with the model's label."""
        request_id = uuid.uuid4().hex
        inputs = [record.model_dump() for record in records]
        columns = cols.from_records(inputs, RECORD_FIELDS)
        scored = await self._score(inputs, columns)
        logged_at = dt.datetime.now(dt.UTC).isoformat()
        days = DATASET.event_days(columns)
        rows = [
            {**record, **result, "prediction_id": uuid.uuid4().hex, "request_id": request_id,
             "logged_at": logged_at, "event_day": day}
            for record, result, day in zip(inputs, scored, days, strict=True)
        ]  # fmt: skip
        await asyncio.wrap_future(self.log.submit(rows))  # answered only once durable
        return PredictResponse(
            request_id=request_id,
            predictions=[
                Prediction(
                    prediction_id=row["prediction_id"],
                    probability=row["probability"],
                    label=row["label"],
                    model_name=row["model_name"],
                    model_version=row["model_version"],
                )
                for row in rows
            ],
        )

    async def _score(
        self, inputs: list[dict[str, Any]], columns: cols.Columns
    ) -> list[dict[str, Any]]:
        """Score in this process, or through the batching model service.

        BentoML's internal client replaces its HTTP session every 100 calls and closes the
        old one under calls still in flight (bentoml/BentoML#4971); scoring is
        idempotent, so such a call is simply sent again.
        """
        if self.holder is not None:
            return score_with(self.holder, columns)
        for attempt in range(1, SCORE_ATTEMPTS + 1):
            try:
                return await self.model.to_async.score(inputs)
            except aiohttp.ClientConnectionError:
                if attempt == SCORE_ATTEMPTS:
                    raise
                log.warning("model service connection dropped (attempt %d); retrying", attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def describe(self) -> dict[str, Any]:
        """What /metadata shows about the served models."""
        if self.holder is not None:
            return self.holder.describe()
        return await self.model.to_async.describe()

    @bentoml.api(route="/reload")
    async def reload(self) -> dict[str, Any]:
        """Pick up a moved champion alias now (needs the API key when one is set)."""
        if self.holder is not None:
            return self.holder.reload()
        return await self.model.to_async.reload()


async def metadata(_: Request) -> JSONResponse:
    """GET /metadata: served model version, alias, data version, metrics, input schema."""
    described = await bentoml.get_current_service().describe()
    schema = FlightRecord.model_json_schema()
    return JSONResponse(
        {**described, "input_schema": schema, "max_records": SERVE.max_records_per_request}
    )


# Mounted after BentoML's own routes; it answers only the paths of its routes.
LateArrivalAPI.mount_asgi_app(Starlette(routes=[Route("/metadata", metadata, methods=["GET"])]))
LateArrivalAPI.add_asgi_middleware(ApiKeyMiddleware, env_var=SERVE.api_key_env)
LateArrivalAPI.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SERVE.max_body_bytes)
LateArrivalAPI.add_asgi_middleware(JsonOnlyMiddleware)
LateArrivalAPI.add_asgi_middleware(
    LoadShedMiddleware, max_in_flight=SERVE.max_in_flight, retry_after_s=SERVE.retry_after_s
)
