"""The built-in layer kinds beyond ``nn.Linear``: ``nn.Embedding``, ``nn.Conv1d/2d``, Hugging Face
GPT-2's ``Conv1D`` and bitsandbytes' quantized ``Linear4bit`` / ``Linear8bitLt`` (the int8/nf4 bases of
:mod:`lorakit.models.precision`), registered in :mod:`lorakit.core.registry` when ``lorakit`` is imported.

They live outside the core as any extension would: the core keeps the protocol and the linear layer of
the LoRA equation. ``Conv1D`` and the bitsandbytes layers are registered by qualified name, so nothing
here imports transformers or bitsandbytes, and the list of supported types is the same in every process.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit._torch import conv_forward
from lorakit.core.registry import LayerKind, LinearKind, register


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


class ConvKind(LayerKind):
    """``nn.Conv1d`` / ``nn.Conv2d`` (groups=1, zero padding): A is a conv with the base kernel to r
    channels, B a 1×1 conv from r channels to the output channels, as PEFT lays them out."""

    def __init__(self, name: str, conv) -> None:
        self.name, self._conv = name, conv

    def check(self, base, path):
        if base.groups != 1:
            raise ValueError(f"cannot adapt {path!r}: LoRA on grouped convolutions (groups={base.groups}) is not supported")
        if base.padding_mode != "zeros":
            raise ValueError(f"cannot adapt {path!r}: LoRA on convolutions with padding_mode="
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


register(nn.Embedding, EmbeddingKind())
register(nn.Conv1d, ConvKind("conv1d", F.conv1d))
register(nn.Conv2d, ConvKind("conv2d", F.conv2d))
register("transformers.pytorch_utils.Conv1D", HFConv1DKind())


class QuantizedLinearKind(LinearKind):
    """A bitsandbytes quantized Linear: the base path is the quantized module's own forward.

    A and B, the LoRA path and ``ΔW = B·A`` are exactly those of ``nn.Linear`` (in, out features).
    """

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


register("bitsandbytes.nn.modules.Linear4bit", QuantizedLinearKind("linear4bit"))
register("bitsandbytes.nn.modules.Linear8bitLt", QuantizedLinearKind("linear8bit"))


class PackedLinearKind(LinearKind):
    """:class:`lorakit.models.packed.PackedLinear`: an ``nn.Linear`` in every respect but its product,
    which runs on the oneDNN-prepacked weight (serving on CPU)."""

    name = "packed_linear"

    def base_forward(self, layer: nn.Module, x: Tensor, bias: bool = True) -> Tensor:
        """``W0·x (+ b)`` through the packed copy of ``W0``."""
        return layer.base.linear(x, layer.bias if bias else None)


register("lorakit.models.packed.PackedLinear", PackedLinearKind())
