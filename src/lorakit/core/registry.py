"""Layer kinds: how LoRA attaches to each supported base layer type, looked up by exact type.

A *kind* is a small strategy object (not an ``nn.Module``) that knows, for one base layer type:
the shapes of A and B, the base layer's functional forward, the LoRA path ``B·A·x`` and the dense
``ΔW`` laid out like the base weight. One generic :class:`~lorakit.core.layers.LoraLayer` uses it.

Lookup is by the exact type's qualified name, never ``isinstance``: a subclass (a quantised Linear,
say) may compute something different and must be registered on purpose. Hugging Face's GPT-2
``Conv1D`` is registered by name so that the core never imports transformers.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerKind(Protocol):
    """What the generic LoRA layer needs to know about one base layer type."""

    name: str
    # PEFT's tensor names for A and B under the module path (e.g. "lora_A.weight").
    peft_names: tuple[str, str]
    # Whether output slices of a fused projection can be adapted separately (Linear-like only).
    sliceable: bool

    def features(self, base: nn.Module) -> tuple[int, int]:
        """(in, out) sizes: ``r·(in + out)`` is the LoRA parameter count (conv: in = C_in·k)."""

    def factor_shapes(self, base: nn.Module, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of A and B for rank r, laid out as PEFT stores them."""

    def base_forward(self, layer: nn.Module, x: Tensor) -> Tensor:
        """The base layer's own forward, computed from ``layer.weight`` / ``layer.bias``."""

    def lora_forward(self, layer: nn.Module, x: Tensor, A: Tensor, B: Tensor) -> Tensor:
        """The unscaled LoRA path ``B·A·x`` in the base output's layout."""

    def delta_weight(self, base: nn.Module, A: Tensor, B: Tensor) -> Tensor:
        """Unscaled ``B·A`` laid out like ``base.weight``."""


class LinearKind:
    """``nn.Linear``: weight (out, in); A (r, in), B (out, r)."""

    name = "linear"
    peft_names = ("lora_A.weight", "lora_B.weight")
    sliceable = True

    def features(self, base: nn.Module) -> tuple[int, int]:
        return base.in_features, base.out_features

    def factor_shapes(self, base, r):
        d_in, d_out = self.features(base)
        return (r, d_in), (d_out, r)

    def base_forward(self, layer, x):
        return F.linear(x, layer.weight, layer.bias)

    def lora_forward(self, layer, x, A, B):
        return F.linear(F.linear(x, A), B)

    def delta_weight(self, base, A, B):
        return B @ A


class HFConv1DKind(LinearKind):
    """Hugging Face GPT-2 ``Conv1D``: a linear layer whose weight is stored transposed (in, out)."""

    name = "hf_conv1d"

    def features(self, base: nn.Module) -> tuple[int, int]:
        d_in, d_out = base.weight.shape
        return d_in, d_out

    def base_forward(self, layer, x):
        size_out = x.shape[:-1] + (layer.weight.shape[1],)
        out = torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight)
        return out.view(size_out)

    def delta_weight(self, base, A, B):
        return (B @ A).T


class EmbeddingKind:
    """``nn.Embedding``: weight (num, dim); A (r, num) is looked up per token, B (dim, r)."""

    name = "embedding"
    peft_names = ("lora_embedding_A", "lora_embedding_B")
    sliceable = False

    def features(self, base: nn.Module) -> tuple[int, int]:
        return base.num_embeddings, base.embedding_dim

    def factor_shapes(self, base, r):
        return (r, base.num_embeddings), (base.embedding_dim, r)

    def _embed(self, base: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
        return F.embedding(x, weight, base.padding_idx, base.max_norm, base.norm_type,
                           base.scale_grad_by_freq, base.sparse)

    def base_forward(self, layer, x):
        return self._embed(layer.base, x, layer.weight)

    def lora_forward(self, layer, x, A, B):
        # Dropout is never applied here: x holds token ids, not activations.
        return self._embed(layer.base, x, A.T) @ B.T

    def delta_weight(self, base, A, B):
        return (B @ A).T


class ConvKind:
    """``nn.Conv1d`` / ``nn.Conv2d`` (groups=1): A is a conv with the base kernel to r channels,
    B a 1×1 conv from r channels to the output channels, as PEFT lays them out."""

    peft_names = ("lora_A.weight", "lora_B.weight")
    sliceable = False

    def __init__(self, name: str, conv) -> None:
        self.name = name
        self._conv = conv

    def features(self, base: nn.Module) -> tuple[int, int]:
        k = 1
        for size in base.kernel_size:
            k *= size
        return base.in_channels * k, base.out_channels

    def factor_shapes(self, base, r):
        if base.groups != 1:
            raise ValueError(f"LoRA on grouped convolutions is not supported (groups={base.groups})")
        ones = (1,) * len(base.kernel_size)
        return (r, base.in_channels, *base.kernel_size), (base.out_channels, r, *ones)

    def base_forward(self, layer, x):
        return layer.base._conv_forward(x, layer.weight, layer.bias)

    def lora_forward(self, layer, x, A, B):
        base = layer.base
        if base.padding_mode != "zeros":
            raise ValueError(f"LoRA on convolutions with padding_mode={base.padding_mode!r} is not supported")
        h = self._conv(x, A, None, base.stride, base.padding, base.dilation)
        return self._conv(h, B)

    def delta_weight(self, base, A, B):
        r = A.shape[0]
        return (B.reshape(B.shape[0], r) @ A.reshape(r, -1)).reshape(base.weight.shape)


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
        raise TypeError(
            f"cannot adapt {path!r}: layer type {type(module).__name__} is not supported; "
            f"supported: {', '.join(supported_types())}"
        )
    return kind


def supported_types() -> list[str]:
    """Short names of every registered base layer type."""
    return sorted(key.rsplit(".", 1)[-1] for key in _REGISTRY)


register(nn.Linear, LinearKind())
register(nn.Embedding, EmbeddingKind())
register(nn.Conv1d, ConvKind("conv1d", F.conv1d))
register(nn.Conv2d, ConvKind("conv2d", F.conv2d))
register("transformers.pytorch_utils.Conv1D", HFConv1DKind())
