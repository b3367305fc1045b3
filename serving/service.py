"""Loopline's prediction service (BentoML): the registry's champion behind a typed API.

Two services, started together by `bentoml serve serving.service:LateArrivalAPI`:

* `LateArrivalAPI` (public, HTTP): validates requests against the schema generated from
  the data contract, gives each request and prediction an id, logs every prediction, and
  answers probability, label, model name and version. API key and body-size guards run
  before BentoML sees a request. GET /healthz, /readyz, /metadata; POST /predict, /reload.
* `LateArrivalModel` (internal): holds the champion, scores with adaptive batching
  (requests from concurrent callers are merged into one model call), follows the
  `champion` alias (polling, or at once on /reload), and in shadow mode scores the
  challenger too.

Settings come from params.yaml (`LOOPLINE_PARAMS` names another file); relative paths in
it are resolved against that file's folder.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import anyio
import bentoml
import pandas as pd
from bentoml.exceptions import ServiceUnavailable
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from loopline.config import load_params
from loopline.datasets import get_dataset
from loopline.orchestration import configure_logging, quiet_environment
from loopline.registry import Registry
from loopline.serving.champion import ChampionHolder
from loopline.serving.guards import ApiKeyMiddleware, BodyLimitMiddleware, JsonOnlyMiddleware
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.schema import Prediction, PredictResponse, record_model
from loopline.tracking import configure_mlflow

# BentoML reads batching and limits from the decorators, so settings load at import.
PARAMS_FILE = Path(os.environ.get("LOOPLINE_PARAMS", "params.yaml")).resolve()
ROOT = PARAMS_FILE.parent
SETTINGS = load_params(PARAMS_FILE)
SERVE = SETTINGS.serve
DATASET = get_dataset(SETTINGS.dataset.name)
RECORD_COLUMNS = DATASET.record_columns()
FlightRecord = record_model(DATASET.contract)
SCORE_ATTEMPTS = 3
log = logging.getLogger("loopline.serving")


def _registry() -> Registry:
    quiet_environment()
    configure_logging()
    configure_mlflow(SETTINGS.mlflow, root=ROOT)
    ledger = ROOT / SETTINGS.registry.ledger
    return Registry(SETTINGS.registry.model_copy(update={"ledger": ledger}))


@bentoml.service(name="loopline-model", workers=1, traffic={"timeout": 60})
class LateArrivalModel:
    """Scores records with the current champion; swaps it when the alias moves."""

    def __init__(self) -> None:
        self.holder = ChampionHolder(_registry(), shadow=SERVE.shadow)
        self.holder.refresh()
        self.holder.start(SERVE.poll_seconds)

    def __is_ready__(self) -> bool:
        return self.holder.snapshot()[0] is not None

    @bentoml.api(
        batchable=True, max_batch_size=SERVE.max_batch_size, max_latency_ms=SERVE.max_latency_ms
    )
    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Probability, label and version for each record (a batch from many requests)."""
        champion, shadow = self.holder.snapshot()
        if champion is None:
            raise ServiceUnavailable("no champion model is registered yet")
        frame = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
        scored = champion.score(frame)
        results = [
            {"probability": float(p), "label": int(label), "model_name": champion.name,
             "model_version": champion.version, "shadow_version": None,
             "shadow_probability": None}
            for p, label in zip(scored["probability"], scored["label"], strict=True)
        ]  # fmt: skip
        if shadow is not None:
            for row, p in zip(results, shadow.score(frame)["probability"], strict=True):
                row["shadow_version"], row["shadow_probability"] = shadow.version, float(p)
        return results

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """The loaded champion (and shadow) as /metadata shows them."""
        champion, shadow = self.holder.snapshot()
        return {
            "champion": champion.describe() if champion else None,
            "shadow": shadow.describe() if shadow else None,
        }

    @bentoml.api
    def reload(self) -> dict[str, Any]:
        """Check the aliases now instead of at the next poll."""
        changed = self.holder.refresh()
        champion, _ = self.holder.snapshot()
        return {"changed": changed, "model_version": champion.version if champion else None}


Records = Annotated[
    list[FlightRecord], Field(min_length=1, max_length=SERVE.max_records_per_request)
]  # type: ignore[valid-type]


@bentoml.service(
    name="loopline",
    workers=1,
    traffic={"timeout": 60},
    endpoints={"livez": "/healthz", "readyz": "/readyz"},
)
class LateArrivalAPI:
    """The public prediction API."""

    model = bentoml.depends(LateArrivalModel)

    def __init__(self) -> None:
        self.log = PredictionLog(
            ROOT / SERVE.prediction_log,
            DATASET.contract,
            DATASET.key_columns,
            DATASET.target_column,
        )

    @bentoml.api(route="/predict")
    async def predict(self, records: Records) -> PredictResponse:
        """Probability that each flight arrives 15+ minutes late, with the model's label."""
        request_id = uuid.uuid4().hex
        inputs = [record.model_dump() for record in records]
        scored = await self._score(inputs)
        logged_at = pd.Timestamp.now(tz="UTC").isoformat()
        days = DATASET.event_days(pd.DataFrame.from_records(inputs, columns=RECORD_COLUMNS))
        rows = [
            {**record, **result, "prediction_id": uuid.uuid4().hex, "request_id": request_id,
             "logged_at": logged_at, "event_day": day}
            for record, result, day in zip(inputs, scored, days, strict=True)
        ]  # fmt: skip
        await anyio.to_thread.run_sync(self.log.append, rows)
        fields = Prediction.model_fields
        return PredictResponse(
            request_id=request_id,
            predictions=[Prediction(**{k: row[k] for k in fields}) for row in rows],
        )

    async def _score(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Call the model service, retrying a dropped connection.

        BentoML's internal client replaces its HTTP session every 100 calls and closes the
        old one under calls still in flight (bentoml/BentoML#4971); scoring is
        idempotent, so such a call is simply sent again.
        """
        for attempt in range(1, SCORE_ATTEMPTS + 1):
            try:
                return await self.model.to_async.score(inputs)
            except aiohttp.ClientConnectionError:
                if attempt == SCORE_ATTEMPTS:
                    raise
                log.warning("model service connection dropped (attempt %d); retrying", attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @bentoml.api(route="/reload")
    async def reload(self) -> dict[str, Any]:
        """Pick up a moved champion alias now (needs the API key when one is set)."""
        return await self.model.to_async.reload()


async def metadata(_: Request) -> JSONResponse:
    """GET /metadata: served model version, alias, data version, metrics, input schema."""
    service = bentoml.get_current_service()
    described = await service.model.to_async.describe()
    schema = FlightRecord.model_json_schema()
    return JSONResponse(
        {**described, "input_schema": schema, "max_records": SERVE.max_records_per_request}
    )


# Mounted after BentoML's own routes; it answers only the paths of its routes.
LateArrivalAPI.mount_asgi_app(Starlette(routes=[Route("/metadata", metadata, methods=["GET"])]))
LateArrivalAPI.add_asgi_middleware(ApiKeyMiddleware, env_var=SERVE.api_key_env)
LateArrivalAPI.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SERVE.max_body_bytes)
LateArrivalAPI.add_asgi_middleware(JsonOnlyMiddleware)
