"""Hugging Face GPT-2's ``Conv1D`` (a linear layer stored transposed), registered by qualified name
so that nothing imports transformers.
"""

from __future__ import annotations

import torch

from lorakit.core.kinds.linear import LinearKind


class HFConv1DKind(LinearKind):
    """Hugging Face GPT-2 ``Conv1D``: a linear layer whose weight is stored transposed (in, out)."""

    name = "hf_conv1d"
    fan_in_fan_out = True

    def features(self, base):
        return tuple(base.weight.shape)

    def base_forward(self, layer, x, bias=True):
        x2 = x.reshape(-1, x.shape[-1])
        out = torch.addmm(layer.bias, x2, layer.weight) if bias else x2 @ layer.weight
        return out.view(*x.shape[:-1], layer.weight.shape[1])

    def matrix(self, weight):
        return weight.T

    def layout(self, matrix, base):
        return matrix.T
