"""The LoRA layer: one generic module that wraps any registered base layer.

::

        x ──► W0 (frozen) ───────────────────────────┐
        │                                            ▼
        └──► dropout ──► A (r×in) ──► B (out×r) ──► × s ──► (+) ──► h

    h = W0·x + s·B·A·x,     s = alpha / r   (rsLoRA: alpha / √r)

A starts random and B at zero, so a freshly injected model computes exactly the base model.
The layer *owns* the base layer's parameters under their original names (``weight``, ``bias``), so
a model's state dict keeps its keys and only ``lora_A`` / ``lora_B`` are added.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lorakit.core.registry import LayerKind


class LoraLayer(nn.Module):
    """A base layer plus a rank-``r`` update; ``forward`` is the equation above."""

    def __init__(
        self,
        base: nn.Module,
        kind: LayerKind,
        r: int,
        alpha: float,
        *,
        scaling: float,
        dropout: float = 0.0,
        init: str = "kaiming",
        slices: tuple[int, tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        adopt_base(self, base)
        self.kind = kind
        self.r = r
        self.alpha = alpha
        self.scaling = scaling
        self.slices = slices
        a_shape, b_shape = kind.factor_shapes(base, r)
        ref = base.weight
        self.lora_A = nn.Parameter(torch.empty(a_shape, dtype=ref.dtype, device=ref.device))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, dtype=ref.dtype, device=ref.device))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if slices is not None:
            self.register_buffer("lora_mask", slice_mask(b_shape, slices, ref.device, ref.dtype), persistent=False)
        else:
            self.lora_mask = None
        self.merged = False
        self.disabled = False
        self.reset_lora(init)

    def reset_lora(self, init: str = "kaiming") -> None:
        """Re-initialise: A random (Kaiming-uniform like nn.Linear, or N(0, 1/r)), B zero."""
        with torch.no_grad():
            if init == "gaussian":
                nn.init.normal_(self.lora_A, std=1.0 / self.r)
            else:
                nn.init.kaiming_uniform_(self.lora_A.view(self.lora_A.shape[0], -1), a=math.sqrt(5))
            self.lora_B.zero_()

    def effective_B(self) -> Tensor:
        """B with the fused-projection mask applied (rows of un-adapted slices stay zero)."""
        return self.lora_B if self.lora_mask is None else self.lora_B * self.lora_mask

    def delta_weight(self) -> Tensor:
        """``s·B·A`` laid out like the base weight, in the adapter's dtype."""
        return self.kind.delta_weight(self.base, self.lora_A, self.effective_B()) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        """``W0·x + s·B·A·dropout(x)``; the base path only while merged or disabled."""
        out = self.kind.base_forward(self, x)
        if self.merged or self.disabled:
            return out
        A = self.lora_A
        inp = x if x.dtype in (torch.long, torch.int) else self.lora_dropout(x).to(A.dtype)
        delta = self.kind.lora_forward(self, inp, A, self.effective_B())
        return out + (delta * self.scaling).to(out.dtype)

    def __getattr__(self, name: str):
        # Attributes the model code reads from the layer it knows (in_features, padding_idx, ...)
        # resolve on the wrapped base layer.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "base"), name)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        extra = f", slices={self.slices}" if self.slices else ""
        return f"{self.kind.name}, base={type(self.base).__name__}, r={self.r}, alpha={self.alpha:g}{extra}"


def adopt_base(wrapper: nn.Module, base: nn.Module) -> None:
    """Keep ``base`` out of ``wrapper``'s module tree and register its parameters on ``wrapper``.

    The state dict then keeps the base layer's own names (``weight``, ``bias``); unload hands the
    parameters back. Direct insertion, because ``register_parameter`` would see the names on the
    base through a wrapper's ``__getattr__`` fallback.
    """
    object.__setattr__(wrapper, "base", base)
    for name, param in base.named_parameters(recurse=False):
        wrapper._parameters[name] = param


def slice_mask(b_shape: tuple[int, ...], slices: tuple[int, tuple[int, ...]], device, dtype) -> Tensor:
    """Block mask for B of a fused projection split into ``n`` equal output chunks.

    With ``k`` chunks selected, B has rank ``r·k``; chunk ``c`` (the ``j``-th selected) may only use
    rank columns ``j·r … (j+1)·r``. That is LoRA applied to each selected slice on its own (the
    paper's GPT-2 q/v setup), and B·A stays a plain dense pair that PEFT can read.
    """
    n, selected = slices
    out, rank = b_shape[0], b_shape[1]
    if out % n:
        raise ValueError(f"cannot split {out} output features into {n} equal slices")
    chunk, r = out // n, rank // len(selected)
    mask = torch.zeros(b_shape[:2], device=device, dtype=dtype)
    for j, c in enumerate(selected):
        mask[c * chunk:(c + 1) * chunk, j * r:(j + 1) * r] = 1
    return mask
