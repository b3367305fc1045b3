"""Loopline's prediction service (BentoML): the registry's champion behind a typed API.

`bentoml serve loopline.serving.service:PredictionAPI` starts it (`serving/service.py`,
the bento's entry, is this module). The public `PredictionAPI`
validates requests against the schema generated from the data contract, gives each
request and prediction an id, logs every prediction durably (group commit) before it
answers, and returns probability, label, model name and version. Intake (open requests,
body deadline and size), API key, JSON-only and load-shedding guards run before any route
sees a request. GET /healthz,
/readyz, /metadata; POST /predict, /reload; asynchronous prediction jobs: POST /jobs,
GET /jobs/{id} and /jobs/{id}/result (`loopline.serving.jobs`).

The routes are a small FastAPI app mounted on the service (BentoML serves it in its own
workers, behind its health probes, metrics and middleware, and merges its OpenAPI into
/docs.json). POST /predict, the hot path, is answered one step earlier, by the plain ASGI
`PredictRoute` (the FastAPI route documents it): it validates the raw body in one pydantic
pass into plain dicts. A `@bentoml.api` route would parse it into model objects first, and
that framework layer alone cost ~30% of a request in the serving bench (bench/README.md).

The champion is scored by its compiled scorer (`loopline.scoring`): NumPy features and a
safe-format estimator, well under a millisecond per record. `serve.batching` picks where:

* `false`: in each API worker's own process (`serve.workers` of them), no internal hop;
* `true`: in the internal `PredictionModel` service, whose `score` is a BentoML batchable
  API: records of concurrent requests are merged into one model call (adaptive batching).

Either way the scorer follows the `champion` alias and the registry's canary (polling, or
at once on /reload): a running canary answers its share of records, in shadow mode the
challenger is scored beside every answer (`loopline.serving.champion`). Settings come
from params.yaml (`LOOPLINE_PARAMS` names another file), through its Workspace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import threading
import uuid
from typing import Any

import aiohttp
import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from loopline.core.errors import DataContractError
from loopline.data import columns as cols
from loopline.infra.environment import configure_logging, quiet_environment
from loopline.infra.job_store import IdempotencyConflictError, Job
from loopline.infra.outage import one_line
from loopline.infra.prediction_log import OUTAGE_ERRORS, LogUnavailableError
from loopline.serving.champion import ChampionHolder, NoChampionError
from loopline.serving.guards import (
    ApiKeyMiddleware,
    ASGIApp,
    IntakeMiddleware,
    JsonOnlyMiddleware,
    LoadShedMiddleware,
    Receive,
    Scope,
    Send,
    guard_connections,
)
from loopline.serving.jobs import (
    PARQUET_TYPES,
    RunRequester,
    check_upload,
    encode_records,
    result_parquet,
)
from loopline.serving.schema import Prediction, PredictResponse, RequestSchema, required_fields
from loopline.workspace import Workspace

# BentoML reads batching, workers and limits from the decorators, so settings load at import.
WORKSPACE = Workspace.load()
SERVE = WORKSPACE.params.serve
DATASET = WORKSPACE.dataset
RECORD_FIELDS = DATASET.record_fields()
REQUEST = RequestSchema.of(
    DATASET.contract, SERVE.max_records_per_request, DATASET.record_type_name
)
JOBS = WORKSPACE.params.jobs
JOB_REQUEST = RequestSchema.of(DATASET.contract, JOBS.max_records, DATASET.record_type_name)
REQUIRED = required_fields(DATASET.contract)
MAX_KEY_CHARS = 255  # an Idempotency-Key header
SCORE_ATTEMPTS = 3
# Beside BentoML's own request metrics on /metrics (every answer by route and status):
# why a guard refused a request, so alerts can tell shedding from failing (loop/prometheus).
REFUSED = bentoml.metrics.Counter(
    name="loopline_requests_refused",
    documentation="Requests a guard refused: connections, open_requests or in_flight "
    "(shed, 503), header_timeout or body_timeout (408), body_too_large (413)",
    labelnames=["reason"],
)
CONNECTION_CLOSED = "Connection closed."  # aiohttp's message when a session closes mid-read
log = logging.getLogger("loopline.serving")


def _holder() -> ChampionHolder:
    """The champion (and a canary or shadow), loaded and followed; one scoring thread."""
    quiet_environment()
    configure_logging()
    holder = ChampionHolder(
        WORKSPACE.registry, shadow=SERVE.shadow, key=DATASET.key_columns, threads=1
    )
    holder.refresh()
    holder.start(SERVE.poll_seconds)
    return holder


def score_with(holder: ChampionHolder, columns: cols.Columns) -> list[dict[str, Any]]:
    """The holder's scores; no loaded model is a 503 naming why (e.g. a refused version)."""
    try:
        return holder.score(columns)
    except NoChampionError as error:
        raise ServiceUnavailable(str(error)) from None


