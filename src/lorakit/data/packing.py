"""Sequence packing: several tokenized examples in one row, none attending to another.

Rows are filled first-fit-decreasing up to ``max_length`` tokens (examples are already truncated to
it), so a batch carries little padding. Inside a row, example ``k`` keeps its own positions
``0..len_k-1`` in ``position_ids``; the batch has **no** ``attention_mask`` for the model. Hugging Face
decoders (transformers >= 4.57 / 5.x, ``masking_utils.find_packed_sequence_indices``) read a restart
of the positions as a new sequence and build a block-diagonal causal mask for sdpa and eager
attention, and flash attention uses the same positions for its variable-length kernels. A row's
padding is one more "sequence" of its own, with no labels.

Loss masking per example: each example keeps its labels (prompt ``-100``), and the first token of
every example is ``-100`` too, so no token is ever predicted from the previous example's last token.
``tests/data/test_data_packing.py`` checks on a tiny Llama that packed and unpacked batches give the
same loss and gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lorakit.errors import LorakitError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PackedRow:
    """The examples of one packed row, each as ``(input_ids, labels)``."""

    segments: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    def __len__(self) -> int:
        return sum(len(ids) for ids, _ in self.segments)


def pack(encoded: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int) -> list[PackedRow]:
    """Pack ``(input_ids, labels)`` pairs into rows of at most ``max_length`` tokens (first fit decreasing).

    The result is deterministic (ties keep the input order); every example lands in exactly one row.
    """
    if max_length < 1:
        raise LorakitError(f"max_length must be >= 1, got {max_length}")
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    rows: list[list[int]] = []  # example indices per row
    free: list[int] = []  # tokens left per row
    for i in order:
        n = len(encoded[i][0])
        if n > max_length:
            raise LorakitError(f"example {i} has {n} tokens, more than max_length {max_length}; truncate first")
        slot = next((r for r, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append([])
            free.append(max_length)
            slot = len(rows) - 1
        rows[slot].append(i)
        free[slot] -= n
    return [PackedRow(tuple((tuple(encoded[i][0]), tuple(encoded[i][1])) for i in sorted(row))) for row in rows]


class PackedCollator:
    """``list[PackedRow]`` → ``{input_ids, position_ids, labels, attention_mask}``, padded right.

    ``attention_mask`` marks real tokens for counting (tokens/s); it is not given to the model, which
    takes the example boundaries from ``position_ids`` (see the module docstring and
    :func:`lorakit.train.objectives.model_inputs`).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[PackedRow]) -> dict[str, torch.Tensor]:
        """Concatenate each row's examples and pad the rows to the longest."""
        if not rows:
            raise LorakitError("cannot collate an empty batch")
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        real = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for seg_ids, seg_labels in row.segments:
                n = len(seg_ids)
                ids[r, at:at + n] = torch.tensor(seg_ids)
                labels[r, at:at + n] = torch.tensor(seg_labels)
                labels[r, at] = IGNORE_INDEX  # never predicted from the previous example
                positions[r, at:at + n] = torch.arange(n)
                at += n
            real[r, :at] = 1
            positions[r, at:] = torch.arange(width - at)  # the padding: a "sequence" of its own
        return {"input_ids": ids, "position_ids": positions, "labels": labels, "attention_mask": real}


def packing_stats(rows: Sequence[PackedRow], max_length: int) -> dict[str, float]:
    """How full the rows are: examples, rows and the fraction of ``rows × max_length`` holding tokens."""
    tokens = sum(len(row) for row in rows)
    return {"examples": sum(len(row.segments) for row in rows), "rows": len(rows),
            "fill": tokens / max(len(rows) * max_length, 1)}
