"""The linear LoRA path ``s·B·A·dropout(x)`` as one autograd Function that saves the minimum.

Autograd through ``F.linear(F.linear(dropout(x), A), B)`` keeps the dropped copy of ``x`` (a second
activation-sized float tensor) for A's gradient. This Function saves ``x`` itself (the base layer
keeps it anyway, so no new memory), a *bool* dropout mask when dropout is on (1 byte per element),
A, B and the small ``h = A·x`` (tokens × r); the dropped input is recomputed in backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dropout_mask(x: Tensor, p: float) -> Tensor:
    """The keep-mask (bool, shaped like ``x``) that :func:`lora_linear` draws from torch's RNG."""
    return torch.empty(x.shape, dtype=torch.bool, device=x.device).bernoulli_(1.0 - p)


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, A: Tensor, B: Tensor, p: float) -> Tensor:
        mask = dropout_mask(x, p) if p > 0 else None
        xd = x if mask is None else x * mask / (1.0 - p)
        h = F.linear(xd, A)
        ctx.p = p
        ctx.save_for_backward(x, mask, A, B, h)
        return F.linear(h, B)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, mask, A, B, h = ctx.saved_tensors
        g2, h2 = grad.reshape(-1, grad.shape[-1]), h.reshape(-1, h.shape[-1])
        gh = g2 @ B  # (tokens, r)
        gx = gA = gB = None
        if ctx.needs_input_grad[2]:
            gB = g2.T @ h2
        if ctx.needs_input_grad[1]:
            xd = x if mask is None else x * mask / (1.0 - ctx.p)
            gA = gh.T @ xd.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[0]:
            gx = (gh @ A).view(x.shape)
            if mask is not None:
                gx = gx * mask / (1.0 - ctx.p)
        return gx, gA, gB, None


def lora_linear(x: Tensor, A: Tensor, B: Tensor, p: float = 0.0) -> Tensor:
    """``B·A·dropout_p(x)`` for ``x (..., in)``, ``A (r, in)``, ``B (out, r)``; ``p = 0`` in eval."""
    if not torch.is_grad_enabled() or not (x.requires_grad or A.requires_grad or B.requires_grad):
        xd = x if p == 0 else x * dropout_mask(x, p) / (1.0 - p)
        return F.linear(F.linear(xd, A), B)
    return _LoraLinear.apply(x, A, B, p)
