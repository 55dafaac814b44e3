"""Layer kinds: how LoRA attaches to each supported base layer type, looked up by exact type.

A *kind* is a small strategy object (not an ``nn.Module``) that declares, for one base layer type,
everything the rest of lorakit may ask: the file names of A and B, what it supports (``supports``:
"slices", "serve", "all-linear", "dora", "svd-init"), the checks a base layer must pass, the base
forward, the LoRA path ``B·A·x``, and the layout of ``ΔW`` (``matrix`` / ``layout`` convert between
the base weight and the (out, in) matrix ``B·A``). This is the one extension point: nothing outside
it compares kind names.

Lookup is by the exact type's qualified name, never ``isinstance``: a subclass (a quantised Linear,
say) may compute something different and must be registered on purpose. Hugging Face's GPT-2
``Conv1D`` is registered by name so that the core never imports transformers.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.core._torch import conv_forward
from lorakit.core.lora_linear import lora_linear

DENSE = frozenset({"slices", "serve", "all-linear", "dora", "svd-init"})


def delta_matrix(A: Tensor, B: Tensor) -> Tensor:
    """The unscaled ``B·A`` as an (out, in) matrix (conv kernels flattened): the one ΔW product."""
    r = A.shape[0]
    return B.reshape(B.shape[0], r) @ A.reshape(r, -1)


class LayerKind(Protocol):
    """What lorakit needs to know about one base layer type (see the module docstring)."""

    name: str
    names: tuple[str, str]  # PEFT's tensor names for A and B under the module path
    supports: frozenset[str]
    fan_in_fan_out: bool  # PEFT's flag: the base weight is stored (in, out)

    def check(self, base: nn.Module, path: str) -> None:
        """Raise ``ValueError`` if this particular layer cannot be adapted (the dry run calls it)."""
    def features(self, base: nn.Module) -> tuple[int, int]:
        """(in, out) sizes: ``r·(in + out)`` is the LoRA parameter count (conv: in = C_in·k)."""
    def factor_shapes(self, base: nn.Module, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of A and B for rank r, laid out as PEFT stores them."""
    def base_forward(self, layer: nn.Module, x: Tensor, bias: bool = True) -> Tensor:
        """The base layer's own forward from ``layer.weight`` (and ``layer.bias`` when ``bias``)."""
    def lora_forward(self, layer: nn.Module, x: Tensor, A: Tensor, B: Tensor, p: float, training: bool) -> Tensor:
        """The unscaled LoRA path ``B·A·dropout_p(x)`` in the base output's layout."""
    def matrix(self, weight: Tensor) -> Tensor:
        """The base weight as an (out, in) matrix, laid out like ``B·A``."""
    def layout(self, matrix: Tensor, base: nn.Module) -> Tensor:
        """An (out, in) matrix laid out like ``base.weight`` (the inverse of :meth:`matrix`)."""
    def probe(self, base: nn.Module, generator: torch.Generator) -> Tensor:
        """A random input for ``base`` (merge compares outputs on it)."""


class _Kind:
    """Defaults shared by the kinds below: PEFT's linear names, nothing extra supported, no checks."""

    names = ("lora_A.weight", "lora_B.weight")
    supports: frozenset[str] = frozenset()
    fan_in_fan_out = False

    def check(self, base, path):
        pass

    def matrix(self, weight):
        return weight

    def layout(self, matrix, base):
        return matrix


class LinearKind(_Kind):
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


class EmbeddingKind(_Kind):
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


class ConvKind(_Kind):
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


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a type: the registry's key."""
    return f"{cls.__module__}.{cls.__qualname__}"


_REGISTRY: dict[str, LayerKind] = {}


def register(base_type: type | str, kind: LayerKind) -> None:
    """Register ``kind`` for an exact base type (or its qualified name). Registering twice is an error."""
    key = base_type if isinstance(base_type, str) else qualified_name(base_type)
    if key in _REGISTRY:
        raise ValueError(f"a LoRA kind is already registered for {key} ({_REGISTRY[key].name})")
    _REGISTRY[key] = kind


def kind_for(module: nn.Module) -> LayerKind | None:
    """The kind registered for ``module``'s exact type, or None."""
    return _REGISTRY.get(qualified_name(type(module)))


def require_kind(module: nn.Module, path: str) -> LayerKind:
    """Like :func:`kind_for`, but an unsupported type raises an error listing the supported ones."""
    kind = kind_for(module)
    if kind is None:
        raise TypeError(f"cannot adapt {path!r}: layer type {type(module).__name__} is not supported; "
                        f"supported: {', '.join(supported_types())}")
    return kind


def factor_names() -> list[tuple[str, str]]:
    """Every distinct (A, B) tensor-name pair the registered kinds store (reading a file without its model)."""
    return sorted({k.names for k in _REGISTRY.values()})


def supported_types() -> list[str]:
    """Short names of every registered base layer type."""
    return sorted(key.rsplit(".", 1)[-1] for key in _REGISTRY)


register(nn.Linear, LinearKind())
register(nn.Embedding, EmbeddingKind())
register(nn.Conv1d, ConvKind("conv1d", F.conv1d))
register(nn.Conv2d, ConvKind("conv2d", F.conv2d))
register("transformers.pytorch_utils.Conv1D", HFConv1DKind())
