"""Adapter tensors <-> model, under PEFT's key names, with exact key sets and readable errors.

Keys are derived from the registry (``base_model.model.<path>.lora_A.weight``, or
``lora_embedding_A`` for embeddings), never found by substring tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lorakit.core.inject import lora_layers
from lorakit.core.targeting import name_matches

PEFT_PREFIX = "base_model.model."


def peft_key(module_path: str, which: str, kind_names: tuple[str, str] = ("lora_A.weight", "lora_B.weight")) -> str:
    """PEFT's tensor name for factor ``which`` ("lora_A" / "lora_B") of the module at ``module_path``."""
    name = kind_names[0] if which == "lora_A" else kind_names[1]
    return f"{PEFT_PREFIX}{module_path}.{name}"


@dataclass(frozen=True)
class LoraFactors:
    """The A/B pair of one adapted module, as stored, with its scaling."""

    A: Tensor
    B: Tensor
    scaling: float
    kind: str = "linear"

    @property
    def rank(self) -> int:
        """Rank of the stored pair."""
        return self.A.shape[0]

    def delta_weight(self) -> Tensor:
        """``s·B·A`` as a 2-D (out, in) matrix (conv kernels flattened), in float32."""
        r = self.A.shape[0]
        B = self.B.reshape(self.B.shape[0], r).float()
        return (B @ self.A.reshape(r, -1).float()) * self.scaling


def _saved_module_paths(model: nn.Module, modules_to_save: tuple[str, ...]) -> list[str]:
    return [p for p, _ in model.named_modules() if p and any(name_matches(m, p) for m in modules_to_save)]


def adapter_state_dict(model: nn.Module, bias: str = "none", modules_to_save: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Everything the adapter file holds: A/B of each LoRA layer, trained biases, saved modules."""
    out: dict[str, Tensor] = {}
    layers = lora_layers(model)
    for path, layer in layers.items():
        out[peft_key(path, "lora_A", layer.kind.peft_names)] = layer.lora_A
        out[peft_key(path, "lora_B", layer.kind.peft_names)] = layer.effective_B()
        if bias in ("all", "lora_only") and getattr(layer, "bias", None) is not None:
            # PEFT keeps the wrapped layer under ".base_layer", and so names its bias.
            out[f"{PEFT_PREFIX}{path}.base_layer.bias"] = layer.bias
    if bias == "all":
        for name, param in model.named_parameters():
            owner = name.rpartition(".")[0]
            if name.endswith("bias") and owner not in layers:
                out[f"{PEFT_PREFIX}{name}"] = param
    for path in _saved_module_paths(model, modules_to_save):
        for name, param in model.get_submodule(path).named_parameters():
            out[f"{PEFT_PREFIX}{path}.{name}"] = param
    return {k: v.detach().contiguous() for k, v in out.items()}


def _named_targets(model: nn.Module, bias: str, modules_to_save: tuple[str, ...]) -> dict[str, Tensor]:
    """Key -> the live tensor each key loads into (for B: the raw parameter)."""
    live: dict[str, Tensor] = {}
    layers = lora_layers(model)
    for path, layer in layers.items():
        live[peft_key(path, "lora_A", layer.kind.peft_names)] = layer.lora_A
        live[peft_key(path, "lora_B", layer.kind.peft_names)] = layer.lora_B
        if bias in ("all", "lora_only") and getattr(layer, "bias", None) is not None:
            live[f"{PEFT_PREFIX}{path}.base_layer.bias"] = layer.bias
    if bias == "all":
        for name, param in model.named_parameters():
            if name.endswith("bias") and name.rpartition(".")[0] not in layers:
                live[f"{PEFT_PREFIX}{name}"] = param
    for path in _saved_module_paths(model, modules_to_save):
        for name, param in model.get_submodule(path).named_parameters():
            live[f"{PEFT_PREFIX}{path}.{name}"] = param
    return live


def _listing(title: str, items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {shown}{more}"


def check_adapter_state(model: nn.Module, tensors: dict[str, Tensor], bias: str = "none",
                        modules_to_save: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Validate ``tensors`` against the injected model; return the live tensor for each key.

    Raises ``ValueError`` listing missing, unexpected and mis-shaped entries, non-float dtypes and
    non-finite values, so a user sees every problem at once.
    """
    live = _named_targets(model, bias, modules_to_save)
    missing = sorted(set(live) - set(tensors))
    unexpected = sorted(set(tensors) - set(live))
    mismatched = [
        f"{k} (file {tuple(tensors[k].shape)}, model {tuple(live[k].shape)})"
        for k in sorted(set(live) & set(tensors)) if tuple(tensors[k].shape) != tuple(live[k].shape)
    ]
    bad_dtype = [f"{k} ({v.dtype})" for k, v in tensors.items() if k in live and not v.is_floating_point()]
    problems = []
    if missing:
        problems.append(_listing("missing", missing))
    if unexpected:
        problems.append(_listing("unexpected", unexpected))
    if mismatched:
        problems.append(_listing("shape mismatch", mismatched))
    if bad_dtype:
        problems.append(_listing("not floating point", bad_dtype))
    if problems:
        raise ValueError("adapter does not fit this model: " + "; ".join(problems))
    # torch has no isfinite for 1-byte floats (float8_e4m3fn): check those in float32.
    nonfinite = [k for k, v in tensors.items() if not torch.isfinite(v.float() if v.element_size() == 1 else v).all()]
    if nonfinite:
        raise ValueError("adapter holds non-finite values (NaN/Inf): " + _listing("tensors", nonfinite))
    return live


def load_adapter_state(model: nn.Module, tensors: dict[str, Tensor], bias: str = "none",
                       modules_to_save: tuple[str, ...] = ()) -> int:
    """Copy adapter tensors into the injected model after :func:`check_adapter_state`; returns count."""
    live = check_adapter_state(model, tensors, bias, modules_to_save)
    with torch.no_grad():
        for key, target in live.items():
            target.copy_(tensors[key].to(dtype=target.dtype, device=target.device))
    return len(live)
