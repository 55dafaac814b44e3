"""The OpenAI-compatible HTTP API (FastAPI) in front of a :class:`~lorakit.serve.api.LoraServer`.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream: true`` → server-sent
events; ``response_format``, ``logprobs``, ``n``, ``stop``), ``GET /v1/models``, ``POST /v1/adapters``
(``replace: true`` swaps a loaded adapter atomically), ``PUT /v1/adapters/{name}`` (the same swap),
``DELETE /v1/adapters/{name}``, ``POST /v1/classify``, ``GET /health`` (open), ``GET /metrics`` (Prometheus).

A request's ``model`` names an adapter (loaded from the adapters folder on first use) or the base
model's own name. Every error is OpenAI's JSON error object with a 4xx status: bad JSON or fields
400/422, bad key 401, unknown adapter or route 404, body too large 413, full queue 429 with
``Retry-After``, all adapter slots busy 503. A catch-all handler turns anything unexpected into a
typed JSON 500 (a bug, never a user error), so no traceback ever reaches a client.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorakit.serve.api import LoraServer
from lorakit.serve.bank import BankFull
from lorakit.serve.engine import QueueFull
from lorakit.serve.folder import AdapterNotFound
from lorakit.serve.guard import Guard
from lorakit.serve.http_generate import ApiError, Limits, handle
from lorakit.serve.metrics import ServeMetrics
from lorakit.serve.schemas import (
    AdapterLoadRequest,
    ChatCompletionRequest,
    ClassifyRequest,
    CompletionRequest,
    error_body,
    now,
)


@dataclass(frozen=True)
class HttpSettings:
    """Options of the HTTP layer (the CLI flags of ``lorakit serve``)."""

    # When set, every route but /health needs "Authorization: Bearer <api_key>".
    api_key: str | None = None
    # Largest request body accepted, in bytes.
    max_body_bytes: int = 1 << 20
    limits: Limits = field(default_factory=Limits)


# The OpenAPI description of every error answer (OpenAI's error object), so that the app's schema
# documents the statuses it really sends (checked by tests/reliability with schemathesis).
_ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, text in ((400, "bad request"), (401, "missing or invalid API key"), (404, "unknown adapter or route"),
                         (405, "method not allowed"), (409, "adapter in use"), (413, "body too large"),
                         (422, "invalid fields"), (429, "queue full"), (500, "internal error (a bug)"),
                         (503, "all adapter slots busy"))
}
# Server-sent events: "data: <JSON chunk>" lines, then "data: [DONE]" (no single JSON type fits both).
_STREAMED = {200: {"content": {"text/event-stream": {"schema": {
    "description": "OpenAI-style chunks as server-sent events, ending with the literal [DONE]"}}}}}


def _error(status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "request body is not valid JSON"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    return 422, "; ".join(parts) or "invalid request"


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_req, exc: ApiError):
        return _error(exc.status, exc.message, exc.type, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_req, exc: RequestValidationError):
        status, message = _validation_message(exc)
        return _error(status, message, "invalid_request_error", "invalid_json" if status == 400 else "invalid_body")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", code)

    @app.exception_handler(AdapterNotFound)
    async def not_found(_req, exc: AdapterNotFound):
        return _error(404, str(exc), "invalid_request_error", "model_not_found")

    @app.exception_handler(QueueFull)
    async def queue_full(_req, exc: QueueFull):
        return _error(429, str(exc), "rate_limit_error", "queue_full", {"Retry-After": "1"})

    @app.exception_handler(BankFull)
    async def bank_full(_req, exc: BankFull):
        return _error(503, str(exc), "server_error", "adapters_busy", {"Retry-After": "1"})

    @app.exception_handler(ValueError)
    async def bad_value(_req, exc: ValueError):
        return _error(400, str(exc).splitlines()[0] if str(exc) else "invalid request", "invalid_request_error",
                      "bad_request")

    @app.exception_handler(Exception)
    async def internal(_req, exc: Exception):
        # A bug, not a user error: answer typed JSON without internals (the log has the traceback).
        return _error(500, f"internal error ({type(exc).__name__})", "server_error", "internal_error")


def create_app(server: LoraServer, settings: HttpSettings | None = None) -> Guard:
    """The ASGI app for ``server``: the FastAPI routes behind the :class:`Guard` (its ``.app``).

    The caller starts the engine thread (``server.start()``; :func:`run` does).
    """
    settings = settings or HttpSettings()
    limits = settings.limits
    metrics = ServeMetrics(server)
    app = FastAPI(title="lorakit serve", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  responses=ERROR_RESPONSES)
    app.state.server, app.state.metrics = server, metrics
    _install_errors(app)

    def check_text(texts: list[str]) -> None:
        # Refuse absurdly long text before spending time tokenising it.
        limit = limits.max_prompt_tokens * 16
        if any(len(t) > limit for t in texts):
            raise ApiError(400, f"input longer than {limit} characters", code="context_length_exceeded")

    @app.post("/v1/completions", responses=_STREAMED)
    async def completions(body: CompletionRequest):
        check_text([p for p in ([body.prompt] if isinstance(body.prompt, str) else body.prompt) if isinstance(p, str)])
        return await handle(server, limits, body, metrics)

    @app.post("/v1/chat/completions", responses=_STREAMED)
    async def chat_completions(body: ChatCompletionRequest):
        check_text([m.text() for m in body.messages])
        return await handle(server, limits, body, metrics)

    @app.get("/v1/models")
    async def models():
        created = now()
        data = [{"id": server.name, "object": "model", "created": created, "owned_by": "lorakit",
                 "kind": "base", "loaded": True}]
        loaded = {entry.name: entry for entry in server.loaded_adapters()}
        for name in sorted(set(loaded) | set(server.available())):
            entry = {"id": name, "object": "model", "created": created, "owned_by": "lorakit", "kind": "adapter",
                     "parent": server.name, "loaded": name in loaded}
            if name in loaded:
                info = loaded[name]
                entry.update(rank=info.rank, modules=info.modules, task_type=info.task_type)
            data.append(entry)
        return {"object": "list", "data": data}

    def already_loaded(name: str) -> dict | None:
        try:  # another request may load or evict it at any moment
            info = server.adapter_info(name)
        except KeyError:
            return None
        return {"name": info.name, "loaded": True, "already_loaded": True, "rank": info.rank,
                "modules": info.modules}

    async def replace(name: str) -> dict:
        info, replaced = await run_in_threadpool(server.replace_adapter, name)
        return {"name": name, "loaded": True, "replaced": replaced, "rank": info.rank, "modules": info.modules,
                "ready_ms": round(info.ready_ms, 3)}

    @app.put("/v1/adapters/{name}")
    async def replace_adapter(name: str):
        return await replace(name)

    @app.post("/v1/adapters")
    async def load_adapter(body: AdapterLoadRequest):
        if body.replace:
            return await replace(body.name)
        answer = already_loaded(body.name) if server.is_loaded(body.name) else None
        if answer is not None:
            return answer
        try:
            info = await run_in_threadpool(server.add_adapter, body.name)
        except ValueError:
            # A request that needed the adapter may have loaded it since the check above: same answer.
            answer = already_loaded(body.name)
            if answer is not None:
                return answer
            raise
        return {"name": info.name, "loaded": True, "already_loaded": False, "rank": info.rank,
                "modules": info.modules, "ready_ms": round(info.ready_ms, 3)}

    @app.delete("/v1/adapters/{name}")
    async def unload_adapter(name: str):
        if not server.is_loaded(name):
            raise ApiError(404, f"adapter {name[:128]!r} is not loaded", code="model_not_found")
        try:
            await run_in_threadpool(server.remove_adapter, name)
        except KeyError:
            raise ApiError(404, f"adapter {name!r} is not loaded", code="model_not_found") from None
        except ValueError as exc:
            raise ApiError(409, str(exc), code="adapter_in_use") from None
        return {"name": name, "loaded": False}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest):
        if server.task != "classify":
            raise ApiError(400, f"{server.name!r} is served for generation; use /v1/completions")
        texts = body.texts()
        if not texts or len(texts) > limits.max_classify_inputs:
            raise ApiError(400, f"input takes 1 to {limits.max_classify_inputs} texts")
        check_text(texts)
        adapter = server.resolve_model(body.model)
        results = await run_in_threadpool(server.classify, texts, adapter, max_length=limits.max_prompt_tokens)
        return {"object": "list", "model": body.model,
                "data": [{"index": i, "label": r.label, "label_index": r.index, "probs": r.probs, "logits": r.logits}
                         for i, r in enumerate(results)]}

    @app.get("/health")
    async def health():
        engine = server.engine
        return {"status": "ok", "model": server.name, "task": server.task, "adapters_loaded": len(server.bank),
                "queue_depth": engine.queue_depth if engine else 0, "batch_size": engine.batch_size if engine else 0}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return Guard(app, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes, observe=metrics.observe)


class BackgroundServer:
    """uvicorn on a thread, bound to an already-open socket (tests and benchmarks: 127.0.0.1, port 0)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = host, self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


def run(server: LoraServer, host: str = "127.0.0.1", port: int = 8000, settings: HttpSettings | None = None) -> None:
    """Serve until interrupted (what ``lorakit serve`` calls)."""
    import uvicorn

    server.start()
    try:
        uvicorn.run(create_app(server, settings), host=host, port=port, log_level="info")
    finally:
        server.close()
