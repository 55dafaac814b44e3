"""PEFT's tensor names for an injected model's adapter (``base_model.model.<path>.<name>``), and the one
validation of what a file holds (:func:`check_tensors`: exact key sets, shapes, readable errors).

Names come from the layer (its kind's A/B names, its variant's extras, ``lora_magnitude_vector``
for DoRA), never from substring tests; the bias of a wrapped layer is PEFT's ``.base_layer.bias``.
``serve`` checks an adapter against its base with :func:`check_tensors` too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lorakit._torch import foreach_norm
from lorakit.core.inject import lora_layers
from lorakit.core.layers import LoraLayer
from lorakit.core.targeting import name_matches

PEFT_PREFIX = "base_model.model."


def peft_key(module_path: str, which: str, kind_names: tuple[str, str] = ("lora_A.weight", "lora_B.weight")) -> str:
    """PEFT's tensor name for factor ``which`` ("lora_A" / "lora_B") of the module at ``module_path``."""
    name = kind_names[0] if which == "lora_A" else kind_names[1]
    return f"{PEFT_PREFIX}{module_path}.{name}"


def file_tensors(layer: LoraLayer) -> dict[str, Tensor]:
    """Tensors to save by PEFT file name; an SVD-initialised adapter relative to the original base."""
    A, B = layer.initializer.file_factors(layer, layer.lora_A, layer.effective_B())
    return {**dict(zip(layer.kind.names, (A, B), strict=True)), **_extras(layer)}


def live_tensors(layer: LoraLayer) -> dict[str, Tensor]:
    """The parameters a saved adapter loads into, by PEFT file name (B unmasked)."""
    return {**dict(zip(layer.kind.names, (layer.lora_A, layer.lora_B), strict=True)), **_extras(layer)}


def _extras(layer: LoraLayer) -> dict[str, Tensor]:
    """The variant's extra parameters (DoRA's magnitude) by PEFT file name."""
    return {file: getattr(layer, attr) for attr, file in layer.variant.params.items()}


def _tensors(model: nn.Module, bias: str, modules_to_save: tuple[str, ...], export: bool) -> dict[str, Tensor]:
    """Key -> tensor: what a file holds (``export``) or the live tensor each key loads into."""
    out: dict[str, Tensor] = {}
    layers = lora_layers(model)
    for path, layer in layers.items():
        for name, tensor in (file_tensors(layer) if export else live_tensors(layer)).items():
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


def _listing(title: str, items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {shown}{more}"


def check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], what: str = "adapter") -> None:
    """Raise one ``ValueError`` listing every missing, unexpected, mis-shaped, non-float and
    non-finite tensor of ``tensors`` against ``expected`` (key -> shape)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k} (file {tuple(tensors[k].shape)}, model {tuple(expected[k])})"
              for k in sorted(set(expected) & set(tensors)) if tuple(tensors[k].shape) != tuple(expected[k])]
    dtypes = [f"{k} ({v.dtype})" for k, v in tensors.items() if k in expected and not v.is_floating_point()]
    problems = [_listing(title, items) for title, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
                 ("not floating point", dtypes)) if items]
    if problems:
        raise ValueError(f"{what} does not fit this model: " + "; ".join(problems))
    # One fused norm over every tensor: finite unless some value is NaN/Inf (or so large that the
    # norm overflows; only then is each tensor checked exactly, in float32 for 1-byte floats).
    keys = list(expected)
    norms = torch.stack(foreach_norm([tensors[k].float() for k in keys])) if keys else torch.zeros(0)
    suspects = [] if torch.isfinite(norms).all() else [k for k, n in zip(keys, norms, strict=True) if not torch.isfinite(n)]
    bad = [k for k in suspects if not torch.isfinite(tensors[k].float()).all()]
    if bad:
        raise ValueError(f"{what} holds non-finite values (NaN/Inf): " + _listing("tensors", bad))


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
