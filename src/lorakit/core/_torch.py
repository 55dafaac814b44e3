"""The private torch APIs lorakit relies on, in one place; ``tests/core/test_torch_shim.py`` fails
loudly if a torch release renames or changes any of them.

A leaf module (torch only) inside :mod:`lorakit.core`, which owns it: core, io, models and serve all
use it, and most of it (oneDNN prepacking, foreach kernels) is not LoRA itself, but core may import
nothing from outside itself, so the shim lives here.
"""

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


def mkldnn_pack_linear(weight: Tensor, batch_hint: int | None = None) -> Tensor | None:
    """``weight (out, in)`` reordered into oneDNN's blocked layout for a CPU linear, or None where
    oneDNN cannot run this type here (bf16 needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT).

    The same prepacking torch's inductor does when it freezes a model; ``batch_hint`` (rows per call)
    only guides the layout, any row count works with the result.
    """
    if not torch.backends.mkldnn.is_available() or weight.device.type != "cpu":
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_hint)
    except RuntimeError:
        return None


def mkldnn_linear(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """``x (..., in) @ Wᵀ + b`` with a weight from :func:`mkldnn_pack_linear` (no autograd)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
