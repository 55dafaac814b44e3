""":class:`lorakit.models.packed.PackedLinear` (a frozen ``nn.Linear`` on a oneDNN-prepacked weight),
registered by qualified name: core does not import :mod:`lorakit.models`.
"""

from __future__ import annotations

from torch import Tensor, nn

from lorakit.core.kinds.linear import DENSE, LinearKind


class PackedLinearKind(LinearKind):
    """:class:`lorakit.models.packed.PackedLinear`: an ``nn.Linear`` in every respect but its product,
    which runs on the oneDNN-prepacked weight (serving on CPU)."""

    name = "packed_linear"
    # Not the SVD inits: they rewrite W0 in place, and the packed copy the product runs on would keep the old one.
    supports = DENSE - {"svd-init"}

    def base_forward(self, layer: nn.Module, x: Tensor, bias: bool = True) -> Tensor:
        """``W0·x (+ b)`` through the packed copy of ``W0``."""
        return layer.base.linear(x, layer.bias if bias else None)
