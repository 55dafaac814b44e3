"""``nn.Embedding``: A is looked up per token id, B maps rank to the embedding dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.core.registry import LayerKind


class EmbeddingKind(LayerKind):
    """``nn.Embedding``: weight (num, dim); A (r, num) is looked up per token, B (dim, r)."""

    name = "embedding"
    names = ("lora_embedding_A", "lora_embedding_B")

    def features(self, base):
        return base.num_embeddings, base.embedding_dim

    def factor_shapes(self, base, r):
        return (r, base.num_embeddings), (base.embedding_dim, r)

    def _embed(self, base: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
        return F.embedding(x, weight, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse)

    def base_forward(self, layer, x, bias=True):
        return self._embed(layer.base, x, layer.weight)

    def lora_forward(self, layer, x, A, B, p, training):
        return self._embed(layer.base, x, A.T) @ B.T  # no dropout: x holds token ids

    def matrix(self, weight):
        return weight.T

    def layout(self, matrix, base):
        return matrix.T

    def probe(self, base, generator):
        return torch.randint(0, base.num_embeddings, (4, 8), generator=generator).to(base.weight.device)
