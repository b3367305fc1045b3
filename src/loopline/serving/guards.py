"""HTTP guards for the service, as ASGI middleware: API key, body size, JSON only, load.

Each answers with a small JSON error before the request reaches BentoML, so a missing key
is a 401, an oversized body a 413, a non-JSON body a 415 and a request over capacity a
503 with Retry-After, never a 500 or a hang.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and the API description stay reachable without a key.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/"})


async def _reject(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += list(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Require `x-api-key: <key>` (or `Authorization: Bearer <key>`) when a key is set.

    The key is read from the environment variable named by `env_var` at start; if that
    variable is unset or empty, the guard is off (the default on 127.0.0.1).
    """

    def __init__(self, app: ASGIApp, env_var: str) -> None:
        self.app = app
        self.key = os.environ.get(env_var, "").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] != "http" or not self.key or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key") or headers.get(b"authorization", b"").removeprefix(
            b"Bearer "
        )
        if not hmac.compare_digest(given, self.key):
            await _reject(send, 401, "missing or wrong API key (header x-api-key)")
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 to bodies over `max_bytes`, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, 413, f"request body over {self.max_bytes} bytes")
            return
        received = 0
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLargeError
            return message

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLargeError:
            if not started:
                await _reject(send, 413, f"request body over {self.max_bytes} bytes")


class JsonOnlyMiddleware:
    """Answer 415 to a POST whose declared media type is not application/json.

    BentoML would otherwise try to parse some bodies (a multipart type without a boundary,
    for one) and fail with a 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] == "http" and scope["method"] == "POST":
            declared = dict(scope.get("headers") or []).get(b"content-type")
            media_type = (declared or b"application/json").split(b";")[0].strip().lower()
            if media_type != b"application/json":
                await _reject(
                    send,
                    415,
                    "send JSON (Content-Type: application/json), "
                    f"not {media_type.decode(errors='replace')}",
                )
                return
        await self.app(scope, receive, send)


class LoadShedMiddleware:
    """Answer 503 + Retry-After at once when `max_in_flight` requests are already running.

    Past capacity, queueing only makes every answer late (and clients time out and retry
    on top); shedding the excess keeps the admitted requests fast. Counting stops when a
    request ends, so the service recovers by itself as soon as load drops. Probes are
    never shed.
    """

    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            await _reject(
                send, 503, f"over capacity ({self.max_in_flight} requests in flight); retry",
                [(b"retry-after", self.retry_after)],
            )  # fmt: skip
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class _TooLargeError(Exception):
    """Raised inside the app when the streamed body passes the limit."""
