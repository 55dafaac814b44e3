"""Precision of a frozen base model: fp32, bf16, fp16, or its Linear layers quantized to int8 / nf4.

One implementation for every place that runs a frozen base in low precision (``lorakit train
--base-dtype`` and ``lorakit serve --dtype``, through :func:`freeze_base_precision`):

- ``fp32`` / ``bf16`` / ``fp16``: the weights are loaded in that type (:func:`load_dtype`) and multiplied
  in it; nothing is ever materialised in fp32 first.
- ``int8`` / ``nf4``: the weights are loaded in the compute type (bf16 where the hardware multiplies it
  natively, else fp32), then every *frozen* ``nn.Linear`` except the output embedding (often tied to the
  input embedding) is replaced by bitsandbytes' ``Linear8bitLt`` / ``Linear4bit`` (QLoRA, Dettmers et
  al. 2023). bitsandbytes runs these on CPU as well as CUDA.

Trainable tensors (LoRA factors, a classification head) always stay fp32, so their gradients and
AdamW state are fp32 too (:func:`finish_base_precision`). The LoRA path ``B·A·x`` is computed by the
LoRA layer and added to the base output in the base's type.

The LoRA layer wraps a quantized layer through the registry: :mod:`lorakit.core.kinds.bnb` registers the
two bitsandbytes layer types with kinds that differ from ``nn.Linear``'s only in calling the quantized
module for the base path. bitsandbytes is imported only when a model is quantized.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lorakit.core import registry
from lorakit.core.layers import LoraLayer, adopt_base
from lorakit.errors import LorakitError

__all__ = [
    "BASE_DTYPES",
    "FLOAT_DTYPES",
    "QUANTIZED",
    "activation_dtype",
    "check_base_dtype",
    "compute_dtype",
    "default_base_dtype",
    "finish_base_precision",
    "freeze_base_precision",
    "load_dtype",
    "native_bf16",
    "quantize_frozen_linears",
    "resolve_base_dtype",
]

FLOAT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANTIZED: tuple[str, ...] = ("int8", "nf4")
BASE_DTYPES: tuple[str, ...] = (*FLOAT_DTYPES, *QUANTIZED)
# The bitsandbytes layer each quantization makes (registered kinds, by qualified type name).
_QUANTIZED_TYPES = {"int8": "bitsandbytes.nn.modules.Linear8bitLt", "nf4": "bitsandbytes.nn.modules.Linear4bit"}
logger = logging.getLogger(__name__)
# CPU feature flags (Linux /proc/cpuinfo) that mean bf16 matrix products run in hardware.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no way to tell, assume no native bf16
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 in hardware (CUDA: compute capability; CPU: AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(_BF16_FLAGS & _cpu_flags())


def default_base_dtype(device: torch.device) -> str:
    """``"bf16"`` where the hardware has native bf16 matrix products, else ``"fp32"``."""
    return "bf16" if native_bf16(device) else "fp32"


def check_base_dtype(name: str, device: torch.device) -> None:
    """Raise ValueError if ``name`` is unknown or ``device`` cannot run a base in it."""
    if name not in BASE_DTYPES:
        raise LorakitError(f"base dtype must be one of {', '.join(BASE_DTYPES)}, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LorakitError(f"base dtype {name} on cuda, but no CUDA device is available (use --device cpu)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LorakitError("base dtype bf16: this GPU has no bf16 support; use --base-dtype fp16 or fp32")
    if name in QUANTIZED:
        # bitsandbytes warns on import that an optional CPU kernel package is missing; its own
        # fallback is what runs here, so the advice to install it is noise to a lorakit user.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        # Linear8bitLt logs a warning on *every* bf16 forward (it multiplies in fp16): once per layer
        # per decode step when serving.
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise LorakitError(f"base dtype {name} quantizes with bitsandbytes, which is not installed "
                               f"(pip install 'lorakit[quant]'); use --base-dtype bf16 or fp32") from None


def resolve_base_dtype(name: str, device: torch.device) -> str:
    """``"auto"`` → :func:`default_base_dtype`; any other name is checked and returned."""
    if name == "auto":
        return default_base_dtype(device)
    check_base_dtype(name, device)
    if name == "bf16" and device.type == "cpu" and not native_bf16(device):
        # Honoured, but said: without AVX512-BF16/AMX torch emulates bf16 products, many times slower than
        # fp32 ones, which a user who asked for the "fast" type would not guess.
        logger.warning("base dtype bf16 on a CPU without native bf16 (no AVX512-BF16/AMX): matrix products are "
                       "emulated and much slower than fp32; --base-dtype auto picks fp32 here")
    return name


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The type activations flow in: the float type itself, or bf16/fp32 around quantized weights."""
    if name in FLOAT_DTYPES:
        return FLOAT_DTYPES[name]
    return torch.bfloat16 if native_bf16(device) else torch.float32


def load_dtype(name: str, device: torch.device) -> torch.dtype:
    """The type to load the checkpoint in (quantized bases are loaded in their compute type, then quantized)."""
    return compute_dtype(name, device)


