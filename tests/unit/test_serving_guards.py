"""The API key and body-size guards, around a trivial ASGI app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from loopline.serving.guards import ApiKeyMiddleware, BodyLimitMiddleware, JsonOnlyMiddleware


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


def _client(monkeypatch: pytest.MonkeyPatch, key: str | None, limit: int = 1000) -> TestClient:
    if key is None:
        monkeypatch.delenv("TEST_API_KEY", raising=False)
    else:
        monkeypatch.setenv("TEST_API_KEY", key)
    app = Starlette(routes=[Route("/predict", echo, methods=["POST"]), Route("/healthz", echo)])
    app.add_middleware(ApiKeyMiddleware, env_var="TEST_API_KEY")
    app.add_middleware(BodyLimitMiddleware, max_bytes=limit)
    app.add_middleware(JsonOnlyMiddleware)
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
