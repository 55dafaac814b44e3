"""Training losses as sums, with the number of terms they sum over.

The loop divides by the *global* number of terms (all micro-batches, all processes) before
``backward``, so gradient accumulation and data parallelism reproduce the loss of one big batch:
the mean over examples (classification) or over completion tokens (causal LM), exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.train.losses import IGNORE_INDEX, causal_lm_summed_loss


def loss_terms(task: str, batch: dict[str, Tensor]) -> int:
    """How many loss terms ``batch`` contributes: examples, or target tokens after the shift."""
    labels = batch["labels"]
    if task == "classify":
        return int(labels.shape[0])
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Any]:
    """The keyword arguments of the model's forward for ``batch``.

    A packed batch (``position_ids`` present, see :mod:`lorakit.data.packing`) goes in *without* its
    attention mask and without a KV cache: the model then derives the block-diagonal mask from the
    restarting positions. Any other batch goes in with its padding mask.
    """
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def summed_loss(task: str, model: nn.Module, batch: dict[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
    """Sum of the cross-entropy terms of ``batch`` (fp32 logits for a stable log-softmax).

    Causal LMs go through :func:`~lorakit.train.losses.causal_lm_summed_loss` (no full logits).
    ``label_smoothing`` (ε of ``F.cross_entropy``) is for training; evaluation scores plain cross-entropy.
    """
    if task != "classify":
        return causal_lm_summed_loss(model, batch, model_inputs(batch), label_smoothing)
    out = model(**model_inputs(batch))
    logits = out.logits if hasattr(out, "logits") else out[0]
    labels = batch["labels"]
    return F.cross_entropy(logits.float(), labels, reduction="sum", label_smoothing=label_smoothing)


def batch_tokens(batch: dict[str, Tensor]) -> int:
    """Non-padding input tokens of a batch (what tokens/s counts)."""
    return int(batch["attention_mask"].sum())


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
