"""The ASGI layer in front of every route: API key, body-size limit, request metrics.

It runs before routing, so it also covers unknown paths, and it counts the body as it arrives, so a
chunked upload cannot get past the limit by leaving out ``Content-Length``. ``/health`` stays open
without a key (a liveness probe must not need a secret); every other path, ``/metrics`` included,
needs ``Authorization: Bearer <key>`` when a key is set.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException

from lorakit.serve.schemas import error_body

OPEN_PATHS = frozenset({"/health"})
# Metric labels come from this fixed set, so random paths cannot blow up label cardinality.
ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/adapters", "/v1/classify",
          "/health", "/metrics")


class BodyTooLarge(HTTPException):
    """The request body passed the limit while it was being read.

    An ``HTTPException`` so that FastAPI's body parsing passes it on as a 413 instead of
    wrapping it as "error parsing the body" (400).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def route_label(path: str) -> str:
    """The metric label of a request path."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/adapters/"):
        return "/v1/adapters/{name}"
    return "other"


async def send_error(send, status: int, message: str, type_: str, code: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with an OpenAI-style JSON error from raw ASGI."""
    body = json.dumps(error_body(message, type_, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: bearer key check, body limit, and one metrics observation per request."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int,
                 observe: Callable[[str, int, float], None] | None = None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes
        self.observe = observe

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        # Constant-time comparison: response timing must not reveal how much of a key matched.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_record(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_and_record)
        finally:
            if self.observe is not None:
                self.observe(route_label(scope.get("path", "")), status["code"], time.perf_counter() - start)

    async def _handle(self, scope, receive, send) -> None:
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope.get("path") not in OPEN_PATHS and not self._authorised(headers):
            await send_error(send, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                             "authentication_error", "invalid_api_key", [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, "invalid Content-Length header", "invalid_request_error", "bad_request")
                return
            if int(length) > self.max_body:
                await send_error(send, 413, f"request body larger than {self.max_body} bytes",
                                 "invalid_request_error", "body_too_large")
                return
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        await self.app(scope, counted_receive, send)
