"""The private torch APIs lorakit relies on, in one place; ``tests/core/test_torch_shim.py`` fails
loudly if a torch release renames or changes any of them."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def own_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    """Register ``param`` under ``name`` directly: ``register_parameter`` would see the name on a
    wrapped base layer through a wrapper's ``__getattr__`` fallback and refuse it."""
    module._parameters[name] = param


def conv_forward(conv: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``nn.Conv1d/2d``'s forward with a given weight (honours ``padding_mode``)."""
    return conv._conv_forward(x, weight, bias)


def foreach_copy_(dst: list[Tensor], src: list[Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for all i in one fused call."""
    torch._foreach_copy_(dst, src)


def foreach_mul_(tensors: list[Tensor], scalars: list[float]) -> None:
    """``tensors[i] *= scalars[i]`` for all i in one fused call."""
    torch._foreach_mul_(tensors, scalars)


def foreach_norm(tensors: list[Tensor]) -> list[Tensor]:
    """The 2-norm of each tensor, in one fused call."""
    return list(torch._foreach_norm(tensors))
