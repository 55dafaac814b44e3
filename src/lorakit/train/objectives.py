"""Training losses as sums, with the number of terms they sum over.

The loop divides by the *global* number of terms (all micro-batches, all processes) before
``backward``, so gradient accumulation and data parallelism reproduce the loss of one big batch:
the mean over examples (classification) or over completion tokens (causal LM), exactly.
"""

from __future__ import annotations

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


def summed_loss(task: str, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Sum of the cross-entropy terms of ``batch`` (fp32 logits for a stable log-softmax).

    Causal LMs go through :func:`~lorakit.train.losses.causal_lm_summed_loss` (no full logits).
    """
    if task != "classify":
        return causal_lm_summed_loss(model, batch)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits if hasattr(out, "logits") else out[0]
    labels = batch["labels"]
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def batch_tokens(batch: dict[str, Tensor]) -> int:
    """Non-padding input tokens of a batch (what tokens/s counts)."""
    return int(batch["attention_mask"].sum())


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
