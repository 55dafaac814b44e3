"""The data side of a training run: honest splits from the options, and packed training rows.

:func:`run_splits` reads train / eval / test as ``TrainConfig`` asks (files, columns, bad rows, held-out
fraction; :mod:`lorakit.data.split_plan`), :func:`training_rows` turns the training examples into what
the loop batches: the examples themselves, or packed rows (:mod:`lorakit.data.packing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lorakit.train.config import TrainConfig


def run_splits(cfg: TrainConfig, announce: bool = True) -> Any:
    """Read the run's splits (``lorakit.data.split_plan.TrainingSplits``); print how they were made.

    A malformed row stops the run with its ``file:line`` and the hint to skip such rows.
    """
    from lorakit.data.files import BadRowError, Columns
    from lorakit.data.split_plan import SPLIT_SEED, plan_splits

    columns = Columns(cfg.text_column, cfg.label_column, cfg.prompt_column, cfg.completion_column)
    try:
        splits = plan_splits(
            cfg.data, data_root=cfg.data_root, eval_split=cfg.eval_split, test_split=cfg.test_split,
            eval_data=cfg.eval_data, test_data=cfg.test_data, eval_fraction=cfg.eval_fraction, seed=SPLIT_SEED,
            eval_on_train_rows=cfg.eval_on_train_rows, columns=columns, skip_bad_rows=cfg.skip_bad_rows,
            test_limit=cfg.eval_limit,
        )
    except BadRowError as err:
        raise ValueError(f"{err} (pass --skip-bad-rows to skip such rows: they are counted and listed in metrics.json)") from None
    if cfg.packing and splits.train.task != "generate":
        raise ValueError("--packing is for generation data; this data set is classification")
    if announce:
        print(f"data {cfg.data}:")
        for line in splits.lines():
            print(line)
    return splits


def training_rows(cfg: TrainConfig, examples: list, collate: Callable) -> tuple[list, Callable, dict[str, Any] | None]:
    """``(rows, collate, packing_stats)`` for the loop: the examples as they are, or packed rows.

    ``cfg`` must be resolved (``max_length`` set). Packing tokenizes every training example once, up
    front, with the same collator (so truncation and loss masks are the unpacked ones).
    """
    if not cfg.packing:
        return examples, collate, None
    from lorakit.data.packing import PackedCollator, pack, packing_stats

    rows = pack([collate.encode(e) for e in examples], cfg.max_length)
    return rows, PackedCollator(collate.pad_id), packing_stats(rows, cfg.max_length)
