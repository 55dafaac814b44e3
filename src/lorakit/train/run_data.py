"""The data side of a training run: honest splits from the options, and packed training rows.

:func:`run_splits` reads train / eval / test as ``TrainConfig`` asks (files, columns, bad rows, held-out
fraction; :mod:`lorakit.data.split_plan`), :func:`training_rows` turns the training examples into what
the loop batches: the examples themselves, or packed rows (:mod:`lorakit.data.packing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig
from lorakit.train.objectives import model_inputs


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
        raise LorakitError(f"{err} (pass --skip-bad-rows to skip such rows: they are counted and listed in metrics.json)") from None
    if cfg.packing and splits.train.task != "generate":
        raise LorakitError("--packing is for generation data; this data set is classification")
    if announce:
        print(f"data {cfg.data}:")
        for line in splits.lines():
            print(line)
    return splits


def training_rows(cfg: TrainConfig, examples: list, collate: Callable,
                  model: Any = None) -> tuple[list, Callable, dict[str, Any] | None]:
    """``(rows, collate, packing_stats)`` for the loop: the examples as they are, or packed rows.

    ``cfg`` must be resolved (``max_length`` set). Packing tokenizes every training example once, up
    front, with the same collator (so truncation and loss masks are the unpacked ones); given the
    ``model``, it first checks that the model keeps packed examples apart (:func:`check_packing`).
    """
    if not cfg.packing:
        return examples, collate, None
    from lorakit.data.packing import PackedCollator, pack, packing_stats

    rows = pack([collate.encode(e) for e in examples], cfg.max_length)
    packed = PackedCollator(collate.pad_id)
    if model is not None:
        check_packing(model, rows, packed)
    return rows, packed, packing_stats(rows, cfg.max_length)


@torch.no_grad()
def check_packing(model: Any, rows: list, packed: Callable, tolerance: float = 1e-3) -> None:
    """Refuse packing when the model lets packed examples see each other.

    The first row holding several examples is run packed and each of its examples alone; the logits
    must agree. Hugging Face decoders that build their mask from ``position_ids`` pass; a model that
    ignores them (its attention would cross example boundaries) fails here, before any training.
    """
    row = next((r for r in rows if len(r.segments) > 1), None)
    if row is None:
        return
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in packed([row]).items()}
        together = model(**model_inputs(batch)).logits[0].float()
        at = 0
        for ids, _ in row.segments:
            alone = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
            gap = float((together[at:at + len(ids)] - alone).abs().max())
            if gap > tolerance * max(1.0, float(alone.abs().max())):
                raise LorakitError(f"--packing: this model's attention crosses packed examples (logits differ by "
                                   f"{gap:.3g}); train without --packing")
            at += len(ids)
    finally:
        model.train(was_training)
