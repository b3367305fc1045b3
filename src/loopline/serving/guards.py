"""HTTP guards for the service: connections and headers; intake, key, JSON-only, load.

Each answers with a small JSON error before the request reaches BentoML, so a connection
over the worker's bound gets 503, headers that stall get 408, a worker with too many open
requests answers 503 at once, a body that stalls gets 408, an oversized body 413, a
missing key 401, a non-JSON body 415 and a request over the in-flight limit 503 with
Retry-After: never a 500 or a hang.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Told the reason of every request a guard refuses (the service counts them for /metrics).
OnRefusal = Callable[[str], None]
# The reasons: shed for capacity (the three 503s), headers or a body too slow (408), a body
# too large (413).
CONNECTIONS, OPEN_REQUESTS, IN_FLIGHT, HEADER_TIMEOUT, BODY_TIMEOUT, BODY_TOO_LARGE = (
    "connections", "open_requests", "in_flight", "header_timeout", "body_timeout",
    "body_too_large",
)  # fmt: skip


def _ignore(_reason: str) -> None:
    """The default `on_refusal`: count nothing."""


# Probes and the API description stay reachable without a key.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/"})
CLOSE = (b"connection", b"close")  # uvicorn closes the connection after such an answer


Headers = list[tuple[bytes, bytes]]


def _error(message: str, extra: Headers = ()) -> tuple[Headers, bytes]:
    """A refusal's headers and JSON body, `{"error": message}`."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [*headers, *extra], body


