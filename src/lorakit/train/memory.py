"""The memory levers of a training run: frozen-base precision and activation checkpointing.

Both are options of :class:`~lorakit.train.config.TrainConfig` (``base_dtype``, ``checkpointing``);
this module turns them into what happens to the model, once, after the trainable parts are chosen.
The third lever, the causal-LM loss without full logits, is :mod:`lorakit.train.losses`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.precision import finish_base_precision, resolve_base_dtype
from lorakit.train.config import TrainConfig

__all__ = ["apply_memory_options", "contiguous_head_input", "enable_checkpointing", "resolve_memory_options"]


def resolve_memory_options(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """A copy with ``base_dtype`` made concrete for ``device`` (fp32 for --full / --bitfit).

    Raises ValueError when ``device`` cannot run the requested type (say, int8 without bitsandbytes).
    """
    if cfg.method != "lora":
        return dataclasses.replace(cfg, base_dtype="fp32")
    return dataclasses.replace(cfg, base_dtype=resolve_base_dtype(cfg.base_dtype, device))


def apply_memory_options(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """Finish the base's precision (LoRA: fp32 trainables, quantized frozen Linears) and turn on
    checkpointing; returns what ran, for ``metrics.json``."""
    device = next(model.parameters()).device
    cfg = resolve_memory_options(cfg, device)
    report: dict[str, Any] = {"base_dtype": cfg.base_dtype, "checkpointing": cfg.checkpointing}
    if cfg.method == "lora":
        report.update(finish_base_precision(model, cfg.base_dtype, device))
    if cfg.checkpointing:
        enable_checkpointing(model)
    contiguous_head_input(model)
    return report


def contiguous_head_input(model: nn.Module) -> bool:
    """Feed the output embedding (LM head) contiguous hidden states; False if the model has no head.

    Generation calls the head on ``hidden[:, -1:, :]``, a strided view. With a weight that does not
    require grad (a frozen base), ``torch.matmul`` then does not fold the batch into one matrix product
    but multiplies by the weight expanded to every row: a (batch × vocab × hidden) copy of it. For
    SmolLM2 at batch 16 that measured +870 MB and 42 s for one call, against +3 MB and 0.1 s with a
    contiguous input, same result. Evaluation would otherwise set the run's memory peak.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        return False
    head.register_forward_pre_hook(_contiguous_inputs)
    return True


def _contiguous_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def enable_checkpointing(model: nn.Module, context_fn: Callable[[], tuple[Any, Any]] | None = None) -> None:
    """Recompute each transformer block in backward (non-reentrant ``torch.utils.checkpoint``).

    ``context_fn`` is handed to ``torch.utils.checkpoint``: called at each block's forward, it returns
    the contexts of that forward and of its recomputation (train-many uses it to replay each job's
    rows and RNG stream; torch itself replays only the global RNG).

    Uses the model's own hook (Hugging Face's per-layer checkpointing), which is active in training
    mode only, so evaluation and generation are unchanged. Non-reentrant checkpointing gives exactly
    the gradients of the plain run and needs no ``requires_grad`` input (the embeddings may be frozen).
    Raises ValueError for a model without such a hook.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise LorakitError(f"--checkpointing: {type(model).__name__} has no activation-checkpointing hook")
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if context_fn is not None:
        kwargs["context_fn"] = context_fn
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
