"""Frozen Linear layers with their weight prepacked for oneDNN: the serving engine's CPU matmuls.

Why: a decode step multiplies a few rows (one per running request) by every weight of the model, so
it is bound by how fast the weights stream from memory, and ``F.linear``'s BLAS call on a plain
row-major weight streams them badly at small row counts. Measured on this project's 2-core AVX2
machine (fp32, 16 rows, median of 20 calls): smollm2's LM head ``(49152, 576)`` 56.5 ms with
``F.linear`` vs 22.2 ms prepacked; its MLP ``(1536, 576)`` 0.63 vs 0.37 ms; at prefill sizes
(1,360 rows) 25.0 vs 20.6 ms. The layout is what torch's inductor uses when it freezes a model;
lorakit reaches it through :mod:`lorakit.core._torch` (private ops, one shim, tested).

:class:`PackedLinear` keeps the ``nn.Linear``'s own ``weight`` and ``bias`` parameters under their
names (state dicts, merges and DoRA's column norms see the plain weight) and holds the packed copy
beside them, so packing costs one extra copy of the packed weights in memory. Only for inference:
an input that needs gradients, lives elsewhere than on the CPU, or has another type than the weight
takes the plain ``F.linear`` path. The serving bank wraps a packed layer through its registered
kind (:mod:`lorakit.core.kinds.packed`), whose base path is this packed product.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.core._torch import mkldnn_linear, mkldnn_pack_linear

__all__ = ["PackedLinear", "pack_frozen_linears"]


class PackedLinear(nn.Module):
    """A frozen ``nn.Linear`` whose product runs on a oneDNN-prepacked copy of its weight (CPU)."""

    def __init__(self, linear: nn.Linear, packed: Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # The same Parameters under the same names (a tied LM head stays tied to the embedding).
        self.register_parameter("weight", linear.weight)
        self.register_parameter("bias", linear.bias)
        self.packed = packed

    @classmethod
    def of(cls, linear: nn.Linear, batch_hint: int | None = None) -> PackedLinear | None:
        """``linear`` packed, or None where oneDNN has no kernel for its type on its device."""
        packed = mkldnn_pack_linear(linear.weight, batch_hint)
        return None if packed is None else cls(linear, packed)

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., in) → (..., out)``: ``x·Wᵀ + b``."""
        return self.linear(x, self.bias)

    def linear(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``x·Wᵀ (+ bias)`` through the packed weight when it applies, else ``F.linear``."""
        if x.requires_grad or x.device.type != "cpu" or x.dtype != self.weight.dtype:
            return F.linear(x, self.weight, bias)
        return mkldnn_linear(x, self.packed, bias)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed"


def pack_frozen_linears(model: nn.Module, batch_hint: int | None = None) -> int:
    """Replace every frozen, bare ``nn.Linear`` of ``model`` (the LM head included) by a :class:`PackedLinear`.

    Layers with a trainable weight, and types oneDNN cannot run here (bf16 without AVX-512, fp16,
    any CUDA tensor), are left as they are. Returns how many were packed.
    """
    packed = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and not child.weight.requires_grad:
                new = PackedLinear.of(child, batch_hint)
                if new is not None:
                    setattr(module, name, new)
                    packed += 1
    return packed
