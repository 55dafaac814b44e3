"""DoRA (Liu et al. 2024) — ``h = m ⊙ (W0 + s·B·A)·x / ‖W0 + s·B·A‖``, norms per output row
  and detached from the graph (the paper's §4.3, as PEFT); ``m`` starts at ``‖W0‖`` and is stored
  under PEFT's key ``lora_magnitude_vector``. Needs a float ``W0``: kinds declare it as "dora".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorakit.core.registry import delta_matrix
from lorakit.core.variants.base import Lora


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


DORA = Dora()
