"""PEFT's tensor names for an injected model's adapter: ``base_model.model.<path>.<name>``.

Names come from the layer (its kind's A/B names, its variant's extras, ``lora_magnitude_vector``
for DoRA), never from substring tests; the bias of a wrapped layer is PEFT's ``.base_layer.bias``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorakit.core.inject import lora_layers
from lorakit.core.state import check_tensors
from lorakit.core.targeting import name_matches

PEFT_PREFIX = "base_model.model."


def peft_key(module_path: str, which: str, kind_names: tuple[str, str] = ("lora_A.weight", "lora_B.weight")) -> str:
    """PEFT's tensor name for factor ``which`` ("lora_A" / "lora_B") of the module at ``module_path``."""
    name = kind_names[0] if which == "lora_A" else kind_names[1]
    return f"{PEFT_PREFIX}{module_path}.{name}"


def _tensors(model: nn.Module, bias: str, modules_to_save: tuple[str, ...], export: bool) -> dict[str, Tensor]:
    """Key -> tensor: what a file holds (``export``) or the live tensor each key loads into."""
    out: dict[str, Tensor] = {}
    layers = lora_layers(model)
    for path, layer in layers.items():
        for name, tensor in (layer.file_tensors() if export else layer.live_tensors()).items():
            out[f"{PEFT_PREFIX}{path}.{name}"] = tensor
        if bias in ("all", "lora_only") and getattr(layer, "bias", None) is not None:
            # PEFT keeps the wrapped layer under ".base_layer", and so names its bias.
            out[f"{PEFT_PREFIX}{path}.base_layer.bias"] = layer.bias
    if bias == "all":
        for name, param in model.named_parameters():
            if name.rpartition(".")[2] == "bias" and name.rpartition(".")[0] not in layers:
                out[f"{PEFT_PREFIX}{name}"] = param
    saved = [p for p, _ in model.named_modules() if p and any(name_matches(m, p) for m in modules_to_save)]
    for path in saved:
        for name, param in model.get_submodule(path).named_parameters():
            out[f"{PEFT_PREFIX}{path}.{name}"] = param
    return out


def adapter_state_dict(model: nn.Module, bias: str = "none", modules_to_save: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Everything the adapter file holds: each LoRA layer's tensors, trained biases, saved modules."""
    return {k: v.detach().contiguous() for k, v in _tensors(model, bias, modules_to_save, export=True).items()}


def check_adapter_state(model: nn.Module, tensors: dict[str, Tensor], bias: str = "none",
                        modules_to_save: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Validate ``tensors`` against the injected model (:func:`check_tensors`); return the live
    tensor for each key."""
    live = _tensors(model, bias, modules_to_save, export=False)
    check_tensors(tensors, {k: tuple(v.shape) for k, v in live.items()}, "adapter")
    return live


def load_adapter_state(model: nn.Module, tensors: dict[str, Tensor], bias: str = "none",
                       modules_to_save: tuple[str, ...] = ()) -> int:
    """Copy adapter tensors into the injected model after :func:`check_adapter_state`; returns count."""
    live = check_adapter_state(model, tensors, bias, modules_to_save)
    with torch.no_grad():
        for key, target in live.items():
            target.copy_(tensors[key].to(dtype=target.dtype, device=target.device))
    return len(live)
