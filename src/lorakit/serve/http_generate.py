"""``/v1/completions`` and ``/v1/chat/completions``: requests → engine → JSON or server-sent events.

The engine runs on its own thread and reports through callbacks; each HTTP request gets an
``asyncio.Queue`` that those callbacks feed (``call_soon_threadsafe``). A client that goes away
mid-stream cancels its rows, so the batch does not keep generating for nobody.

``n`` choices are ``n`` engine rows (each with its own seed and, with a ``response_format``, its own
grammar state); ``logprobs`` travel with the text of each update, in OpenAI's chat or completions shape.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from lorakit.serve.api import LoraServer
from lorakit.serve.bank import BankFull
from lorakit.serve.engine import QueueFull, RequestUpdate
from lorakit.serve.sampling import SamplingParams
from lorakit.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    new_id,
    now,
    usage,
)


class ApiError(Exception):
    """An error answered as OpenAI's JSON error object with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str = "bad_request",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers or {}


@dataclass(frozen=True)
class Limits:
    """What one HTTP request may ask for."""

    max_prompt_tokens: int = 2048
    max_tokens: int = 1024  # largest max_tokens accepted
    default_max_tokens: int = 16  # OpenAI's default for completions
    max_choices: int = 8  # prompts × n
    max_stop: int = 4
    max_classify_inputs: int = 64


class _Run:
    """The rows of one HTTP request inside the engine."""

    def __init__(self, server: LoraServer, count: int) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, RequestUpdate]] = asyncio.Queue()
        self.ids: list[str] = []
        self.open = set(range(count))

    def callback(self, index: int):
        def on_update(update: RequestUpdate) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, update))
        return on_update

    async def events(self) -> AsyncIterator[tuple[int, RequestUpdate]]:
        while self.open:
            index, update = await self.queue.get()
            if update.finish_reason is not None:
                self.open.discard(index)
            yield index, update

    def cancel(self) -> None:
        engine = self.server.engine
        for request_id in self.ids:
            engine.cancel(request_id)