async def _reject(send: Send, status: int, message: str, extra: Headers = ()) -> None:
    headers, body = _error(message, extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _answer_bytes(status: bytes, message: str, extra: Headers = ()) -> bytes:
    """`_reject`'s answer as a whole HTTP/1.1 response that closes the connection (bytes).

    For the protocol, below the ASGI app, where there is no `send`.
    """
    headers, body = _error(message, [*extra, CLOSE])
    lines = [b"HTTP/1.1 " + status, *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def guard_connections(
    header_s: float, max_connections: int, retry_after_s: int, on_refusal: OnRefusal = _ignore
) -> bool:
    """Bound a worker's connections, and give each request `header_s` for its headers.

    * A connection past `max_connections` open in this worker gets 503 + Retry-After and
      is closed as soon as it is accepted (uvicorn's own limit is not set by BentoML).
    * A request whose request line and headers are not all in `header_s` after it began
      (or after its connection opened) gets 408 and is closed. uvicorn keeps such a
      connection for as long as the client likes (it has no header timeout, unlike
      nginx's `client_header_timeout`), and it never reaches ASGI middleware: 500 of them
      stayed open in the serving bench. Idle keep-alive time stays uvicorn's own.

    Both live in a subclass of uvicorn's httptools protocol (the one its "auto" setting
    picks), put in that setting's place. Call it before uvicorn loads its configuration
    (BentoML imports the service first). Returns False, changing nothing, where uvicorn
    would run another protocol.
    """
    from uvicorn.protocols.http import auto  # noqa: PLC0415 - only where uvicorn serves
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

    if not issubclass(auto.AutoHTTPProtocol, HttpToolsProtocol):
        return False
    too_slow = _answer_bytes(b"408 Request Timeout",
                             f"request headers not received within {header_s:g} s")  # fmt: skip
    too_many = _answer_bytes(
        b"503 Service Unavailable", f"over capacity ({max_connections} connections open); retry",
        [(b"retry-after", str(retry_after_s).encode())],
    )  # fmt: skip

    class GuardedProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a connection bound and a header deadline."""

        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > max_connections:  # this one counted
                on_refusal(CONNECTIONS)
                self.transport.write(too_many)
                self.transport.close()
                return
            self._start_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _start_header_timer(self) -> None:
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(header_s, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_too_slow(self) -> None:
            self.header_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                self._start_header_timer()  # a pipelined request: answer the one before first
                return
            if not self.transport.is_closing():
                on_refusal(HEADER_TIMEOUT)
                self.transport.write(too_slow)
                self.transport.close()

    auto.AutoHTTPProtocol = GuardedProtocol
    return True


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


class IntakeMiddleware:
    """Bound the open requests of a worker and take each body whole, in time, or refuse it.

    It runs first, before every other guard, so what the rest of the service sees is a
    request whose body has fully arrived:

    * more than `max_open` requests open in this worker (their bodies still arriving or
      being answered): 503 + Retry-After at once, and the connection is closed;
    * a body that has not fully arrived `deadline_s` after its headers did: 408, closed
      (nginx's client_body_timeout; a stalled client no longer holds a place in the
      in-flight limit while it waits, since that limit starts counting after the body);
    * a body over `max_bytes`, by Content-Length or while it streams: 413, closed.

    `uploads` gives paths that take large bodies (a prediction job's records) their own
    (max_bytes, deadline_s).

    Closing matters: the unread rest of a refused body would otherwise be read as the next
    request on a kept-alive connection. A connection that never finishes its headers never
    reaches the app: `guard_connections` closes those.
    """

    def __init__(
        self, app: ASGIApp, max_open: int, deadline_s: float, max_bytes: int, retry_after_s: int,
        *, on_refusal: OnRefusal = _ignore, uploads: Mapping[str, tuple[int, float]] = {},
    ) -> None:  # fmt: skip
        self.app = app
        self.max_open = max_open
        self.limits = (max_bytes, deadline_s)
        self.uploads = dict(uploads)
        self.retry_after = str(retry_after_s).encode()
        self.on_refusal = on_refusal
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.open >= self.max_open:
            self.on_refusal(OPEN_REQUESTS)
            await _reject(
                send, 503, f"over capacity ({self.max_open} requests open); retry",
                [(b"retry-after", self.retry_after), CLOSE],
            )  # fmt: skip
            return
        self.open += 1
        try:
            body = await self._body(scope, receive, send)
            if body is not None:
                await self.app(scope, _replay(body, receive), send)
        finally:
            self.open -= 1

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once the request has been answered (or the client left)."""
        max_bytes, deadline_s = self.uploads.get(scope["path"], self.limits)
        too_large = f"request body over {max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            self.on_refusal(BODY_TOO_LARGE)
            await _reject(send, 413, too_large, [CLOSE])
            return None
        deadline = asyncio.get_running_loop().time() + deadline_s
        chunks: list[bytes] = []
        received = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                self.on_refusal(BODY_TIMEOUT)
                late = f"request body not received within {deadline_s:g} s"
                await _reject(send, 408, late, [CLOSE])
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > max_bytes:
                self.on_refusal(BODY_TOO_LARGE)
                await _reject(send, 413, too_large, [CLOSE])
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the buffered body, then the client's next events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class JsonOnlyMiddleware:
    """Answer 415 to a POST whose declared media type is not application/json.

    BentoML would otherwise try to parse some bodies (a multipart type without a boundary,
    for one) and fail with a 500. `also` names other media types a path takes (a
    prediction job's Parquet upload).
    """

    def __init__(self, app: ASGIApp, also: Mapping[str, frozenset[str]] = {}) -> None:
        self.app = app
        self.also = {path: {kind.encode() for kind in kinds} for path, kinds in also.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] == "http" and scope["method"] == "POST":
            declared = dict(scope.get("headers") or []).get(b"content-type")
            media_type = (declared or b"application/json").split(b";")[0].strip().lower()
            allowed = media_type == b"application/json" or media_type in self.also.get(
                scope["path"], ()
            )
            if not allowed:
                kinds = ", ".join(["application/json", *sorted(k.decode() for k in self.also.get(
                    scope["path"], ()))])  # fmt: skip
                await _reject(
                    send, 415,
                    f"send {kinds} (Content-Type), not {media_type.decode(errors='replace')}",
                )  # fmt: skip
                return
        await self.app(scope, receive, send)


class LoadShedMiddleware:
    """Answer 503 + Retry-After at once when `max_in_flight` requests are already running.

    Past capacity, queueing only makes every answer late (and clients time out and retry
    on top); shedding the excess keeps the admitted requests fast. Counting stops when a
    request ends, so the service recovers by itself as soon as load drops. Probes are
    never shed.
    """

    def __init__(
        self, app: ASGIApp, max_in_flight: int, retry_after_s: int, *,
        on_refusal: OnRefusal = _ignore,
    ) -> None:  # fmt: skip
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s).encode()
        self.on_refusal = on_refusal
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.on_refusal(IN_FLIGHT)
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