# With `serve.tracing` off, BentoML's OpenTelemetry middleware skips every URL: it would
# otherwise make a span per request and per message sent (~0.2 ms of a worker's CPU per
# request in the serving bench), recorded only where BentoML's tracing has an exporter.
NO_SPANS = {"excluded_urls": [".*"]}
# BentoML's client of a dependency opens a new HTTP session every `max_requests` calls
# (default 100) and closes the old one under the calls still in flight; with one model
# worker there is nothing to rebalance, so the session lives as long as the process.
KEEP_CONNECTION = {"max_requests": 2**31 - 1, "max_age": 365 * 86400.0}


@bentoml.service(
    name="loopline-model", workers=1, traffic={"timeout": 60}, runner_connection=KEEP_CONNECTION
)
class PredictionModel:
    """Scores records with adaptive batching (started only when `serve.batching` is on)."""

    def __init__(self) -> None:
        self.holder = _holder()

    def __is_ready__(self) -> bool:
        return self.holder.snapshot().champion is not None

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


@bentoml.service(
    name="loopline",
    workers=SERVE.workers,
    traffic={"timeout": 60},
    endpoints={"livez": "/healthz", "readyz": "/readyz"},
    metrics={"enabled": SERVE.metrics},
    logging={"access": {"enabled": SERVE.access_log}},
    tracing={} if SERVE.tracing else NO_SPANS,
)
class PredictionAPI:
    """The public prediction API (its HTTP routes are `routes` below)."""

    if SERVE.batching:
        model = bentoml.depends(PredictionModel)

    def __init__(self) -> None:
        self.holder = None if SERVE.batching else _holder()
        self.log = WORKSPACE.open_prediction_log(SERVE.log_commit_delay_ms)
        self.jobs = WORKSPACE.job_store
        api_url = WORKSPACE.params.prefect.api_url or os.environ.get("PREFECT_API_URL")
        self.runs = RunRequester(api_url, JOBS.lease_s)
        threading.Thread(target=self._resume_jobs, name="resume-jobs", daemon=True).start()

    def _resume_jobs(self) -> None:
        """Ask for a score-jobs run when jobs were left unfinished (the service restarted)."""
        try:
            unfinished = self.jobs.unfinished()
        except OUTAGE_ERRORS as error:
            log.warning("job store unreachable at start (%s)", one_line(error))
            return
        if unfinished:
            log.info("%d jobs unfinished at start: asking for a score-jobs run", len(unfinished))
            self.runs.request("resume")

    def __is_ready__(self) -> bool:
        """A champion loaded (when scoring here) and the prediction log taking commits."""
        if self.log.outage.down:
            return False
        return self.holder is None or self.holder.snapshot().champion is not None

    async def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Score validated records, log every prediction durably, then answer.

        A prediction's id is its request's (a random UUID) and its position: unique, and
        one request's rows sit together in the log's primary-key index.
        """
        request_id = uuid.uuid4().hex
        columns = cols.from_records(records, RECORD_FIELDS)
        scored = await self._score(records, columns)
        logged_at = dt.datetime.now(dt.UTC).isoformat()
        days = WORKSPACE.axis.event_days(columns)
        rows = [
            {**record, **result, "prediction_id": f"{request_id}-{i}", "request_id": request_id,
             "logged_at": logged_at, "event_day": day}
            for i, (record, result, day) in enumerate(zip(records, scored, days, strict=True))
        ]  # fmt: skip
        try:
            await self.log.store(rows)  # answered only once stored
        except LogUnavailableError as error:  # a database outage: 503, retry later
            raise ServiceUnavailable(str(error)) from None
        return {
            "request_id": request_id,
            "predictions": [{name: row[name] for name in ANSWERED} for row in rows],
        }

    async def _score(
        self, records: list[dict[str, Any]], columns: cols.Columns
    ) -> list[dict[str, Any]]:
        """Score in this process, or through the batching model service.

        BentoML's internal client replaces its HTTP session every 100 calls and closes the
        old one under calls still in flight (bentoml/BentoML#4971): the call fails with a
        connection error, or with aiohttp's RuntimeError("Connection closed.") when the
        body was being read. Scoring is idempotent, so such a call is simply sent again.
        """
        if self.holder is not None:
            return score_with(self.holder, columns)
        for attempt in range(1, SCORE_ATTEMPTS + 1):
            try:
                return await self.model.to_async.score(records)
            except (aiohttp.ClientConnectionError, RuntimeError) as error:
                dropped = not isinstance(error, RuntimeError) or str(error) == CONNECTION_CLOSED
                if not dropped or attempt == SCORE_ATTEMPTS:
                    raise
                log.warning("model service connection dropped (attempt %d); retrying", attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def describe(self) -> dict[str, Any]:
        """What /metadata shows about the served models."""
        if self.holder is not None:
            return self.holder.describe()
        return await self.model.to_async.describe()

    async def reload(self) -> dict[str, Any]:
        """Check the aliases now."""
        if self.holder is not None:
            return self.holder.reload()
        return await self.model.to_async.reload()


ANSWERED = tuple(Prediction.model_fields)  # what each prediction in an answer carries
# BentoML's OpenTelemetry middleware already traces each request; FastAPI's own telemetry
# would check its providers on every request (~3% of a worker in the serving profile).
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}
routes = FastAPI(
    title="loopline", openapi_url=None, docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers, media_type="application/json")


def _failure(error: BentoMLException) -> Response:
    """A failed call as its HTTP status and one-line reason.

    503 (no model can be loaded, or the prediction log is down) carries Retry-After.
    """
    status = int(error.error_code)
    retry = {"retry-after": str(SERVE.retry_after_s)} if status == 503 else None
    return _json(status, {"error": error.message}, retry)


@routes.post(
    "/predict",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": REQUEST.json_schema()}},
        }
    },
    responses={
        200: {"model": PredictResponse, "description": "One prediction per record, in order"},
        400: {"description": "The body breaks the input schema; `details` name each field"},
        503: {"description": "No model loaded (the reason is named), or over capacity"},
    },
)
async def predict(request: Request) -> Response:
    """Each record's probability of the dataset's positive class, with the model's label.

    This route describes /predict in the OpenAPI document; requests are answered by
    `PredictRoute`, ahead of it, with the same `answer_predict`.
    """
    return await answer_predict(await request.body())


async def answer_predict(body: bytes) -> Response:
    """A /predict body's answer: the predictions, a 400 naming each bad field, or a 503."""
    try:
        records = REQUEST.records(body)
    except ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        return _json(400, {"error": f"{error.error_count()} invalid input(s)", "details": details})
    try:
        return _json(200, await bentoml.get_current_service().predict(records))
    except BentoMLException as error:
        return _failure(error)


class PredictRoute:
    """POST /predict as plain ASGI, answered before BentoML's router and the mounted app.

    The innermost of the service's middleware: BentoML's own (metrics by route, tracing,
    the request timeout) and the guards still see every request. Skipping the router, the
    mount and FastAPI's request handling saved ~0.18 ms of a worker's CPU per one-record
    request in the serving bench (bench/README.md), a sixth of what such a request costs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer POST /predict; pass anything else on."""
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:  # the intake guard hands the body over whole: one message
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        response = await answer_predict(b"".join(chunks))
        await response(scope, receive, send)


@routes.get("/metadata")
async def metadata() -> dict[str, Any]:
    """Served model version, alias, data version, metrics, input schema."""
    described = await bentoml.get_current_service().describe()
    schema = REQUEST.record_json_schema()
    return {**described, "input_schema": schema, "max_records": SERVE.max_records_per_request}


@routes.post("/reload")
async def reload() -> Response:
    """Pick up a moved champion alias now (needs the API key when one is set)."""
    try:
        return _json(200, await bentoml.get_current_service().reload())
    except BentoMLException as error:
        return _failure(error)


def _job_answer(job: Job, status: int = 200) -> Response:
    """A job's status, where to follow it and where its result will be."""
    links = {"status_url": f"/jobs/{job.job_id}", "result_url": f"/jobs/{job.job_id}/result"}
    return _json(status, {**job.public(), **links}, {"location": links["status_url"]})


def _store_down(error: Exception) -> Response:
    return _json(503, {"error": f"job store unavailable: {one_line(error)}"},
                 {"retry-after": str(SERVE.retry_after_s)})  # fmt: skip


@routes.post(
    "/jobs",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": JOB_REQUEST.json_schema()},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": MAX_KEY_CHARS},
            }
        ],
    },
    responses={
        202: {"description": "Queued: the job's id, status and result URLs"},
        200: {"description": "The job a retried submit (same Idempotency-Key) created"},
        400: {"description": "The records break the input schema, or the file is unusable"},
        422: {"description": "The Idempotency-Key was used for different records"},
    },
)
async def submit_job(request: Request) -> Response:
    """Many records (JSON like /predict, or a Parquet file) scored later; answers at once."""
    service = bentoml.get_current_service()
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
        return _json(400, {"error": f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters"})
    body = await request.body()
    try:
        if media in PARQUET_TYPES:
            rows = await asyncio.to_thread(
                check_upload, body, RECORD_FIELDS, REQUIRED, JOBS.max_records
            )
            data = body
        else:
            records = await asyncio.to_thread(JOB_REQUEST.records, body)  # a million: seconds
            rows, data = len(records), await asyncio.to_thread(encode_records, records,
                                                               RECORD_FIELDS)  # fmt: skip
        job, created = await asyncio.to_thread(service.jobs.submit, data, rows,
                                               JOBS.chunk_rows, key)  # fmt: skip
    except ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        return _json(400, {"error": f"{error.error_count()} invalid input(s)", "details": details})
    except DataContractError as error:
        return _json(400, {"error": str(error)})
    except IdempotencyConflictError as error:
        return _json(422, {"error": str(error)})
    except OUTAGE_ERRORS as error:
        return _store_down(error)
    if created:
        _ask_for_run("submitted", job.job_id)
    return _job_answer(job, 202 if created else 200)


ASKING: set[asyncio.Task] = set()  # run requests under way (a task needs a reference)


def _ask_for_run(reason: str, job_id: str) -> None:
    """Ask Prefect for a score-jobs run in the background: the answer does not wait for it."""
    runs = bentoml.get_current_service().runs
    task = asyncio.create_task(asyncio.to_thread(runs.request, reason, job_id))
    ASKING.add(task)
    task.add_done_callback(ASKING.discard)


async def _known_job(job_id: str) -> Job | Response:
    """The job, or the answer saying why not (unknown: 404; store down: 503)."""
    try:
        job = await asyncio.to_thread(bentoml.get_current_service().jobs.get, job_id)
    except OUTAGE_ERRORS as error:
        return _store_down(error)
    return job if job is not None else _json(404, {"error": f"no job {job_id}"})


@routes.get("/jobs/{job_id}")
async def job_status(job_id: str) -> Response:
    """Queued, running (rows done of rows), done, or failed with its reason."""
    job = await _known_job(job_id)
    if isinstance(job, Response):
        return job
    if job.claimable:  # waiting for a runner, or its runner went silent: ask again
        _ask_for_run("waiting", job_id)
    return _job_answer(job)


@routes.get("/jobs/{job_id}/result")
async def job_result(job_id: str) -> Response:
    """A done job's rows with their scores, as one Parquet file (409 until it is done)."""
    job = await _known_job(job_id)
    if isinstance(job, Response):
        return job
    if job.state != "done":
        why = f": {job.reason}" if job.reason else ""
        return _json(409, {"error": f"job {job_id} is {job.state}{why}", "state": job.state})
    store = bentoml.get_current_service().jobs
    try:
        data = await asyncio.to_thread(result_parquet, store, job_id)
    except OUTAGE_ERRORS as error:
        return _store_down(error)
    disposition = f'attachment; filename="{job_id}.parquet"'
    return Response(data, 200, {"content-disposition": disposition},
                    media_type="application/vnd.apache.parquet")  # fmt: skip


# Mounted after BentoML's own routes (probes, metrics, /docs.json); it answers its paths.
PredictionAPI.mount_asgi_app(routes)
# The first added runs first: intake (open requests, body deadline and size) before the rest.


def count_refusal(reason: str) -> None:
    """Count a request a guard refused, by why."""
    REFUSED.labels(reason=reason).inc()


if not guard_connections(
    SERVE.client_timeout_s, SERVE.max_connections, SERVE.retry_after_s, count_refusal
):
    log.warning("uvicorn runs no httptools protocol here: no connection bound, no header deadline")
PredictionAPI.add_asgi_middleware(
    IntakeMiddleware, max_open=SERVE.max_open_requests, deadline_s=SERVE.client_timeout_s,
    max_bytes=SERVE.max_body_bytes, retry_after_s=SERVE.retry_after_s, on_refusal=count_refusal,
    uploads={"/jobs": (JOBS.max_body_bytes, JOBS.upload_timeout_s)},
)  # fmt: skip
PredictionAPI.add_asgi_middleware(ApiKeyMiddleware, env_var=SERVE.api_key_env)
PredictionAPI.add_asgi_middleware(JsonOnlyMiddleware, also={"/jobs": PARQUET_TYPES})
PredictionAPI.add_asgi_middleware(
    LoadShedMiddleware, max_in_flight=SERVE.max_in_flight, retry_after_s=SERVE.retry_after_s,
    on_refusal=count_refusal,
)  # fmt: skip
PredictionAPI.add_asgi_middleware(PredictRoute)
