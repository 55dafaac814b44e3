"""The causal-LM loss without the full logits: chunked linear cross-entropy.

A causal LM's head turns hidden states ``(batch, length, hidden)`` into logits ``(batch, length, vocab)``;
for SmolLM2 (vocab 49,152) at batch 8 × 128 that is 200 MB in fp32, and the usual
``F.cross_entropy(logits.float(), …)`` keeps several such tensors (logits, their fp32 copy, the
log-softmax, and in backward its gradient) alive at once. Here instead (as torchtune's
``LinearCrossEntropyLoss`` and Liger's fused linear cross-entropy do):

1. only positions that carry a label are projected (prompt and padding tokens are dropped *before*
   the head, not masked after it);
2. they are projected ``chunk`` rows at a time; each chunk's logits live only while its
   log-sum-exp and its gradient are computed, in fp32;
3. the gradients with respect to the hidden states (and the head, when it is trained) are computed
   in that same pass and kept (they are as small as the hidden states), so backward only scales them.

The result equals ``F.cross_entropy(hidden @ W.T + b, targets, reduction="sum", label_smoothing=ε)``
and so do its gradients (a parity test checks both in fp32). Without grad mode (evaluation) no gradient
is formed.

Label smoothing ε (the paper's E2E runs use 0.1) mixes the one-hot target with a uniform one:
``loss = lse − (1−ε)·z_target − ε·mean(z)`` for logits ``z``, whose gradient is
``softmax − (1−ε)·one_hot − ε/vocab``; both stay per chunk, so smoothing costs no extra memory.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.data.batches import IGNORE_INDEX
from lorakit.errors import LorakitError

__all__ = ["CHUNK_ELEMENTS", "IGNORE_INDEX", "causal_lm_summed_loss", "chunk_rows", "linear_cross_entropy"]

# fp32 logits per chunk: 2²³ values = 32 MiB (170 positions of a 49,152-word vocabulary).
CHUNK_ELEMENTS = 2**23
# Model types whose causal-LM logits are exactly ``lm_head(base_model(...)[0])`` (no soft-capping or
# logit scaling): for these the loss can take the hidden states and the head's weight directly.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "smollm3", "olmo", "olmo2", "phi3"})


def chunk_rows(vocab: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Positions per chunk so that one chunk of fp32 logits holds about ``elements`` values."""
    return max(1, elements // max(vocab, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of ``cross_entropy(hidden @ weight.T + bias, targets)``; gradients formed chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int,
                smoothing: float) -> Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logits = F.linear(h, weight, bias).float()  # (c, vocab): the only vocab-sized tensor
            lse = torch.logsumexp(logits, dim=-1)
            total += _chunk_loss(logits, lse, t, smoothing)
            # d(sum of losses)/d logits = softmax − (1−ε)·one-hot − ε/vocab, formed in place of the logits.
            probs = logits.sub_(lse[:, None]).exp_()
            probs[torch.arange(t.shape[0], device=t.device), t] -= 1.0 - smoothing
            if smoothing:
                probs.sub_(smoothing / probs.shape[1])
            g = probs.to(weight.dtype)
            if need_h:
                grad_h[start:start + chunk] = g @ weight
            if need_w:
                grad_w += (g.T @ h).float()
            if need_b:
                grad_b += probs.sum(0)
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w, grad_b = ctx.grads
        w_dtype, b_dtype = ctx.dtypes
        scale = grad_out.float()
        return (
            None if grad_h is None else grad_h * scale.to(grad_h.dtype),
            None if grad_w is None else (grad_w * scale).to(w_dtype),
            None if grad_b is None else (grad_b * scale).to(b_dtype),
            None,
            None,
            None,
        )


def _chunk_loss(logits: Tensor, lse: Tensor, targets: Tensor, smoothing: float) -> Tensor:
    """Summed (label-smoothed) cross-entropy of one chunk: Σ lse − (1−ε)·z_target − ε·mean(z)."""
    loss = lse - (1.0 - smoothing) * logits.gather(1, targets[:, None]).squeeze(1)
    if smoothing:
        loss = loss - smoothing * logits.mean(dim=-1)
    return loss.sum()


@torch.no_grad()
def _no_grad_loss(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int,
                  smoothing: float) -> Tensor:
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        logits = F.linear(hidden[start:start + chunk], weight, bias).float()
        total += _chunk_loss(logits, torch.logsumexp(logits, dim=-1), targets[start:start + chunk], smoothing)
    return total


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None,
                         chunk: int | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, never holding all logits.

    ``hidden`` (n, d) are the positions that carry a label, ``weight`` (vocab, d) the output head,
    ``targets`` (n,) class ids (no ignore index: drop those rows first). Returns an fp32 scalar.
    ``chunk`` positions are projected at a time (default: :func:`chunk_rows` of the vocabulary);
    ``label_smoothing`` is ε of ``F.cross_entropy``'s argument of that name.
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise LorakitError(f"need hidden (n, d) and weight (vocab, d), got {tuple(hidden.shape)} and "
                           f"{tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise LorakitError(f"targets must have shape ({hidden.shape[0]},), got {tuple(targets.shape)}")
    chunk = chunk or chunk_rows(weight.shape[0])
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias))
    if not wants_grad:
        return _no_grad_loss(hidden, weight, bias, targets, chunk, label_smoothing)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk, label_smoothing)


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(transformer body, plain Linear head) of a Hugging Face causal LM whose logits are ``head(body)``.

    None when the model is not one of :data:`PLAIN_HEAD_TYPES` or its head is not a plain Linear
    (say, wrapped by LoRA): the caller then computes full logits.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    get_head = getattr(model, "get_output_embeddings", None)
    body = getattr(model, "base_model", None)
    if model_type not in PLAIN_HEAD_TYPES or get_head is None or body is None or body is model:
        return None
    head = get_head()
    return (body, head) if type(head) is nn.Linear else None


def causal_lm_summed_loss(model: nn.Module, batch: dict[str, Tensor], inputs: dict[str, Any] | None = None,
                          label_smoothing: float = 0.0) -> Tensor:
    """Sum over completion tokens of the next-token cross-entropy (fp32), chunked where the model allows.

    ``inputs`` are the forward's keyword arguments (default: ids and padding mask; a packed batch passes
    its per-example ``position_ids`` instead of the mask, see :func:`~lorakit.train.objectives.model_inputs`).

    Token t predicts token t+1: hidden state t is paired with label t+1, and only pairs whose label is
    not ``IGNORE_INDEX`` are projected to the vocabulary. ``label_smoothing``: ε, as in ``F.cross_entropy``.
    """
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    if inputs is None:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    parts = split_causal_lm(model)
    if parts is None:
        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1]).float()
        return F.cross_entropy(shifted, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum",
                               label_smoothing=label_smoothing)
    body, head = parts
    # use_cache=False: training needs no key/value cache (it would only hold memory).
    hidden = body(**{**inputs, "use_cache": False})[0]
    return linear_cross_entropy(hidden[:, :-1][keep], head.weight, labels[keep], head.bias,
                                label_smoothing=label_smoothing)
