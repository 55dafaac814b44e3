"""PEFT's tensor names for an injected model's adapter (``base_model.model.<path>.<name>``), and the one
validation of what a file holds (:func:`check_tensors`: exact key sets, shapes, readable errors).

Names come from the layer (its kind's A/B names, its variant's extras, ``lora_magnitude_vector``
for DoRA), never from substring tests; the bias of a wrapped layer is PEFT's ``.base_layer.bias``.
``serve`` checks an adapter against its base with :func:`check_tensors` too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from lorakit.core._torch import foreach_norm
from lorakit.core.inject import SPEC_ATTR, TARGETS_ATTR, lora_layers
from lorakit.core.layers import LoraLayer
from lorakit.core.registry import LORA_NAMES, require_kind
from lorakit.core.spec import LoraSpec
from lorakit.core.targeting import Target, name_matches
from lorakit.errors import LorakitError

PEFT_PREFIX = "base_model.model."
BASE_BIAS = "base_layer.bias"  # PEFT keeps a wrapped layer under ".base_layer", and so names its bias


def peft_key(module_path: str, which: str, kind_names: tuple[str, str] = LORA_NAMES) -> str:
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
            out[f"{PEFT_PREFIX}{path}.{BASE_BIAS}"] = layer.bias
    if bias == "all":
        for name, param in model.named_parameters():
            if name.rpartition(".")[2] == "bias" and name.rpartition(".")[0] not in layers:
                out[f"{PEFT_PREFIX}{name}"] = param
    for path in saved_modules(model, modules_to_save):
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
        raise LorakitError(f"{what} does not fit this model: " + "; ".join(problems))
    # One fused norm over every tensor: finite unless some value is NaN/Inf (or so large that the
    # norm overflows; only then is each tensor checked exactly, in float32 for 1-byte floats).
    keys = list(expected)
    norms = torch.stack(foreach_norm([tensors[k].float() for k in keys])) if keys else torch.zeros(0)
    suspects = [] if torch.isfinite(norms).all() else [k for k, n in zip(keys, norms, strict=True) if not torch.isfinite(n)]
    bad = [k for k in suspects if not torch.isfinite(tensors[k].float()).all()]
    if bad:
        raise LorakitError(f"{what} holds non-finite values (NaN/Inf): " + _listing("tensors", bad))


def expected_shapes(model: Any, spec: LoraSpec, targets: list[Target]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor an adapter file for ``targets`` must hold: the one schema that
    loading (:func:`check_adapter_state`) and serving (``serve.prepare``) check files against.

    Per target: A and B under its kind's names at rank ``t.rank``, the variant's extras, and the
    base bias (PEFT's ``.base_layer.bias``) when ``spec.bias`` trains it; with ``bias="all"`` every
    other bias too; every parameter of the ``modules_to_save``. ``model`` may be injected already or
    not (anything with ``named_modules`` and ``get_submodule``, such as serve's original tree), since
    the shapes come from the base layers, never from LoRA parameters.
    """
    out: dict[str, tuple[int, ...]] = {}
    paths = {t.path for t in targets}
    for t in targets:
        module = model.get_submodule(t.path)
        base = module.base if isinstance(module, LoraLayer) else module
        kind = require_kind(base, t.path)
        for name, shape in zip(kind.names, kind.factor_shapes(base, t.rank), strict=True):
            out[f"{PEFT_PREFIX}{t.path}.{name}"] = tuple(shape)
        for name, shape in spec.variant.file_shapes(kind, base).items():
            out[f"{PEFT_PREFIX}{t.path}.{name}"] = tuple(shape)
        if spec.bias in ("all", "lora_only") and getattr(base, "bias", None) is not None:
            out[f"{PEFT_PREFIX}{t.path}.{BASE_BIAS}"] = tuple(base.bias.shape)
    if spec.bias == "all":
        for path, module in model.named_modules():
            own_bias = module._parameters.get("bias") if path not in paths else None
            if own_bias is not None:
                out[f"{PEFT_PREFIX}{path + '.' if path else ''}bias"] = tuple(own_bias.shape)
    for path in saved_modules(model, spec.modules_to_save):
        for name, param in model.get_submodule(path).named_parameters():
            out[f"{PEFT_PREFIX}{path}.{name}"] = tuple(param.shape)
    return out


def saved_modules(model: Any, modules_to_save: tuple[str, ...]) -> list[str]:
    """Paths of the modules whose full weights an adapter stores (PEFT's ``modules_to_save``)."""
    return [p for p, _ in model.named_modules() if p and any(name_matches(m, p) for m in modules_to_save)]


def check_adapter_state(model: nn.Module, tensors: dict[str, Tensor], bias: str = "none",
                        modules_to_save: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Validate ``tensors`` against the injected model (:func:`check_tensors` on
    :func:`expected_shapes`); return the live tensor for each key."""
    live = _tensors(model, bias, modules_to_save, export=False)
    spec, targets = getattr(model, SPEC_ATTR, None), getattr(model, TARGETS_ATTR, None)
    if spec is None or targets is None:  # LoRA layers put there by hand: only they can say what they hold
        expected = {k: tuple(v.shape) for k, v in live.items()}
    else:
        spec = dataclasses.replace(spec, bias=bias, modules_to_save=tuple(modules_to_save))
        expected = expected_shapes(model, spec, targets)
        assert set(live) == set(expected), sorted(set(live) ^ set(expected))  # the schema names what layers hold
    check_tensors(tensors, expected, "adapter")
    return live


def load_adapter_state(model: nn.Module, tensors: dict[str, Tensor], bias: str = "none",
                       modules_to_save: tuple[str, ...] = ()) -> int:
    """Copy adapter tensors into the injected model after :func:`check_adapter_state`; returns count."""
    live = check_adapter_state(model, tensors, bias, modules_to_save)
    with torch.no_grad():
        for key, target in live.items():
            target.copy_(tensors[key].to(dtype=target.dtype, device=target.device))
    return len(live)
