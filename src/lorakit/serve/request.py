"""What flows through the engine: a request, the updates it gets back, and its state while it runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lorakit.serve.constrained import Constraint
from lorakit.serve.sampling import SamplingParams, TokenLogprob
from lorakit.serve.text import TextStream


@dataclass
class RequestUpdate:
    """What a request produced since its last update; ``finish_reason`` set on the last one."""

    text: str
    finish_reason: str | None = None  # "stop", "length", "cancelled", "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    # For finish_reason "error": the HTTP status it deserves (400/404: the adapter went bad or away).
    status: int = 500
    # With params.logprobs set: one entry per generated token whose text this update (or an earlier
    # one) carries; end-of-sequence tokens are not content and get none.
    logprobs: list[TokenLogprob] | None = None


@dataclass
class GenerationRequest:
    """One prompt to complete, with its adapter (``None``: the base model) and sampling rule."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None
    on_update: Callable[[RequestUpdate], None] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # A response format's grammar state (one per request, never shared): masks every step's choice.
    constraint: Constraint | None = None


class RunningSequence:
    """A request while it runs: its tokens, text stream, generator and slot."""

    def __init__(self, request: GenerationRequest, slot: int, tokenizer, key: str | None = None) -> None:
        self.request = request
        self.slot = slot
        self.key = key  # the bank key pinned for this row (None: the base model)
        self.constraint = request.constraint
        self.logprobs: list[TokenLogprob] = []  # not yet sent
        self.stream = TextStream(tokenizer, request.params.stop)
        self.generator = request.params.generator()
        self.generated = 0
        self.next_pos = len(request.prompt_ids)
        self.last_token = -1
        self.finish: str | None = None
        self.submitted = time.perf_counter()
