"""The training loop: one function, explicit steps (nanoGPT-style), testable on a tiny model.

Each optimizer step takes the next ``batch_size`` examples of the seeded stream, gives each process
its rows, splits them into ``grad_accum`` micro-batches, and divides every summed loss by the global
number of loss terms before ``backward`` (see :mod:`lorakit.train.objectives`), so the update does
not depend on how the batch was split. Gradients are summed over processes by DistributedDataParallel
during the last micro-batch's backward (see :mod:`lorakit.train.distributed`); then clip, AdamW with the rate
``lr_at(step)``. A non-finite loss or gradient skips the step (counted; ``max_bad_steps`` in a row
abort). Evaluation, best-adapter selection and checkpoints happen at fixed step intervals; SIGTERM
finishes the current step, writes a checkpoint and returns cleanly.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.core import lora_layers
from lorakit.train.checkpoint import (
    CHECKPOINT,
    TrainState,
    find_checkpoint,
    load_checkpoint,
    rng_tensors,
    save_checkpoint,
    save_tensors_atomic,
    trainable_tensors,
)
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext
from lorakit.train.objectives import batch_tokens, loss_terms, summed_loss, to_device
from lorakit.train.outputs import peak_memory_mb
from lorakit.train.sampling import ExampleStream, example_length
from lorakit.train.schedule import Schedule
from lorakit.train.step_parts import (
    LOG_FILE,
    StopFlag,
    append_log,
    clip_gradients,
    patience_spent,
    truncate_log,
)
from lorakit.train.trackers import Trackers

BEST = "best"


class TrainingAborted(RuntimeError):
    """Too many non-finite losses in a row: the run diverged."""


@dataclass
class LoopResult:
    """How the loop ended and what it measured."""

    state: TrainState
    stopped: str  # "done", or "interrupted" (SIGTERM: a checkpoint was written)
    seconds: float  # wall time of the loop in this process (not counting earlier runs)
    tokens_per_second: float  # input tokens per second of training (evaluation time excluded), all processes
    best_path: Path | None  # trainable tensors of the best evaluation, if any
    early_stopped: bool = False  # ended before total_steps by early_stopping_patience


@dataclass(frozen=True)
class Selection:
    """Which evaluation metric picks the best adapter."""

    metric: str  # key of the evaluate() dict, e.g. "accuracy" or "loss"
    higher_is_better: bool

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` (ties keep the earlier checkpoint)."""
        if best is None:
            return math.isfinite(value)
        return value > best if self.higher_is_better else value < best


