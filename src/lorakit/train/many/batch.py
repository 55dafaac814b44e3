"""train-many's mixed batch: every job's micro-batch in one padded batch, and each job's own loss.

Rows stay in job order (a :class:`~lorakit.train.many.model.Span` per job); padding to the longest job
is on the right, like the collators', so a causal model's earlier positions and a classifier's
masked attention see exactly what they see in the job's own batch. Each job's summed loss is the
solo run's (:func:`lorakit.train.objectives.summed_loss`) restricted to its rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.errors import LorakitError
from lorakit.train.losses import IGNORE_INDEX, linear_cross_entropy, split_causal_lm
from lorakit.train.many.model import Span
from lorakit.train.objectives import model_inputs

PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}  # input_ids: the pad id


def merge_batches(parts: list[tuple[int, dict[str, Tensor]]], pad_id: int) -> tuple[dict[str, Tensor], list[Span]]:
    """One batch from ``(job, batch)`` pairs, right-padded to the longest; with each job's rows."""
    keys = set(parts[0][1])
    if any(set(b) != keys for _, b in parts):
        raise LorakitError(f"jobs' batches hold different fields: {[sorted(b) for _, b in parts]}")
    width = max(b["input_ids"].shape[1] for _, b in parts)
    merged, spans, start = {}, [], 0
    for job, b in parts:
        n = b["input_ids"].shape[0]
        spans.append(Span(job, start, start + n, b["input_ids"].shape[1]))
        start += n
    for key in sorted(keys):
        value = pad_id if key == "input_ids" else PAD_VALUES.get(key)
        tensors = [b[key] for _, b in parts]
        if tensors[0].ndim == 2:
            if value is None:
                raise LorakitError(f"train-many cannot pad the batch field {key!r}")
            tensors = [F.pad(t, (0, width - t.shape[1]), value=value) for t in tensors]
        merged[key] = torch.cat(tensors)
    return merged, spans


def job_losses(task: str, model: nn.Module, batch: dict[str, Tensor], spans: list[Span],
               widths: dict[int, int], smoothing: dict[int, float] | None = None) -> list[Tensor]:
    """Each span's summed cross-entropy (fp32), from one forward of the mixed ``batch``.

    ``widths``: each job's number of labels (classification logits are padded to the widest head);
    ``smoothing``: each job's label smoothing ε (default 0).
    """
    eps = {s.job: (smoothing or {}).get(s.job, 0.0) for s in spans}
    inputs = model_inputs(batch)
    labels = batch["labels"]
    if task == "classify":
        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return [F.cross_entropy(logits[s.start:s.stop, :widths[s.job]].float(), labels[s.start:s.stop],
                                reduction="sum", label_smoothing=eps[s.job]) for s in spans]
    shifted = labels[:, 1:]
    parts = split_causal_lm(model)
    if parts is None:  # a head that is not a plain Linear: full logits, per job
        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return [F.cross_entropy(logits[s.start:s.stop, :-1].reshape(-1, logits.shape[-1]).float(),
                                shifted[s.start:s.stop].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum",
                                label_smoothing=eps[s.job]) for s in spans]
    body, head = parts
    hidden = body(**{**inputs, "use_cache": False})[0]
    losses = []
    for s in spans:  # the chunked loss over the job's labelled positions only, as in causal_lm_summed_loss
        lab = shifted[s.start:s.stop]
        keep = lab != IGNORE_INDEX
        losses.append(linear_cross_entropy(hidden[s.start:s.stop, :-1][keep], head.weight, lab[keep], head.bias,
                                           label_smoothing=eps[s.job]))
    return losses
