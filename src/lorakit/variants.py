"""The built-in LoRA variants beyond plain LoRA, registered in :mod:`lorakit.core.variants` when
``lorakit`` is imported (as :mod:`lorakit.layer_kinds` registers layer kinds).

- DoRA (Liu et al. 2024) — ``h = m ⊙ (W0 + s·B·A)·x / ‖W0 + s·B·A‖``, norms per output row
  and detached from the graph (the paper's §4.3, as PEFT); ``m`` starts at ``‖W0‖`` and is stored
  under PEFT's key ``lora_magnitude_vector``.
- The init "gaussian": A ~ N(0, 1/r), B zero (PEFT's ``init_lora_weights="gaussian"``).
- The inits "pissa" (Meng et al. 2024: A, B from the top-r singular triplets of W0) and "olora"
  (Büyükakyüz 2024: from W0's QR) *move* ``s·B0·A0`` out of the base weight. Such an adapter is
  saved relative to the original base as ``A' = [A; A0]``, ``B' = [B, −B0]`` at rank 2r (PEFT's
  conversion), so any tool loads it as an ordinary LoRA.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorakit.core.registry import delta_matrix
from lorakit.core.variants import Init, Lora, register_variant


class Dora(Lora):
    """DoRA: magnitude ``m`` times the row-normalised direction ``W0 + s·B·A``."""

    name = "dora"
    params = {"lora_magnitude": "lora_magnitude_vector"}
    requires = frozenset({"dora"})

    @staticmethod
    def norm(layer: nn.Module, weight: Tensor) -> Tensor:
        """``‖W + s·B·A‖`` per output row (fp32, no gradient) for a base ``weight`` in base layout."""
        with torch.no_grad():
            return row_norm(layer.kind.matrix(weight.float()), layer.lora_A.float(),
                            layer.effective_B().float(), layer.scaling)

    def file_shapes(self, kind, base):
        return {"lora_magnitude_vector": (kind.features(base)[1],)}

    def column_scale(self, kind, base, A, B, scaling, extras):
        W = kind.matrix(base.weight.detach().float())
        return extras["lora_magnitude_vector"].float() / row_norm(W, A.float(), B.float(), scaling)

    def setup(self, layer):
        layer.lora_magnitude = nn.Parameter(self.norm(layer, layer.weight).to(layer.lora_A.dtype))

    def forward(self, layer, x, out):
        p = layer.dropout if layer.training else 0.0
        xd = nn.functional.dropout(x, p, True) if p > 0 else x
        if xd is x:  # the base output without bias is already there
            plain = out if layer.bias is None else out - layer.bias
        else:
            plain = layer.kind.base_forward(layer, xd, bias=False)
        scale = (layer.lora_magnitude / self.norm(layer, layer.weight)).to(out.dtype)
        return out + (scale - 1) * plain + scale * layer.lora_path(xd, dropout=False).to(out.dtype)

    def merged(self, layer, weight, remember=False):
        norm = self.norm(layer, weight)
        if remember:  # the merged weight's row norms are m: ‖W0 + s·B·A‖ cannot be recovered from it
            layer.merge_norm = norm
        factor = (layer.lora_magnitude.float() / norm)[:, None]
        return layer.kind.layout(factor * layer.kind.matrix(weight + layer.lora_delta()), layer.base)

    def unmerged(self, layer, weight):
        factor = (layer.lora_magnitude.float() / layer.merge_norm)[:, None]
        return layer.kind.layout(layer.kind.matrix(weight) / factor, layer.base) - layer.lora_delta()


def row_norm(W: Tensor, A: Tensor, B: Tensor, scaling: float) -> Tensor:
    """``‖W + s·B·A‖₂`` of each output row of the (out, in) matrix ``W``: DoRA's denominator."""
    return torch.linalg.vector_norm(W + scaling * delta_matrix(A, B), dim=1)


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
            raise ValueError(f"init={self.name!r} needs a floating-point base weight, got {layer.weight.dtype}; "
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


DORA = Dora()
register_variant(DORA)
register_variant(Gaussian())
register_variant(SvdInit("pissa"))
register_variant(SvdInit("olora"))
