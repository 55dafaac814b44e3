"""bitsandbytes' quantized ``Linear4bit`` / ``Linear8bitLt`` (the int8 / nf4 bases of
:mod:`lorakit.models.precision`), registered by qualified name so that nothing imports bitsandbytes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorakit.core.kinds.linear import LinearKind


class QuantizedLinearKind(LinearKind):
    """A bitsandbytes quantized Linear: the base path is the quantized module's own forward.

    A and B, the LoRA path and ``ΔW = B·A`` are exactly those of ``nn.Linear`` (in, out features).
    Not DoRA (its norm ``‖W0 + s·B·A‖`` needs a float ``W0``) nor the SVD inits (they factor ``W0``):
    the weight here is packed integers.
    """

    supports = frozenset({"slices", "serve", "all-linear"})

    def __init__(self, name: str) -> None:
        self.name = name

    def base_forward(self, layer: nn.Module, x: Tensor, bias: bool = True) -> Tensor:
        """The quantized product ``W0·x`` (dequantized inside bitsandbytes, in its compute type).

        ``bias=False`` (DoRA scales the bias-free product) subtracts the bias bitsandbytes added.
        """
        out = layer.base(x)
        if not bias and layer.base.bias is not None:
            out = out - layer.base.bias.to(out.dtype)
        return out

    def probe(self, base: nn.Module, generator: torch.Generator) -> Tensor:
        """A probe input in the layer's compute type (its packed weight is an integer tensor)."""
        dtype = getattr(base, "compute_dtype", None) or torch.float32
        return torch.randn(4, self.features(base)[0], generator=generator).to(base.weight.device, dtype)
