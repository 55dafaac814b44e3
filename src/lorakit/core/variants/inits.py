"""The built-in inits beyond "kaiming".

- "gaussian": A ~ N(0, 1/r), B zero (PEFT's ``init_lora_weights="gaussian"``).
- "pissa" (Meng et al. 2024: A, B from the top-r singular triplets of W0) and "olora"
  (Büyükakyüz 2024: from W0's QR) *move* ``s·B0·A0`` out of the base weight. Such an adapter is
  saved relative to the original base as ``A' = [A; A0]``, ``B' = [B, −B0]`` at rank 2r (PEFT's
  conversion), so any tool loads it as an ordinary LoRA. They factor a float ``W0``: kinds declare
  it as "svd-init".
"""

from __future__ import annotations

import torch
from torch import nn

from lorakit.core.registry import delta_matrix
from lorakit.core.variants.base import Init
from lorakit.errors import LorakitError


class Gaussian(Init):
    """A ~ N(0, 1/r), B zero."""

    name = "gaussian"

    def factors(self, layer):
        with torch.no_grad():
            nn.init.normal_(layer.lora_A, std=1.0 / layer.r)
            layer.lora_B.zero_()


class SvdInit(Init):
    """PiSSA ("pissa": the top-r SVD of W0) or OLoRA ("olora": W0's QR); keeps ``lora_A0`` / ``lora_B0``."""

    requires = frozenset({"svd-init"})
    moves_base = True

    def __init__(self, name: str) -> None:
        self.name = name

    def factors(self, layer):
        if not layer.weight.is_floating_point():
            raise LorakitError(f"init={self.name!r} needs a floating-point base weight, got {layer.weight.dtype}; "
                               "initialise before quantising")
        A, B = layer.lora_A, layer.lora_B
        with torch.no_grad():
            W = layer.kind.matrix(layer.weight.detach()).float()
            r, s = layer.r, layer.scaling
            if self.name == "pissa":
                U, S, Vh = torch.linalg.svd(W, full_matrices=False)
                root = (S[:r] / s).sqrt()
                A0, B0 = root[:, None] * Vh[:r], U[:, :r] * root
            else:
                Q, R = torch.linalg.qr(W)
                A0, B0 = R[:r], Q[:, :r]
            A.copy_(A0)
            B.copy_(B0)
        layer.register_buffer("lora_A0", A0.to(A.dtype), persistent=False)
        layer.register_buffer("lora_B0", B0.to(B.dtype), persistent=False)

    def shift(self, layer, sign=-1.0):
        # W0 ← W0 − s·B0·A0 at inject (the model still computes W0); +1 at unload without merging
        # returns the original base, not the residual.
        if getattr(layer, "lora_A0", None) is not None:
            with torch.no_grad():
                delta = layer.kind.layout(delta_matrix(layer.lora_A0.float(), layer.lora_B0.float()), layer.base)
                layer.weight.copy_((layer.weight.float() + sign * layer.scaling * delta).to(layer.weight.dtype))

    def file_factors(self, layer, A, B):
        if getattr(layer, "lora_A0", None) is None:
            return A, B
        return torch.cat([A, layer.lora_A0]), torch.cat([B, -layer.lora_B0], dim=1)  # ΔW = s·[B, −B0]·[A; A0]


GAUSSIAN = Gaussian()
PISSA = SvdInit("pissa")
OLORA = SvdInit("olora")
