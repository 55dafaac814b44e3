"""Promise 5 (non-finite values): a NaN/Inf loss skips the step (counted), K in a row abort the run,
and no checkpoint ever holds a non-finite value.

In-process on the training loop with a tiny BERT: the loss is poisoned at chosen steps and every
checkpoint the loop writes is inspected at the moment it is written (a spy around ``save_checkpoint``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

import lorakit.train.loop as loop
from lorakit.train.checkpoint import trainable_tensors
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext
from lorakit.train.loop import TrainingAborted, train_loop
from lorakit.train.runner import make_trainable, prepare, seed_everything


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from benchmarks.tiny_models import make_classify_data, make_tiny_bert_dir

    root = tmp_path_factory.mktemp("nonfinite")
    return {"bert": make_tiny_bert_dir(root / "bert"), "data": make_classify_data(root / "data")}


def _prepared(tiny: dict[str, Path], **overrides):
    options = dict(batch_size=8, max_length=16, lr=5e-3, eval_every=0, progress=False, base_eval=False,
                   checkpoint_every=1)
    cfg = TrainConfig(model=str(tiny["bert"]), data=str(tiny["data"]), **{**options, **overrides})
    p = prepare(cfg, DistContext())
    seed_everything(1)
    make_trainable(p.loaded.model, p.cfg)
    return p


class CheckpointSpy:
    """Wraps ``save_checkpoint``: records, at each write, whether every saved tensor is finite."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.records: list[tuple[int, bool]] = []
        real = loop.save_checkpoint

        def spy(folder, model, optimizer, state, rank_rngs=None):
            tensors = list(trainable_tensors(model).values())
            tensors += [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
            self.records.append((state.step, all(bool(torch.isfinite(t).all()) for t in tensors)))
            return real(folder, model, optimizer, state, rank_rngs)

        monkeypatch.setattr(loop, "save_checkpoint", spy)


def _poison(monkeypatch: pytest.MonkeyPatch, bad_calls: dict[int, float]) -> None:
    """Multiply the loss of the n-th call (1-based) by the given value (nan or inf)."""
    real = loop.summed_loss
    calls = {"n": 0}

    def poisoned(task, model, batch, *smoothing):
        calls["n"] += 1
        loss = real(task, model, batch, *smoothing)
        return loss * bad_calls[calls["n"]] if calls["n"] in bad_calls else loss

    monkeypatch.setattr(loop, "summed_loss", poisoned)


def test_non_finite_steps_are_skipped_counted_and_never_checkpointed(tiny, tmp_path, monkeypatch) -> None:
    spy = CheckpointSpy(monkeypatch)
    _poison(monkeypatch, {2: float("nan"), 3: float("inf"), 5: float("-inf")})
    p = _prepared(tiny)
    result = train_loop(p.loaded.model, p.train.examples, p.collate, p.cfg, 6, out_dir=tmp_path)
    assert result.stopped == "done" and result.state.step == 6
    assert result.state.skipped_steps == 3
    skipped = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
               if json.loads(line).get("skipped")]
    assert [r["step"] for r in skipped] == [2, 3, 5]
    assert len(spy.records) == 6 and all(finite for _, finite in spy.records), spy.records
    assert all(torch.isfinite(v).all() for v in trainable_tensors(p.loaded.model).values())


def test_k_non_finite_losses_in_a_row_abort_and_leave_a_finite_checkpoint(tiny, tmp_path, monkeypatch) -> None:
    spy = CheckpointSpy(monkeypatch)
    _poison(monkeypatch, {n: float("nan") for n in range(3, 100)})
    p = _prepared(tiny, max_bad_steps=3)
    with pytest.raises(TrainingAborted, match="3 non-finite losses in a row at step 5"):
        train_loop(p.loaded.model, p.train.examples, p.collate, p.cfg, 20, out_dir=tmp_path)
    assert spy.records and all(finite for _, finite in spy.records), spy.records
    from benchmarks.reliability.killkit import checkpoint_report

    report = checkpoint_report(tmp_path)
    assert report["intact"] and report["finite"], report


def test_no_checkpoint_holds_non_finite_weights_even_if_a_step_produces_them(tiny, tmp_path, monkeypatch) -> None:
    spy = CheckpointSpy(monkeypatch)
    real = loop.make_optimizer

    def overflowing(model, cfg):
        optimizer = real(model, cfg)
        step = optimizer.step

        def step_then_overflow(*args, **kwargs):
            out = step(*args, **kwargs)
            if optimizer.state and len(spy.records) == 2:  # the third step overflows one weight
                with torch.no_grad():
                    next(iter(trainable_tensors(model).values())).view(-1)[0] = float("inf")
            return out

        optimizer.step = step_then_overflow
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", overflowing)
    p = _prepared(tiny)
    with contextlib.suppress(TrainingAborted):  # aborting is a fine answer; a non-finite checkpoint is not
        train_loop(p.loaded.model, p.train.examples, p.collate, p.cfg, 5, out_dir=tmp_path)
    assert spy.records and all(finite for _, finite in spy.records), spy.records
