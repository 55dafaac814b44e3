"""``nn.Conv1d`` / ``nn.Conv2d``: A is a conv with the base kernel, B a 1×1 conv (PEFT's layout).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lorakit.core._torch import conv_forward
from lorakit.core.registry import LayerKind
from lorakit.errors import LorakitError


class ConvKind(LayerKind):
    """``nn.Conv1d`` / ``nn.Conv2d`` (groups=1, zero padding): A is a conv with the base kernel to r
    channels, B a 1×1 conv from r channels to the output channels, as PEFT lays them out."""

    def __init__(self, name: str, conv) -> None:
        self.name, self._conv = name, conv

    def check(self, base, path):
        if base.groups != 1:
            raise LorakitError(f"cannot adapt {path!r}: LoRA on grouped convolutions (groups={base.groups}) is not supported")
        if base.padding_mode != "zeros":
            raise LorakitError(f"cannot adapt {path!r}: LoRA on convolutions with padding_mode="
                               f"{base.padding_mode!r} is not supported (only 'zeros')")

    def features(self, base):
        return base.in_channels * math.prod(base.kernel_size), base.out_channels

    def factor_shapes(self, base, r):
        return (r, base.in_channels, *base.kernel_size), (base.out_channels, r, *(1,) * len(base.kernel_size))

    def base_forward(self, layer, x, bias=True):
        return conv_forward(layer.base, x, layer.weight, layer.bias if bias else None)

    def lora_forward(self, layer, x, A, B, p, training):
        base = layer.base
        return self._conv(self._conv(F.dropout(x, p, training), A, None, base.stride, base.padding, base.dilation), B)

    def matrix(self, weight):
        return weight.reshape(weight.shape[0], -1)

    def layout(self, matrix, base):
        return matrix.reshape(base.weight.shape)

    def probe(self, base, generator):
        size = [max(k, 5) for k in base.kernel_size]
        return torch.randn(2, base.in_channels, *size, generator=generator).to(base.weight)
