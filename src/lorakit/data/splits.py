"""Seeded, reproducible splits of data sets that ship without one.

``random.Random(seed)`` is used rather than numpy so a split depends only on the seed and the number of
items (Python guarantees the same sequence for an int seed across versions). Parts keep the file's
order, so the split is easy to inspect and independent of how items are later shuffled for training.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from lorakit.errors import LorakitError


def holdout_count(n: int, fraction: float) -> int:
    """Size of a held-out part: ``floor(n * fraction)`` (e.g. 10% of 5,452 TREC lines is 545)."""
    if not 0.0 < fraction < 1.0:
        raise LorakitError(f"fraction must be in (0, 1), got {fraction!r}")
    return int(n * fraction)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices ``0..n-1`` into ``(kept, held_out)``; the held-out part has ``holdout_count`` items."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = holdout_count(n, fraction)
    return sorted(order[k:]), sorted(order[:k])


def three_way_split(n: int, seed: int, dev: float = 0.1, test: float = 0.1) -> dict[str, list[int]]:
    """Split indices ``0..n-1`` into train/dev/test; dev and test get ``floor(n * fraction)`` each."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_dev, n_test = holdout_count(n, dev), holdout_count(n, test)
    if n_dev + n_test >= n:
        raise LorakitError(f"dev={dev} and test={test} leave no training items out of {n}")
    return {
        "train": sorted(order[n_dev + n_test :]),
        "dev": sorted(order[:n_dev]),
        "test": sorted(order[n_dev : n_dev + n_test]),
    }


def hold_out(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Split a Dataset into ``(train, dev)``: ``floor(n * fraction)`` seeded rows held out as dev.

    Both keep the file's order; their ``info`` says where they came from, so a report can name it. A
    fraction that leaves dev (or train) empty is an error, never a silent evaluation on nothing.
    """
    n = len(dataset.examples)
    kept, held = holdout_split(n, fraction, seed)
    if not held or not kept:
        raise LorakitError(
            f"{dataset.name}: {n} rows with eval fraction {fraction} leave an empty "
            f"{'dev' if not held else 'train'} split; pass a separate eval file or another fraction"
        )
    note = (f"{len(held)} of {n} rows held out as dev by seed {seed} (fraction {fraction}); "
            f"train keeps the other {len(kept)}.")
    train = replace(dataset, split="train", examples=[dataset.examples[i] for i in kept],
                    info=f"{dataset.info} {note}")
    dev = replace(dataset, split="dev", examples=[dataset.examples[i] for i in held],
                  info=f"{dataset.info} {note}", bad_rows=())  # bad rows are reported once, with train
    return train, dev
