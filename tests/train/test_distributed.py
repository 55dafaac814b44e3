"""Two processes (torchrun, gloo, DistributedDataParallel) train the same weights as one process on the same
global batch, with and without gradient accumulation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorakit.train.config import TrainConfig
from lorakit.train.runner import run_training

OPTIONS = ["--max-steps", "3", "--batch-size", "8", "--max-length", "16", "--dropout", "0", "--lr", "5e-3",
           "--eval-every", "0", "--no-base-eval", "--no-progress", "--threads", "1",
           "--base-dtype", "fp32"]  # fp32: the comparison is near-exact, bf16 rounding would blur it


# (model, data, grad_accum): classification (loss per example), and a causal LM (loss per target token,
# divided by the global token count) with accumulation (DDP's no_sync on one micro-batch, a sync on the next).
CASES = [("bert", "cls_data", 1), ("llama", "gen_data", 2)]


@pytest.mark.parametrize(("model", "data", "grad_accum"), CASES)
def test_two_processes_match_one(tiny_dirs, tmp_path: Path, model: str, data: str, grad_accum: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LORAKIT_DEBUG": "1"}
    extra = ["--grad-accum", str(grad_accum), "--eval-limit", "2", "--max-new-tokens", "2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lorakit",
           "train", str(tiny_dirs[model]), str(tiny_dirs[data]), "--out", str(tmp_path / "ddp"), *OPTIONS, *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # generous: a busy CI machine
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ddp" / "metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")) == []

    cfg = TrainConfig(model=str(tiny_dirs[model]), data=str(tiny_dirs[data]), out=str(tmp_path / "one"),
                      max_steps=3, batch_size=8, max_length=16, dropout=0.0, lr=5e-3, eval_every=0,
                      base_eval=False, progress=False, eval_limit=2, max_new_tokens=2, base_dtype="fp32")
    metrics = run_training(cfg)
    assert metrics["processes"] == 1
    ddp = load_file(str(tmp_path / "ddp" / "checkpoint" / "trainable.safetensors"))
    one = load_file(str(tmp_path / "one" / "checkpoint" / "trainable.safetensors"))
    assert ddp.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-3, atol=2e-5)
    lora_b = [name for name in one if name.endswith("lora_B")]
    assert lora_b and all(torch.count_nonzero(one[name]) > 0 for name in lora_b)  # it trained
