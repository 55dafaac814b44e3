"""Choosing the next token of each row: greedy, or temperature + top-p sampling with a per-request seed."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    """How one request generates. Validated once; wrong values raise ``ValueError``."""

    # Most new tokens to generate (the prompt is not counted).
    max_tokens: int = 16
    # 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    temperature: float = 0.0
    # Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p.
    top_p: float = 1.0
    # Seed of this request's own generator: the same seed gives the same tokens, whatever the batch.
    seed: int | None = None
    # Generation ends before the first occurrence of any of these strings (not included in the text).
    stop: tuple[str, ...] = ()
    # Keep generating past end-of-sequence tokens (benchmarks that need exactly max_tokens tokens).
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature) \
                or not 0 <= self.temperature <= 100:
            raise ValueError(f"temperature must be a number in [0, 100], got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        """True when the next token is always the argmax."""
        return self.temperature == 0

    def generator(self) -> torch.Generator | None:
        """A fresh generator for one request (``None`` for greedy requests, which draw nothing)."""
        if self.greedy:
            return None
        seed = self.seed if self.seed is not None else random.SystemRandom().randrange(2**63)
        return torch.Generator().manual_seed(seed % 2**64)


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Logits with every token outside the top-p nucleus set to -inf (1-D input)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop a token when the mass *before* it already reaches top_p; the first token always stays.
    drop = (probs.cumsum(-1) - probs) >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(0, order, sorted_logits)


def next_tokens(logits: Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]) -> list[int]:
    """The next token of every row of ``logits`` (rows, vocab), each by its own request's rule."""
    picks = logits.argmax(-1).tolist()  # greedy rows are done in one op
    for i, p in enumerate(params):
        if p.greedy:
            continue
        row = top_p_filter(logits[i].float() / p.temperature, p.top_p)
        probs = torch.softmax(row, dim=-1)
        # Sampled on CPU with the request's generator, so a seed means the same thing anywhere.
        picks[i] = int(torch.multinomial(probs.cpu(), 1, generator=generators[i]).item())
    return picks
