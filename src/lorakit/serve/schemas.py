"""Request and response bodies of the HTTP API: OpenAI's schema, plus lorakit's adapter routes.

Requests ignore fields they do not know (OpenAI clients send new ones over time), but a known field
asking for something lorakit does not do (``echo``, penalties, ``logit_bias``, ``tools``) is a
400, never silently ignored.

Log-probabilities come back in OpenAI's two shapes: chat's ``{"content": [{"token", "logprob", "bytes",
"top_logprobs": [...]}]}`` and the legacy completions' ``{"tokens", "token_logprobs", "top_logprobs",
"text_offset"}`` (:func:`chat_logprobs`, :func:`completion_logprobs`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lorakit.errors import LorakitError

_STRICT_NUMBER = {"allow_inf_nan": False}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def unsupported(self) -> str | None:
        """The first requested feature lorakit does not implement, or None."""
        return None


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(default=None, ge=1)
    # OpenAI's defaults: sampling at temperature 1 unless asked otherwise.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, **_STRICT_NUMBER)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, **_STRICT_NUMBER)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    user: str | None = None
    stream_options: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}: checked by serve.constrained.
    response_format: dict[str, Any] | None = None

    def stops(self) -> tuple[str, ...]:
        """The stop strings as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> str | None:
        if self.presence_penalty or self.frequency_penalty:
            return "presence_penalty / frequency_penalty"
        if self.logit_bias:
            return "logit_bias"
        return None

    def logprob_count(self) -> int | None:
        """Top log-probabilities per token to report: None none, 0 only the chosen token's."""
        return None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    # Text, several texts, token ids, or several lists of token ids (as OpenAI accepts).
    prompt: str | list[str] | list[int] | list[list[int]]
    # The chosen token's log-probability and the top ``logprobs`` ones (OpenAI allows 0..5).
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> str | None:
        if self.echo:
            return "echo"
        if self.best_of not in (None, 1):
            return "best_of"
        if self.suffix:
            return "suffix"
        return super().unsupported()

    def logprob_count(self) -> int | None:
        return self.logprobs


class ContentPart(BaseModel):
    """One part of a message's content; only text parts are served."""

    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of a chat."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (text parts joined); other part types are refused by the route."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def unsupported(self) -> str | None:
        if self.tools:
            return "tools"
        for m in self.messages:
            if isinstance(m.content, list) and any(p.type != "text" for p in m.content):
                return "non-text message content"
        return super().unsupported()

    def logprob_count(self) -> int | None:
        if self.top_logprobs and not self.logprobs:
            raise LorakitError("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None


class ClassifyRequest(_Request):
    """``POST /v1/classify``: one adapter (or the base) over one or more texts."""

    model: str = Field(min_length=1, max_length=512)
    input: str | list[str]

    def texts(self) -> list[str]:
        """The inputs as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class AdapterLoadRequest(_Request):
    """``POST /v1/adapters``: load an adapter by its name in the adapters folder."""

    name: str = Field(min_length=1, max_length=512)
    # Load a new version even if one is loaded (atomically, as PUT /v1/adapters/{name} does).
    replace: bool = False


def _token_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def chat_logprobs(entries: Sequence, token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    """Chat's ``logprobs`` object for :class:`~lorakit.serve.sampling.TokenLogprob` entries."""
    def item(token: int, logprob: float) -> dict[str, Any]:
        data = token_bytes(token)
        return {"token": _token_text(data), "logprob": logprob, "bytes": list(data)}

    return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}


def completion_logprobs(entries: Sequence, token_bytes: Callable[[int], bytes], offset: int = 0) -> dict[str, Any]:
    """The legacy completions' ``logprobs`` object; ``offset``: text already sent before these tokens."""
    tokens = [_token_text(token_bytes(e.token)) for e in entries]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    top = [{_token_text(token_bytes(t)): lp for t, lp in ((e.token, e.logprob), *e.top)} for e in entries]
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries], "top_logprobs": top,
            "text_offset": offsets}


def new_id(prefix: str) -> str:
    """An OpenAI-style object id."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    """Unix seconds, as OpenAI's ``created`` fields are."""
    return int(time.time())


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, which the official client turns into a typed exception."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
