"""Choosing the next token of each row: greedy, or temperature + top-p sampling with a per-request seed.

Rows with a response format arrive with a token mask (:class:`~lorakit.serve.constrained.TokenMasks`),
applied to their logits before the choice. Log-probabilities are those of the model's own
distribution (the raw logits, before temperature, top-p or mask), as vLLM reports them by default:
summed over a completion they are its log-likelihood under the model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from lorakit.serve.constrained import TokenMasks

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


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
    # Log-probabilities to report per generated token: None none, 0 the chosen token's, k also the top k.
    logprobs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise LorakitError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature) \
                or not 0 <= self.temperature <= 100:
            raise LorakitError(f"temperature must be a number in [0, 100], got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise LorakitError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise LorakitError(f"seed must be an integer, got {self.seed!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise LorakitError(f"stop must be non-empty strings, got {self.stop!r}")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)
                                          or not 0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise LorakitError(f"logprobs must be an integer in 0..{MAX_TOP_LOGPROBS} or None, got {self.logprobs!r}")

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


def next_tokens(logits: Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
                masks: TokenMasks | None = None) -> list[int]:
    """The next token of every row of ``logits`` (rows, vocab), each by its own request's rule.

    ``masks``: allowed tokens of the constrained rows (the others choose from the whole vocabulary).
    """
    if masks is not None:
        logits = masks.apply(logits)
    picks = logits.argmax(-1).tolist()  # greedy rows are done in one op
    for i, p in enumerate(params):
        if p.greedy:
            continue
        row = top_p_filter(logits[i].float() / p.temperature, p.top_p)
        probs = torch.softmax(row, dim=-1)
        # Sampled on CPU with the request's generator, so a seed means the same thing anywhere.
        picks[i] = int(torch.multinomial(probs.cpu(), 1, generator=generators[i]).item())
    return picks


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and, if asked for, the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token, logprob), most likely first


def token_logprobs(logits: Tensor, picks: list[int], counts: list[int | None]) -> list[TokenLogprob | None]:
    """The log-probability of each row's chosen token under the raw ``logits (rows, vocab)``.

    ``counts[i]``: None (row wants none), 0 (the chosen token only) or k (also the top k).
    Computed in fp32 for the rows that ask, in one log-softmax.
    """
    rows = [i for i, k in enumerate(counts) if k is not None]
    out: list[TokenLogprob | None] = [None] * len(picks)
    if not rows:
        return out
    index = torch.tensor(rows, device=logits.device)
    logp = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)
    chosen = logp.gather(1, torch.tensor([[picks[i]] for i in rows], device=logits.device)).squeeze(1).tolist()
    k_max = max(counts[i] for i in rows)
    top_v, top_i = (logp.topk(k_max, dim=-1) if k_max else (logp[:, :0], logp[:, :0].long()))
    top_v, top_i = top_v.tolist(), top_i.tolist()
    for j, i in enumerate(rows):
        k = counts[i]
        out[i] = TokenLogprob(picks[i], chosen[j], tuple(zip(top_i[j][:k], top_v[j][:k], strict=True)))
    return out