def _prompt_items(prompt) -> list:
    """One item per prompt: a text or a list of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    return list(prompt)


def _sampling(body, max_tokens: int, index: int) -> SamplingParams:
    seed = None if body.seed is None else (body.seed + index) % 2**63  # n > 1: different samples, reproducible
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=seed,
                              stop=body.stops(), logprobs=body.logprob_count())
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def handle(server: LoraServer, limits: Limits, body: CompletionRequest | ChatCompletionRequest,
                 metrics=None) -> object:
    """Validate, queue and answer one completion request (JSON or an event stream)."""
    chat = isinstance(body, ChatCompletionRequest)
    if server.engine is None:
        raise ApiError(400, f"{server.name!r} is served for classification; use /v1/classify")
    feature = body.unsupported()
    if feature:
        raise ApiError(400, f"{feature} is not supported by this server", code="unsupported")
    adapter = server.resolve_model(body.model)
    stops = body.stops()
    if len(stops) > limits.max_stop or any(len(s) > 256 or not s for s in stops):
        raise ApiError(400, f"stop takes at most {limits.max_stop} non-empty strings of up to 256 characters")
    max_tokens = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    max_tokens = max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}")
    if chat:
        prompts = [server.encode_chat([{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                                       for m in body.messages])]
    else:
        items = _prompt_items(body.prompt)
        if not items or any(not item for item in items):
            raise ApiError(400, "prompt is empty")
        if len(items) * body.n > limits.max_choices:
            raise ApiError(400, f"{len(items)} prompts × n={body.n} exceeds {limits.max_choices} choices")
        prompts = [list(item) if isinstance(item, list) else server.encode_prompt(item) for item in items]
    if len(prompts) * body.n > limits.max_choices:
        raise ApiError(400, f"n={body.n} exceeds {limits.max_choices} choices")
    for ids in prompts:
        if len(ids) > limits.max_prompt_tokens:
            raise ApiError(400, f"prompt has {len(ids)} tokens; this server allows {limits.max_prompt_tokens}",
                           code="context_length_exceeded")
    jobs = [(ids, _sampling(body, max_tokens, i)) for ids in prompts for i in range(body.n)]
    # The token table is built once per server (seconds for a 49k vocabulary): not on the event loop,
    # and before any row is queued, so that a failure leaves nothing running.
    token_bytes = (await run_in_threadpool(server.vocab.get)).token_bytes if jobs[0][1].logprobs is not None else None
    run = _Run(server, len(jobs))
    await run_in_threadpool(_submit_all, server, run, jobs, adapter, body.response_format)
    model, prompt_tokens = body.model, sum(len(ids) for ids in prompts)  # counted once per prompt, as OpenAI does
    if body.stream:
        return StreamingResponse(_stream(run, chat, model, body.include_usage, prompt_tokens, metrics, token_bytes),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _collect(run, chat, model, len(jobs), prompt_tokens, metrics, token_bytes)


def _submit_all(server: LoraServer, run: _Run, jobs, adapter: str | None, response_format: dict | None) -> None:
    try:
        # Grammars compile here, on a worker thread: one grammar state per row, never shared.
        constraints = [server.constraint(response_format) for _ in jobs]
        for i, (ids, params) in enumerate(jobs):
            run.ids.append(server.submit(ids, params, adapter, run.callback(i), constraints[i]))
    except QueueFull as exc:
        run.cancel()
        raise ApiError(429, str(exc), "rate_limit_error", "queue_full", {"Retry-After": "1"}) from None
    except BankFull as exc:
        run.cancel()
        raise ApiError(503, str(exc), "server_error", "adapters_busy", {"Retry-After": "1"}) from None
    except ValueError as exc:
        run.cancel()
        raise ApiError(400, str(exc)) from None


def _check_failed(update: RequestUpdate) -> None:
    if update.finish_reason == "cancelled":
        raise ApiError(503, "generation cancelled: the server is shutting down", "server_error", "cancelled")
    if update.finish_reason == "error":
        if update.status < 500:
            raise ApiError(update.status, update.error or "bad adapter",
                           code="model_not_found" if update.status == 404 else "bad_adapter")
        raise ApiError(500, f"generation failed: {update.error}", "server_error", "engine_error")


def _logprobs(chat: bool, entries, token_bytes, offset: int = 0) -> dict | None:
    if token_bytes is None:
        return None
    return chat_logprobs(entries, token_bytes) if chat else completion_logprobs(entries, token_bytes, offset)


async def _collect(run: _Run, chat: bool, model: str, count: int, prompt_tokens: int, metrics,
                   token_bytes=None) -> dict:
    texts = [""] * count
    reasons: list[str | None] = [None] * count
    logprobs: list[list] = [[] for _ in range(count)]
    completion_tokens = 0
    try:
        async for index, update in run.events():
            texts[index] += update.text
            logprobs[index].extend(update.logprobs or ())
            if update.finish_reason is not None:
                _check_failed(update)
                reasons[index] = update.finish_reason
                completion_tokens += update.completion_tokens
    finally:
        if run.open:  # the client went away or an error ended the wait: stop the rest
            run.cancel()
    if metrics is not None:
        metrics.tokens(prompt_tokens, completion_tokens)
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r,
                    "logprobs": _logprobs(chat, logprobs[i], token_bytes)}
                   for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]
        kind, prefix = "chat.completion", "chatcmpl"
    else:
        choices = [{"index": i, "text": t, "finish_reason": r, "logprobs": _logprobs(chat, logprobs[i], token_bytes)}
                   for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]
        kind, prefix = "text_completion", "cmpl"
    return {"id": new_id(prefix), "object": kind, "created": now(), "model": model, "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens)}


def _sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


async def _stream(run: _Run, chat: bool, model: str, include_usage: bool, prompt_tokens: int,
                  metrics, token_bytes=None) -> AsyncIterator[bytes]:
    rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
    kind = "chat.completion.chunk" if chat else "text_completion"
    completion_tokens = 0
    started = asyncio.get_running_loop().time()
    first = True
    offsets: dict[int, int] = {}  # completions' text_offset continues across chunks

    def chunk(index: int, text: str | None, reason: str | None, role: bool = False, entries=()) -> bytes:
        logprobs = _logprobs(chat, entries, token_bytes, offsets.get(index, 0)) if entries else None
        offsets[index] = offsets.get(index, 0) + len(text or "")
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": logprobs}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": logprobs}
        return _sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]})

    try:
        if chat:
            for index in sorted(run.open):
                yield chunk(index, None, None, role=True)
        async for index, update in run.events():
            if update.finish_reason in ("error", "cancelled"):
                message = f"generation {update.finish_reason}: {update.error or 'server shutting down'}"
                yield _sse({"error": {"message": message, "type": "server_error", "param": None,
                                      "code": "engine_" + update.finish_reason}})
                break
            if update.text or update.logprobs:
                if first and metrics is not None:
                    metrics.first_token.observe(asyncio.get_running_loop().time() - started)
                first = False
                yield chunk(index, update.text, None, entries=update.logprobs or ())
            if update.finish_reason is not None:
                completion_tokens += update.completion_tokens
                yield chunk(index, None, update.finish_reason)
        if include_usage:
            yield _sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [],
                        "usage": usage(prompt_tokens, completion_tokens)})
        yield _sse("[DONE]")
    finally:
        if run.open:  # client disconnected (or an error ended the stream): free the rows
            run.cancel()
        if metrics is not None:
            metrics.tokens(prompt_tokens, completion_tokens)