def finish_base_precision(model: nn.Module, name: str, device: torch.device) -> dict[str, Any]:
    """After the trainable parts are chosen (LoRA injected): fp32 trainables, quantized frozen Linears.

    1. Every trainable floating tensor becomes fp32: AdamW's moments and the update then keep full
       precision (a bf16 weight would swallow updates smaller than 2⁻⁸ of itself).
    2. ``int8`` / ``nf4``: :func:`quantize_frozen_linears`.
    3. Modules whose own weights are all trainable (a classification head) get their floating inputs
       cast to fp32, since they now sit in fp32 behind low-precision activations.
    Returns a small report (what ran) for ``metrics.json``.
    """
    check_base_dtype(name, device)
    upcast = 0
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
            upcast += 1
    quantized = quantize_frozen_linears(model, name, device) if name in QUANTIZED else 0
    hooked = 0
    if compute_dtype(name, device) != torch.float32:
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if own and all(p.requires_grad for p in own):
                module.register_forward_pre_hook(_inputs_to_fp32)
                hooked += 1
    return {"base_dtype": name, "compute_dtype": str(compute_dtype(name, device)).removeprefix("torch."),
            "quantized_linears": quantized, "fp32_trainable_modules": hooked, "upcast_tensors": upcast}


def freeze_base_precision(model: nn.Module, name: str, device: torch.device,
                          pack_rows: int | None = None) -> dict[str, Any]:
    """A base loaded in :func:`load_dtype` made ready for inference (serving): frozen, quantized, on ``device``.

    Every parameter is frozen first (nothing is trained while serving), then ``int8`` / ``nf4``
    quantize every frozen Linear but the LM head (:func:`quantize_frozen_linears`). With
    ``pack_rows`` (the usual rows per forward), the Linear layers left in a float type are prepacked
    for oneDNN where it runs them (:mod:`lorakit.models.packed`: CPU, fp32 everywhere, bf16 with
    AVX-512). Returns a small report of what ran.
    """
    from lorakit.models.packed import pack_frozen_linears

    check_base_dtype(name, device)
    model.requires_grad_(False)
    model.to(device)
    quantized = quantize_frozen_linears(model, name, device) if name in QUANTIZED else 0
    packed = pack_frozen_linears(model, pack_rows) if pack_rows is not None else 0
    return {"base_dtype": name, "compute_dtype": str(compute_dtype(name, device)).removeprefix("torch."),
            "quantized_linears": quantized, "packed_linears": packed, "device": str(device)}


def activation_dtype(layer: nn.Module) -> torch.dtype:
    """The floating type a frozen layer's inputs and outputs flow in.

    A quantized layer's compute type (its weight is packed integers), else its weight's own type.
    """
    dtype = getattr(layer, "compute_dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    weight = layer.weight
    return weight.dtype if weight.is_floating_point() else torch.float32


def _inputs_to_fp32(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def quantize_frozen_linears(model: nn.Module, name: str, device: torch.device) -> int:
    """Replace every frozen ``nn.Linear`` (bare, or the base of a LoRA layer) by a bitsandbytes one.

    Kept in full precision: the output embedding (the LM head, usually tied to the input embedding)
    and any Linear with a trainable weight. A LoRA layer keeps its A and B and adopts the quantized
    layer as its base; its kind becomes the registered quantized kind. Returns how many were replaced.
    """
    if name not in QUANTIZED:
        raise LorakitError(f"quantization must be one of {', '.join(QUANTIZED)}, got {name!r}")
    check_base_dtype(name, device)
    keep = set()
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is not None:
        keep.add(id(head))
    # Checked before anything changes: a LoRA layer's variant runs on every forward, so the quantized
    # kind must support it (DoRA needs a float W0); its init already ran on the float layer.
    kind = registry.registered_kind(_QUANTIZED_TYPES[name])
    for path, module in model.named_modules():
        if isinstance(module, LoraLayer) and type(module.base) is nn.Linear and id(module) not in keep \
                and not module.base.weight.requires_grad:
            registry.check_supports(kind, module.variant.requires, path)
    replaced = 0
    for path, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            base = module.base
            if type(base) is nn.Linear and not base.weight.requires_grad and id(module) not in keep:
                quantized = _quantized_linear(base, name, device)
                adopt_base(module, quantized)
                module.kind = registry.require_kind(quantized, path)
                replaced += 1
            continue
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear and id(child) not in keep and not child.weight.requires_grad:
                setattr(module, child_name, _quantized_linear(child, name, device))
                replaced += 1
    return replaced


def _quantized_linear(linear: nn.Linear, name: str, device: torch.device) -> nn.Module:
    """A bitsandbytes copy of a frozen ``linear``, quantized on ``device`` (the source is released)."""
    import bitsandbytes as bnb

    weight, bias = linear.weight.data, linear.bias
    dtype = compute_dtype(name, device)
    if name == "nf4":
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias is not None,
                              compute_dtype=dtype, quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
        # bitsandbytes repacks the weight in place for its CPU inference kernel on the first eval-mode
        # forward; that format needs out_features % 32 == 0, and the kernel (an optional "kernels"
        # package) is absent here anyway. Training alternates with evaluation: keep one format.
        q.support_avx512bf16_for_cpu = False
    else:
        # threshold 0: no fp16 outlier columns (LLM.int8's mixed decomposition), plain row-wise int8.
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias is not None,
                                has_fp16_weights=False, threshold=0.0, device="meta")
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        # Linear8bitLt returns its input's type and keeps no compute type of its own; recorded so
        # that :func:`activation_dtype` (serving's adapter stacks) knows what flows through it.
        q.compute_dtype = dtype
    if bias is not None:
        q.bias = nn.Parameter(bias.data.to(dtype), requires_grad=False)
    return q.to(device)  # moving the parameter to its device is what quantizes it