def intervals(cfg: TrainConfig, total_steps: int) -> tuple[int, int]:
    """(evaluate every, checkpoint every) in steps; 0 means only at the end.

    The default, four evaluations, rounds up so that the last one falls on the last step.
    """
    eval_every = -(-total_steps // 4) if cfg.eval_every is None else cfg.eval_every
    ckpt_every = cfg.checkpoint_every or eval_every or max(total_steps // 4, 1)
    return eval_every, ckpt_every


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no decay on biases and norms (1-D tensors)."""
    params = list(trainable_tensors(model).items())
    if not params:
        raise ValueError("nothing to train: no parameter requires a gradient")
    # LoRA+ (Hayou et al. 2024): every B in its own group, its rate lr_scale times the schedule's.
    plus = {id(layer.lora_B) for layer in lora_layers(model).values()} if cfg.lora_plus_ratio else set()
    decay = [p for n, p in params if p.ndim >= 2 and id(p) not in plus]
    no_decay = [p for n, p in params if p.ndim < 2]
    faster = [p for n, p in params if id(p) in plus]
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0},
                          {"params": faster, "weight_decay": cfg.weight_decay, "lr_scale": cfg.lora_plus_ratio})
              if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr or 1e-3, betas=(0.9, 0.999), eps=1e-8)


def train_loop(
    model: nn.Module,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    cfg: TrainConfig,
    total_steps: int,
    *,
    ctx: DistContext | None = None,
    out_dir: str | Path | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    selection: Selection = Selection("loss", False),
    resume: bool = False,
    tracker: Trackers | None = None,
) -> LoopResult:
    """Train ``model``'s trainable parameters for ``total_steps`` optimizer steps; see the module doc.

    ``cfg`` must be resolved (``cfg.task`` and ``cfg.lr`` set). With ``out_dir``, the main process
    appends to ``log.jsonl``, writes ``checkpoint/`` and ``best/``; ``resume`` continues from the
    checkpoint there (an absent checkpoint starts fresh). ``tracker`` receives every log record;
    with ``cfg.early_stopping_patience`` the loop ends once that many evaluations in a row did not
    improve the best one (``LoopResult.early_stopped``).
    """
    ctx = ctx or DistContext()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    world_rows = ctx.world_size * cfg.grad_accum
    if cfg.batch_size % world_rows:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by processes × grad_accum = {world_rows}")
    optimizer = make_optimizer(model, cfg)
    forward = ctx.wrap(model)  # DistributedDataParallel across processes, the model itself alone
    params = [p for group in optimizer.param_groups for p in group["params"]]
    schedule = Schedule(cfg.lr, total_steps, round(cfg.warmup_ratio * total_steps), cfg.decay)
    eval_every, ckpt_every = intervals(cfg, total_steps)
    state = TrainState()
    found = find_checkpoint(out) if (resume and out is not None) else None
    if found is not None:
        state = load_checkpoint(found, model, optimizer, ctx.rank)
        if ctx.is_main:
            truncate_log(out / LOG_FILE, state.step)
    elif out is not None and ctx.is_main:
        if resume:
            print(f"note: no checkpoint in {out}; starting from step 0", file=sys.stderr)
        (out / LOG_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / BEST, ignore_errors=True)  # a stale best of an earlier run must never be loaded
    best_path = out / BEST / "trainable.safetensors" if out is not None else None
    lengths = [example_length(e) for e in examples] if cfg.group_by_length else None
    stream = ExampleStream(len(examples), cfg.seed, cfg.batch_size, lengths)
    bar = _progress(cfg, ctx, total_steps, state.step)
    started, tokens_here, window = time.perf_counter(), 0, []
    eval_seconds = [0.0]  # time spent evaluating: not part of the training throughput

    def do_eval() -> None:
        if evaluate is None:
            return
        eval_started = time.perf_counter()
        if ctx.is_main:
            metrics = evaluate(model)
            state.last_eval = metrics
            append_log(out, ctx, {"step": state.step, "eval": metrics}, tracker)
            value = metrics.get(selection.metric, float("nan"))
            if selection.better(value, state.best_metric):
                state.best_metric, state.best_step, state.best_eval = value, state.step, metrics
                state.evals_since_best = 0
                if best_path is not None:
                    save_tensors_atomic(trainable_tensors(model), best_path)
            else:
                state.evals_since_best += 1
        model.train()
        ctx.barrier()
        eval_seconds[0] += time.perf_counter() - eval_started

    def do_checkpoint() -> None:
        state.train_seconds = seconds_before + time.perf_counter() - started
        rngs = ctx.gather_rng(rng_tensors())
        if out is not None and ctx.is_main:
            save_checkpoint(out / CHECKPOINT, model, optimizer, state, rngs)
        ctx.barrier()

    seconds_before = state.train_seconds
    model.train()
    stopped, early_stopped = "done", False
    with StopFlag() as stop:
        while state.step < total_steps:
            rows = ctx.shard(stream.take(state.examples_seen, cfg.batch_size))
            size = len(rows) // cfg.grad_accum
            micro = [collate([examples[i] for i in rows[k * size:(k + 1) * size]]) for k in range(cfg.grad_accum)]
            head = torch.tensor([sum(loss_terms(cfg.task, b) for b in micro), float(stop.set)],
                                dtype=torch.float64, device=ctx.device)
            terms, stop_now = ctx.all_reduce_(head).tolist()
            if stop_now:  # every process agrees, since the flags were summed
                stopped = "interrupted"
                do_checkpoint()
                break
            for group in optimizer.param_groups:
                group["lr"] = schedule(state.step) * group.get("lr_scale", 1.0)
            loss_sum, tokens = torch.zeros((), dtype=torch.float64), 0
            for k, batch in enumerate(micro):
                batch = to_device(batch, ctx.device)
                # DDP all-reduces (bucketed, during backward) on the last micro-batch only, and *averages*
                # over processes: scaling by the world size turns that average into the global sum / terms.
                with ctx.sync_gradients(forward, k == len(micro) - 1):
                    loss = summed_loss(cfg.task, forward, batch) / max(terms, 1.0)
                    (loss * ctx.world_size).backward()
                loss_sum += loss.detach().double().cpu()
                tokens += batch_tokens(batch)
            totals = torch.tensor([loss_sum.item(), float(tokens)], dtype=torch.float64, device=ctx.device)
            ctx.all_reduce_(totals)
            step_loss, step_tokens = totals[0].item(), int(totals[1].item())
            norm = clip_gradients(params, cfg.max_grad_norm)
            if math.isfinite(step_loss) and math.isfinite(norm):
                optimizer.step()
                state.bad_in_a_row = 0
                # A finite loss and gradient can still yield a non-finite weight (an overflow in low
                # precision, an optimizer bug): stop before any checkpoint can hold it.
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    raise TrainingAborted(f"step {state.step + 1} produced non-finite weights; the last "
                                          f"checkpoint is intact: resume it with a lower --lr")
            else:
                state.bad_in_a_row += 1
                state.skipped_steps += 1
                append_log(out, ctx, {"step": state.step + 1, "skipped": True, "loss": str(step_loss)}, tracker)
            optimizer.zero_grad(set_to_none=True)
            if state.bad_in_a_row >= cfg.max_bad_steps:
                raise TrainingAborted(f"{state.bad_in_a_row} non-finite losses in a row at step {state.step + 1}; "
                                      f"try a lower --lr")
            state.step += 1
            state.examples_seen += cfg.batch_size
            state.tokens_seen += step_tokens
            tokens_here += step_tokens
            window.append(step_loss)
            elapsed = time.perf_counter() - started
            speed = tokens_here / max(elapsed - eval_seconds[0], 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{speed:.0f}")
            if state.step % cfg.log_every == 0 or state.step == total_steps:
                finite = [v for v in window if math.isfinite(v)]
                append_log(out, ctx, {
                    "step": state.step, "epoch": round(stream.epoch_of(state.examples_seen), 4),
                    "loss": sum(finite) / max(len(finite), 1), "lr": schedule(state.step - 1),
                    "grad_norm": norm, "tokens_per_s": speed,
                    "elapsed_s": seconds_before + elapsed, "memory_mb": peak_memory_mb(ctx.device),
                }, tracker)
                window = []
            evaluated = (eval_every and state.step % eval_every == 0) or state.step == total_steps
            if evaluated:
                do_eval()
            checkpointed = state.step % ckpt_every == 0 or state.step == total_steps
            if checkpointed:
                do_checkpoint()
            if evaluated and patience_spent(cfg, state, ctx):
                if not checkpointed:
                    do_checkpoint()
                early_stopped = True
                break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    has_best = best_path is not None and best_path.is_file()
    speed = tokens_here / max(seconds - eval_seconds[0], 1e-9)
    return LoopResult(state, stopped, seconds, speed, best_path if has_best else None, early_stopped)


def _progress(cfg: TrainConfig, ctx: DistContext, total: int, initial: int):
    if not (cfg.progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
