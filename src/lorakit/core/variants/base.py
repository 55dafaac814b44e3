"""The two strategy protocols with their plain defaults: :class:`Lora` (a variant) and :class:`Init` ("kaiming").

A *variant* decides what a :class:`~lorakit.core.layers.LoraLayer` computes from its A, B (and any
extra parameters it declares): the forward, the merged weight and the file keys of its extras. An
*init* fills A and B (``LoraSpec.init``). DoRA (:mod:`.dora`) and the other inits
(:mod:`.inits`) subclass these; :mod:`lorakit.core.variants` holds the registry. rsLoRA is a scaling
(``LoraSpec.scaling``), LoRA+ an optimizer setting.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Lora:
    """Plain LoRA: ``h = W0·x + s·B·A·x``; merge adds ``s·B·A``."""

    name = "lora"
    # Extra parameters: attribute on the layer -> PEFT's file name under the module path.
    params: dict[str, str] = {}
    requires: frozenset[str] = frozenset()  # what the layer kind must support

    def setup(self, layer: nn.Module) -> None:
        """Create the variant's extra parameters on ``layer``."""

    def forward(self, layer: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        """``out`` (the base output ``W0·x + b``) plus the adapter's contribution."""
        return out + layer.lora_path(x).to(out.dtype)

    def file_shapes(self, kind, base: nn.Module) -> dict[str, tuple[int, ...]]:
        """File name -> shape of the extra tensors an adapter of this variant stores per module."""
        return {}

    def column_scale(self, kind, base: nn.Module, A: Tensor, B: Tensor, scaling: float,
                     extras: dict[str, Tensor]) -> Tensor | None:
        """Per-output scale ``c`` with ``h = c ⊙ (W0·x + s·B·A·x) + b`` (serve's banks), or None."""
        return None

    def merged(self, layer: nn.Module, weight: Tensor, remember: bool = False) -> Tensor:
        """The merged weight (fp32, base layout) from the current base ``weight`` (fp32);
        ``remember``: keep on the layer what :meth:`unmerged` needs (merge does)."""
        return weight + layer.lora_delta()

    def unmerged(self, layer: nn.Module, weight: Tensor) -> Tensor:
        """The base weight back from a merged ``weight`` (fp32)."""
        return weight - layer.lora_delta()


class Init:
    """An initialisation of A and B; this one draws A Kaiming-uniform (as ``nn.Linear``) and zeroes B,
    so a freshly injected model computes exactly the base model."""

    name = "kaiming"
    requires: frozenset[str] = frozenset()  # what the layer kind must support
    # True when the init moves s·B0·A0 out of W0: the adapter is then saved relative to the original
    # base at rank 2r (see file_factors), so it combines with plain LoRA on whole layers only.
    moves_base = False

    def factors(self, layer: nn.Module) -> None:
        """Fill ``layer.lora_A`` / ``lora_B`` (the base weight is not touched: a failed inject changes nothing)."""
        with torch.no_grad():
            A = layer.lora_A
            nn.init.kaiming_uniform_(A.view(A.shape[0], -1), a=math.sqrt(5))
            layer.lora_B.zero_()

    def shift(self, layer: nn.Module, sign: float = -1.0) -> None:
        """Move the initial update out of the base weight (``sign=-1``, after inject) or back in
        (``+1``, unload without merging); nothing to do when B starts at zero."""

    def file_factors(self, layer: nn.Module, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
        """A and B as saved, relative to the original base weight."""
        return A, B


LORA = Lora()
KAIMING = Init()
