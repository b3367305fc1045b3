"""The intake, API key, JSON-only and load guards, around a trivial ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from loopline.serving.guards import (
    ApiKeyMiddleware,
    IntakeMiddleware,
    JsonOnlyMiddleware,
    LoadShedMiddleware,
)


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


def _client(monkeypatch: pytest.MonkeyPatch, key: str | None, limit: int = 1000) -> TestClient:
    if key is None:
        monkeypatch.delenv("TEST_API_KEY", raising=False)
    else:
        monkeypatch.setenv("TEST_API_KEY", key)
    app = Starlette(routes=[Route("/predict", echo, methods=["POST"]), Route("/healthz", echo)])
    app.add_middleware(JsonOnlyMiddleware)  # Starlette: the last added runs first
    app.add_middleware(ApiKeyMiddleware, env_var="TEST_API_KEY")
    app.add_middleware(IntakeMiddleware, max_open=8, deadline_s=5, max_bytes=limit, retry_after_s=1)
    return TestClient(app)


def test_without_a_configured_key_requests_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _client(monkeypatch, None).post("/predict", content=b"{}").status_code == 200


def test_with_a_key_requests_need_it(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(monkeypatch, "s3cret")
    assert client.post("/predict", content=b"{}").status_code == 401
    assert client.post("/predict", content=b"{}", headers={"x-api-key": "wrong"}).status_code == 401
    assert (
        client.post("/predict", content=b"{}", headers={"x-api-key": "s3cret"}).status_code == 200
    )
    bearer = {"authorization": "Bearer s3cret"}
    assert client.post("/predict", content=b"{}", headers=bearer).status_code == 200


def test_probes_stay_open_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _client(monkeypatch, "s3cret").get("/healthz").status_code == 200


def test_bodies_over_the_limit_get_413_by_header_and_by_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _client(monkeypatch, None, limit=100)
    assert client.post("/predict", content=b"x" * 100).status_code == 200
    response = client.post("/predict", content=b"x" * 101)
    assert response.status_code == 413
    assert "over 100 bytes" in response.json()["error"]
    assert response.headers["connection"] == "close"  # the unread rest must not be parsed
    streamed = client.post("/predict", content=iter([b"x" * 60, b"x" * 60]))  # chunked, no length
    assert streamed.status_code == 413


@pytest.mark.parametrize("content_type", ["multipart/form-data", "text/plain", "application/xml"])
def test_non_json_bodies_get_415(monkeypatch: pytest.MonkeyPatch, content_type: str) -> None:
    response = _client(monkeypatch, None).post(
        "/predict", content=b"{}", headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_json_with_a_charset_and_a_missing_type_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(monkeypatch, None)
    charset = {"content-type": "application/json; charset=utf-8"}
    assert client.post("/predict", content=b"{}", headers=charset).status_code == 200
    assert client.post("/predict", content=b"{}").status_code == 200


# The intake guard on its own clock: requests as ASGI calls whose bodies arrive, or stall.


async def _ok(scope: dict, receive: Any, send: Any) -> None:
    """Read the body, answer 200 with its length."""
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _request(body: bytes | None) -> tuple[dict, Any]:
    """A POST /predict scope and its `receive`: the body at once, or (None) a stalled one."""
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    events = [{"type": "http.request", "body": body or b"", "more_body": False}]

    async def receive() -> dict:
        if body is None:
            await asyncio.Event().wait()  # headers came, the body never does
        return events.pop() if events else {"type": "http.disconnect"}

    return scope, receive


async def _answer(app: Any, body: bytes | None) -> dict:
    """Send one request through `app`: its status, headers and body."""
    scope, receive = _request(body)
    answer: dict = {}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer.update(status=message["status"], headers=dict(message["headers"]))
        else:
            answer["body"] = message.get("body", b"")

    await app(scope, receive, send)
    return answer


def _intake(
    app: Any, max_open: int = 100, deadline_s: float = 0.3, refusals: list | None = None
) -> IntakeMiddleware:
    on_refusal = (refusals if refusals is not None else []).append
    return IntakeMiddleware(app, max_open, deadline_s, 1000, 2, on_refusal=on_refusal)


def test_a_stalled_body_gets_408_and_its_connection_closed() -> None:
    refusals: list[str] = []
    intake = _intake(_ok, refusals=refusals)
    answer = asyncio.run(asyncio.wait_for(_answer(intake, None), 5))
    assert answer["status"] == 408
    assert answer["headers"][b"connection"] == b"close"
    assert b"not received within 0.3 s" in answer["body"]
    assert (refusals, intake.open) == (["body_timeout"], 0)


def test_past_the_open_bound_requests_are_refused_at_once_and_admitted_again_after() -> None:
    refusals: list[str] = []

    async def scenario() -> list[int]:
        intake = _intake(_ok, max_open=3, refusals=refusals)
        stalled = [asyncio.create_task(_answer(intake, None)) for _ in range(3)]
        await asyncio.sleep(0.05)  # the three are open, waiting for bodies
        refused = await asyncio.wait_for(_answer(intake, b"{}"), 0.1)  # at once, no wait
        assert refused["headers"][b"retry-after"] == b"2"
        assert refused["headers"][b"connection"] == b"close"
        timed_out = [answer["status"] for answer in await asyncio.gather(*stalled)]
        admitted = await _answer(intake, b"{}")
        return [refused["status"], *timed_out, admitted["status"]]

    assert asyncio.run(scenario()) == [503, 408, 408, 408, 200]
    assert refusals == ["open_requests", "body_timeout", "body_timeout", "body_timeout"]


def test_stalled_bodies_do_not_hold_places_in_the_in_flight_limit() -> None:
    """One place in flight, 50 stalled clients: a normal request still gets its answer."""

    def bad(reason: str) -> None:
        raise AssertionError(f"nothing may be shed for capacity here ({reason})")

    async def scenario() -> tuple[int, list[int]]:
        app = _intake(LoadShedMiddleware(_ok, max_in_flight=1, retry_after_s=1, on_refusal=bad))
        stalled = [asyncio.create_task(_answer(app, None)) for _ in range(50)]
        await asyncio.sleep(0.05)
        normal = await asyncio.wait_for(_answer(app, b'{"records": []}'), 0.1)
        return normal["status"], [answer["status"] for answer in await asyncio.gather(*stalled)]

    status, stalled = asyncio.run(scenario())
    assert status == 200
    assert stalled == [408] * 50
