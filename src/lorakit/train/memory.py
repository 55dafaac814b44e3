"""The memory levers of a training run: frozen-base precision and activation checkpointing.

Both are options of :class:`~lorakit.train.config.TrainConfig` (``base_dtype``, ``checkpointing``);
this module turns them into what happens to the model, once, after the trainable parts are chosen.
The third lever, the causal-LM loss without full logits, is :mod:`lorakit.train.losses`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from lorakit.models.precision import finish_base_precision, resolve_base_dtype
from lorakit.train.config import TrainConfig

__all__ = ["apply_memory_options", "enable_checkpointing", "resolve_memory_options"]


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
    return report


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer block in backward (non-reentrant ``torch.utils.checkpoint``).

    Uses the model's own hook (Hugging Face's per-layer checkpointing), which is active in training
    mode only, so evaluation and generation are unchanged. Non-reentrant checkpointing gives exactly
    the gradients of the plain run and needs no ``requires_grad`` input (the embeddings may be frozen).
    Raises ValueError for a model without such a hook.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"--checkpointing: {type(model).__name__} has no activation-checkpointing hook")
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
