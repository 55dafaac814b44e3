"""The memory levers of a run: checkpointing is exact, base_dtype resolves and reaches the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext
from lorakit.train.memory import enable_checkpointing, resolve_memory_options
from lorakit.train.objectives import summed_loss
from lorakit.train.runner import make_trainable, prepare, seed_everything

CPU = torch.device("cpu")


def _prepared(dirs: dict[str, Path], data: str, **overrides):
    options = dict(batch_size=8, max_length=16, dropout=0.0, eval_every=0, progress=False, base_eval=False,
                   base_dtype="fp32")
    model = str(dirs["bert" if data == "cls_data" else "llama"])
    p = prepare(TrainConfig(model=model, data=str(dirs[data]), **{**options, **overrides}), DistContext())
    seed_everything(1)
    return p


def _loss_and_grads(p, checkpointing: bool):
    cfg = dataclasses.replace(p.cfg, checkpointing=checkpointing)
    model = p.loaded.model
    make_trainable(model, cfg)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                param.normal_(std=0.1, generator=torch.Generator().manual_seed(len(name)))
    model.train()
    batch = p.collate(p.train.examples[:8])
    loss = summed_loss(cfg.task, model, batch)
    loss.backward()
    return loss.detach(), {n: q.grad.clone() for n, q in model.named_parameters() if q.requires_grad}


@pytest.mark.parametrize("data", ["gen_data", "cls_data"])
def test_checkpointing_gives_the_same_loss_and_gradients(tiny_dirs, data: str) -> None:
    plain_loss, plain = _loss_and_grads(_prepared(tiny_dirs, data), checkpointing=False)
    p = _prepared(tiny_dirs, data)
    ckpt_loss, ckpt = _loss_and_grads(p, checkpointing=True)
    layers = [m for m in p.loaded.model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert layers, "no block is checkpointed"
    torch.testing.assert_close(ckpt_loss, plain_loss, rtol=0, atol=0)
    assert plain.keys() == ckpt.keys() and plain
    for name, grad in plain.items():
        torch.testing.assert_close(ckpt[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_checkpointing_refuses_a_model_without_a_hook() -> None:
    with pytest.raises(ValueError, match="no activation-checkpointing hook"):
        enable_checkpointing(torch.nn.Linear(2, 2))


def test_base_dtype_resolves_per_method_and_reaches_the_model(tiny_dirs) -> None:
    assert resolve_memory_options(TrainConfig(full=True), CPU).base_dtype == "fp32"
    assert resolve_memory_options(TrainConfig(base_dtype="nf4"), CPU).base_dtype == "nf4"
    assert resolve_memory_options(TrainConfig(), CPU).base_dtype in ("bf16", "fp32")
    with pytest.raises(ValueError, match="applies to LoRA's frozen base"):
        TrainConfig(full=True, base_dtype="bf16")
    with pytest.raises(ValueError, match="base_dtype must be one of"):
        TrainConfig(base_dtype="int4")
    p = _prepared(tiny_dirs, "cls_data", base_dtype="bf16")
    model = p.loaded.model
    report = make_trainable(model, p.cfg)
    assert report["base_dtype"] == "bf16" and report["checkpointing"] is False
    frozen = {q.dtype for q in model.parameters() if not q.requires_grad}
    trainable = {q.dtype for q in model.parameters() if q.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    model.train()
    loss = summed_loss("classify", model, p.collate(p.train.examples[:4]))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_the_lm_head_gets_contiguous_inputs_after_freezing(tiny_dirs) -> None:
    p = _prepared(tiny_dirs, "gen_data")
    model = p.loaded.model
    make_trainable(model, p.cfg)
    seen = []
    model.lm_head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)
    assert seen and all(seen)  # generation slices hidden[:, -1:, :]; the head sees a contiguous copy
    assert out.shape == (2, 6) and full.shape[:2] == (2, 4)
