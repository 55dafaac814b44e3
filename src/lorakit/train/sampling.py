"""The order in which training examples are seen: a seeded stream of shuffled epochs.

Epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)`` alone, and batches are
consecutive slices of the endless concatenation of epochs. The data position is therefore one number
(examples consumed so far): a resumed run continues mid-epoch from it, no sampler state needed, and
no example is dropped at an epoch's end.

With ``lengths``, each epoch is grouped by length (as Hugging Face's ``group_by_length``): the
permutation is cut into windows of ``GROUP_BATCHES`` batches, each window is sorted by length and cut
into batches, and the batches of a window are shuffled. A batch then holds examples of similar length,
so padding (wasted compute) shrinks several-fold, while the order stays random and seeded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lorakit.errors import LorakitError

GROUP_BATCHES = 50  # batches per length-sorted window


class ExampleStream:
    """Indices ``0..n-1``, reshuffled every epoch, addressed by global offset."""

    def __init__(self, n: int, seed: int, batch_size: int = 1, lengths: Sequence[int] | None = None) -> None:
        if n < 1:
            raise LorakitError("the training split is empty")
        if lengths is not None and len(lengths) != n:
            raise LorakitError(f"{len(lengths)} lengths for {n} examples")
        self.n = n
        self.seed = seed
        self.batch_size = batch_size
        self.lengths = list(lengths) if lengths is not None else None
        self._cache: dict[int, list[int]] = {}

    def epoch_order(self, epoch: int) -> list[int]:
        """The order of epoch ``epoch`` (cached: only the last two are kept)."""
        if epoch not in self._cache:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
            if self.lengths is not None:
                order = self._grouped(order, gen)
            self._cache = {k: v for k, v in self._cache.items() if k >= epoch - 1}
            self._cache[epoch] = order
        return self._cache[epoch]

    def _grouped(self, order: list[int], gen: torch.Generator) -> list[int]:
        b = self.batch_size
        window = b * GROUP_BATCHES
        out: list[int] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda i: -self.lengths[i])
            batches = [chunk[k:k + b] for k in range(0, len(chunk), b)]
            for j in torch.randperm(len(batches), generator=gen).tolist():
                out.extend(batches[j])
        return out

    def take(self, offset: int, count: int) -> list[int]:
        """The ``count`` indices starting at global position ``offset``."""
        out: list[int] = []
        while len(out) < count:
            epoch, pos = divmod(offset + len(out), self.n)
            order = self.epoch_order(epoch)
            out.extend(order[pos:pos + count - len(out)])
        return out

    def epoch_of(self, offset: int) -> float:
        """Fractional epoch at global position ``offset``."""
        return offset / self.n


def example_length(example: object) -> int:
    """A cheap length proxy for grouping: characters of text or prompt + completion; tokens of a packed row."""
    if hasattr(example, "segments"):  # lorakit.data.packing.PackedRow: its length in tokens
        return len(example)
    text = getattr(example, "text", None)
    if text is not None:
        return len(text)
    return len(getattr(example, "prompt", "")) + len(getattr(example, "completion", ""))
