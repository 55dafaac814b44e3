"""The training loop on a tiny BERT: exact resume, accumulation invariance, non-finite losses."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest
import torch

from lorakit.train.checkpoint import find_checkpoint, trainable_tensors
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext
from lorakit.train.loop import LoopResult, TrainingAborted, train_loop
from lorakit.train.runner import make_trainable, prepare, seed_everything


def _setup(dirs: dict[str, Path], **overrides):
    # fp32 base: these tests compare runs for (near-)exact equality, which bf16 rounding would blur.
    options = dict(batch_size=8, max_length=16, dropout=0.1, lr=5e-3, eval_every=0, progress=False,
                   base_eval=False, base_dtype="fp32")
    cfg = TrainConfig(model=str(dirs["bert"]), data=str(dirs["cls_data"]), **{**options, **overrides})
    p = prepare(cfg, DistContext())
    seed_everything(1)
    make_trainable(p.loaded.model, p.cfg)
    return p


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainable_tensors(model).items()}


def _run(dirs, out: Path | None, steps: int, resume: bool = False, evaluate=None, **overrides) -> tuple:
    p = _setup(dirs, **overrides)
    result = train_loop(p.loaded.model, p.train.examples, p.collate, p.cfg, steps, out_dir=out,
                        evaluate=evaluate, resume=resume)
    return p.loaded.model, result


def test_interrupted_and_resumed_run_is_bitwise_identical(tiny_dirs, tmp_path: Path) -> None:
    reference, _ = _run(tiny_dirs, tmp_path / "a", 10, checkpoint_every=3)

    def sigterm_at_step_5(model: torch.nn.Module) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: finish the step, checkpoint, stop
        return {"loss": 0.0}

    _, first = _run(tiny_dirs, tmp_path / "b", 10, checkpoint_every=3, eval_every=5, evaluate=sigterm_at_step_5)
    assert isinstance(first, LoopResult) and first.stopped == "interrupted" and first.state.step == 5
    resumed, second = _run(tiny_dirs, tmp_path / "b", 10, resume=True, checkpoint_every=3)
    assert second.stopped == "done" and second.state.step == 10
    expected, got = _weights(reference), _weights(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_crash_between_checkpoints_resumes_from_the_last_one(tiny_dirs, tmp_path: Path) -> None:
    reference, _ = _run(tiny_dirs, tmp_path / "a", 7, checkpoint_every=2)

    def crash(model: torch.nn.Module) -> dict[str, float]:
        raise KeyboardInterrupt  # stands in for a crash after step 5; the last checkpoint is step 4

    with pytest.raises(KeyboardInterrupt):
        _run(tiny_dirs, tmp_path / "b", 7, checkpoint_every=2, eval_every=5, evaluate=crash)
    assert find_checkpoint(tmp_path / "b") is not None
    resumed, result = _run(tiny_dirs, tmp_path / "b", 7, resume=True, checkpoint_every=2)
    assert result.state.step == 7
    for name, value in _weights(reference).items():
        assert torch.equal(value, _weights(resumed)[name]), name
    steps = [int(line.split('"step": ')[1].split(",")[0].rstrip("}")) for line in
             (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # lines logged after the checkpoint by the crashed run were dropped


def test_grad_accumulation_gives_the_same_update(tiny_dirs) -> None:
    one, _ = _run(tiny_dirs, None, 3, dropout=0.0)
    four, _ = _run(tiny_dirs, None, 3, dropout=0.0, grad_accum=4)
    for name, value in _weights(one).items():
        torch.testing.assert_close(_weights(four)[name], value, rtol=1e-3, atol=2e-5)  # Adam amplifies float noise


def test_non_finite_losses_are_skipped_then_abort(tiny_dirs, monkeypatch) -> None:
    import lorakit.train.loop as loop

    real = loop.summed_loss
    calls = {"n": 0}

    def flaky(task, model, batch, *smoothing):
        calls["n"] += 1
        loss = real(task, model, batch, *smoothing)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(loop, "summed_loss", flaky)
    p = _setup(tiny_dirs)
    before = _weights(p.loaded.model)
    result = train_loop(p.loaded.model, p.train.examples, p.collate, p.cfg, 3)
    assert result.state.skipped_steps == 1 and result.state.step == 3
    assert all(torch.isfinite(v).all() for v in _weights(p.loaded.model).values())
    assert any(not torch.equal(before[k], v) for k, v in _weights(p.loaded.model).items())

    monkeypatch.setattr(loop, "summed_loss", lambda task, model, batch, *eps: real(task, model, batch, *eps) * float("inf"))
    p = _setup(tiny_dirs, max_bad_steps=2)
    with pytest.raises(TrainingAborted, match="2 non-finite losses in a row"):
        train_loop(p.loaded.model, p.train.examples, p.collate, dataclasses.replace(p.cfg), 5)
