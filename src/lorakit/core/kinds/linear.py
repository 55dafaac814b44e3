"""``nn.Linear``: the layer of the LoRA equation, and the base of every linear-like kind.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorakit.core.lora_linear import lora_linear
from lorakit.core.registry import LayerKind

# Everything a dense float linear layer supports.
DENSE = frozenset({"slices", "serve", "all-linear", "dora", "svd-init"})

class LinearKind(LayerKind):
    """``nn.Linear``: weight (out, in); A (r, in), B (out, r)."""

    name = "linear"
    supports = DENSE

    def features(self, base):
        return base.in_features, base.out_features

    def factor_shapes(self, base, r):
        d_in, d_out = self.features(base)
        return (r, d_in), (d_out, r)

    def base_forward(self, layer, x, bias=True):
        return F.linear(x, layer.weight, layer.bias if bias else None)

    def lora_forward(self, layer, x, A, B, p, training):
        return lora_linear(x, A, B, p if training else 0.0)

    def probe(self, base, generator):
        return torch.randn(4, self.features(base)[0], generator=generator).to(base.weight)
