"""The LoRA layer: one generic module that wraps any registered base layer.

::

        x ──► W0 (frozen) ───────────────────────────┐
        │                                            ▼
        └──► dropout ──► A (r×in) ──► B (out×r) ──► × s ──► (+) ──► h

    h = W0·x + s·B·A·x,     s = alpha / r   (rsLoRA: alpha / √r)

A starts random and B at zero, so a freshly injected model computes exactly the base model. The
layer *owns* the base layer's parameters under their original names (``weight``, ``bias``), so a
model's state dict keeps its keys and only ``lora_A`` / ``lora_B`` are added. It asks its *kind*
(registry) for the base forward, the LoRA path and the ΔW layout, and its *variant* (LoRA, DoRA)
for what to compute from them.

Dtype policy (a low-precision frozen base with fp32 masters A/B): when ``x`` is bf16/fp16 and A is
fp32, the LoRA matmuls run in x's dtype on casts of A and B (small); x is never cast up (that would
keep an fp32 copy of every activation for backward). The result is added to the base output in its
dtype and gradients reach the fp32 A/B through the casts. On linear layers the path saves only
``x`` (shared with the base), a bool dropout mask when dropout is on, and rank-sized tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorakit.core._torch import own_parameter
from lorakit.core.registry import LayerKind, delta_matrix
from lorakit.core.variants import INITS, LORA, Lora, lookup
from lorakit.errors import LorakitError


class LoraLayer(nn.Module):
    """A base layer plus a rank-``r`` update; ``forward`` is the equation above."""

    def __init__(self, base: nn.Module, kind: LayerKind, r: int, alpha: float, *, scaling: float,
                 dropout: float = 0.0, init: str = "kaiming", slices: tuple[int, tuple[int, ...]] | None = None,
                 variant: Lora = LORA) -> None:
        super().__init__()
        adopt_base(self, base)
        self.kind, self.variant = kind, variant
        self.r, self.alpha, self.scaling, self.dropout, self.slices = r, alpha, scaling, dropout, slices
        a_shape, b_shape = kind.factor_shapes(base, r)
        ref = base.weight
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        self.lora_A = nn.Parameter(torch.empty(a_shape, dtype=dtype, device=ref.device))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, dtype=dtype, device=ref.device))
        if slices is not None:
            self.register_buffer("lora_mask", slice_mask(b_shape, slices, ref.device, dtype), persistent=False)
        else:
            self.lora_mask = None
        self.merged = False
        self.disabled = False
        self.initializer = lookup(INITS, "init", init)  # inject / unload ask it to shift the base weight
        self.initializer.factors(self)
        variant.setup(self)
        self.train(base.training)  # a layer wrapped in eval mode must not start dropping out

    def reset_lora(self, init: str = "kaiming") -> None:
        """Re-initialise A and B (``init`` as in :class:`~lorakit.core.spec.LoraSpec`)."""
        lookup(INITS, "init", init).factors(self)

    def effective_B(self) -> Tensor:
        """B with the fused-projection mask applied (rows of un-adapted slices stay zero)."""
        return self.lora_B if self.lora_mask is None else self.lora_B * self.lora_mask

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this adapter trains, by attribute name (A, B and the variant's extras)."""
        names = ("lora_A", "lora_B", *self.variant.params)
        return {n: getattr(self, n) for n in names}

    def lora_delta(self) -> Tensor:
        """``s·B·A`` laid out like the base weight, in float32."""
        return self.kind.layout(delta_matrix(self.lora_A.float(), self.effective_B().float()) * self.scaling, self.base)

    def delta_weight(self) -> Tensor:
        """What :func:`~lorakit.core.inject.merge` adds to the base weight (float32, its layout)."""
        weight = self.weight.float() if self.weight.is_floating_point() else None  # None: packed quantized base
        return self.lora_delta() if weight is None else self.variant.merged(self, weight) - weight

    def lora_path(self, x: Tensor, dropout: bool = True) -> Tensor:
        """``s·B·A·dropout(x)`` (see the dtype policy in the module docstring)."""
        A, B = self.lora_A, self.effective_B()
        if x.is_floating_point() and x.dtype != A.dtype:
            A, B = A.to(x.dtype), B.to(x.dtype)
        p = self.dropout if dropout else 0.0
        return self.kind.lora_forward(self, x, A, B, p, self.training) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        """``W0·x + s·B·A·dropout(x)`` (or the variant's form); the base path only while merged or disabled."""
        out = self.kind.base_forward(self, x)
        if self.merged or self.disabled:
            return out
        return self.variant.forward(self, x, out)

    def __getattr__(self, name: str):
        return base_getattr(self, name)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        extra = f", slices={self.slices}" if self.slices else ""
        variant = "" if self.variant is LORA else f", {self.variant.name}"
        return f"{self.kind.name}, base={type(self.base).__name__}, r={self.r}, alpha={self.alpha:g}{variant}{extra}"


def adopt_base(wrapper: nn.Module, base: nn.Module) -> None:
    """Keep ``base`` out of ``wrapper``'s module tree and register its parameters on ``wrapper``.

    The state dict then keeps the base layer's own names (``weight``, ``bias``); unload hands the
    parameters back.
    """
    object.__setattr__(wrapper, "base", base)
    for name, param in base.named_parameters(recurse=False):
        own_parameter(wrapper, name, param)


def base_getattr(wrapper: nn.Module, name: str):
    """``__getattr__`` of a wrapper: attributes model code reads from the layer it knows
    (``in_features``, ``padding_idx``, ...) resolve on the wrapped base layer."""
    try:
        return nn.Module.__getattr__(wrapper, name)
    except AttributeError:
        return getattr(object.__getattribute__(wrapper, "base"), name)


def slice_mask(b_shape: tuple[int, ...], slices: tuple[int, tuple[int, ...]], device, dtype) -> Tensor:
    """Block mask for B of a fused projection split into ``n`` equal output chunks.

    With ``k`` chunks selected, B has rank ``r·k``; chunk ``c`` (the ``j``-th selected) may only use
    rank columns ``j·r … (j+1)·r``. That is LoRA applied to each selected slice on its own (the
    paper's GPT-2 q/v setup), and B·A stays a plain dense pair that PEFT can read.
    """
    n, selected = slices
    out, rank = b_shape[0], b_shape[1]
    if out % n:
        raise LorakitError(f"cannot split {out} output features into {n} equal slices")
    chunk, r = out // n, rank // len(selected)
    mask = torch.zeros(b_shape[:2], device=device, dtype=dtype)
    for j, c in enumerate(selected):
        mask[c * chunk:(c + 1) * chunk, j * r:(j + 1) * r] = 1
    return mask
