"""train-many's per-job steps: what ``train_loop`` does for one run, done for each job of the mixed batch.

The forward/backward is shared (:func:`lorakit.train.many._train`); everything after it is per job,
on the model viewed as that job alone: clipping, AdamW, logging, evaluation with best-adapter
selection, checkpoints holding the job's own RNG stream, and the final outputs.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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
from lorakit.train.loop import BEST, LoopResult, TrainingAborted, intervals, make_optimizer
from lorakit.train.many_model import SharedModel
from lorakit.train.objectives import loss_terms
from lorakit.train.outputs import PeakMemory, peak_memory_mb
from lorakit.train.runner import Prepared, finish_run, selection_eval, total_steps_for
from lorakit.train.sampling import ExampleStream, example_length
from lorakit.train.schedule import Schedule
from lorakit.train.step_parts import LOG_FILE, append_log, clip_gradients, patience_spent, truncate_log


@dataclass
class Job:
    """One adapter being trained: its run's pieces and its loop state."""

    number: int
    name: str
    cfg: TrainConfig
    status: str = "setup"  # setup, running, done, failed, interrupted
    error: str | None = None
    p: Prepared | None = None
    base_metrics: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    state: TrainState = field(default_factory=TrainState)
    metrics: dict[str, Any] | None = None
    tokens_here: int = 0
    window: list[float] = field(default_factory=list)
    eval_seconds: float = 0.0
    early_stopped: bool = False
    loop: Any = None  # _JobLoop while training


@dataclass
class _JobLoop:
    """What train_loop keeps in locals, per job."""

    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    schedule: Schedule
    total_steps: int
    eval_every: int
    ckpt_every: int
    stream: ExampleStream
    evaluate: Any
    selection: Any
    tracker: Any
    best_path: Path
    bar: Any
    seconds_before: float
    micro: list[dict[str, torch.Tensor]] = field(default_factory=list)
    terms: float = 0.0
    loss_sum: torch.Tensor | None = None
    tokens: int = 0


def start(job: Job, sm: SharedModel, ctx: DistContext, progress: bool) -> None:
    """The optimizer, schedule, stream and (with resume) checkpoint of one job, as train_loop makes them."""
    from lorakit.train.trackers import open_trackers

    p, cfg = job.p, job.p.cfg
    out = Path(cfg.out)
    total = total_steps_for(cfg, len(p.train_rows))
    evaluate, selection = selection_eval(p)
    tracker = open_trackers(cfg.report_to, out, out.name, cfg.to_json())
    with sm.view(job.number) as model:
        optimizer = make_optimizer(model, cfg)
        found = find_checkpoint(out) if cfg.resume else None
        if found is not None:
            job.state = load_checkpoint(found, model, optimizer)
            sm.rows.rng[job.number] = rng_tensors()  # the job's dropout stream continues where it stopped
            truncate_log(out / LOG_FILE, job.state.step)
        else:
            if cfg.resume:
                print(f"note: no checkpoint in {out}; job {job.name!r} starts from step 0", file=sys.stderr)
            (out / LOG_FILE).unlink(missing_ok=True)
            shutil.rmtree(out / BEST, ignore_errors=True)
    params = [q for group in optimizer.param_groups for q in group["params"]]
    eval_every, ckpt_every = intervals(cfg, total)
    lengths = [example_length(e) for e in p.train_rows] if cfg.group_by_length else None
    bar = None
    if progress and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=job.state.step, desc=job.name, unit="step", position=job.number,
                   dynamic_ncols=True)
    job.loop = _JobLoop(optimizer, params, Schedule(cfg.lr, total, round(cfg.warmup_ratio * total), cfg.decay),
                        total, eval_every, ckpt_every, ExampleStream(len(p.train_rows), cfg.seed, cfg.batch_size,
                                                                       lengths),
                        evaluate, selection, tracker, out / BEST / "trainable.safetensors", bar, job.state.train_seconds)


def draw(job: Job) -> None:
    """The job's next batch from its seeded stream, split into its micro-batches and collated."""
    loop, cfg, p = job.loop, job.p.cfg, job.p
    rows = loop.stream.take(job.state.examples_seen, cfg.batch_size)
    size = len(rows) // cfg.grad_accum
    loop.micro = [p.train_collate([p.train_rows[i] for i in rows[k * size:(k + 1) * size]])
                  for k in range(cfg.grad_accum)]
    loop.terms = float(sum(loss_terms(cfg.task, b) for b in loop.micro))
    loop.loss_sum, loop.tokens = torch.zeros((), dtype=torch.float64), 0
    for group in loop.optimizer.param_groups:
        group["lr"] = loop.schedule(job.state.step) * group.get("lr_scale", 1.0)


def update(job: Job, sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float, started: float) -> None:
    """Clip, step, log, evaluate and checkpoint one job (train_loop's step tail, per job)."""
    loop, cfg, state, out = job.loop, job.p.cfg, job.state, Path(job.p.cfg.out)
    step_loss = loop.loss_sum.item()
    norm = clip_gradients(loop.params, cfg.max_grad_norm)
    try:
        if math.isfinite(step_loss) and math.isfinite(norm):
            loop.optimizer.step()
            state.bad_in_a_row = 0
            if not all(bool(torch.isfinite(q).all()) for q in loop.params):
                raise TrainingAborted(f"step {state.step + 1} produced non-finite weights; the last "
                                      f"checkpoint is intact: resume it with a lower --lr")
        else:
            state.bad_in_a_row += 1
            state.skipped_steps += 1
            append_log(out, ctx, {"step": state.step + 1, "skipped": True, "loss": str(step_loss)}, loop.tracker)
        if state.bad_in_a_row >= cfg.max_bad_steps:
            raise TrainingAborted(f"{state.bad_in_a_row} non-finite losses in a row at step {state.step + 1}; "
                                  f"try a lower --lr")
    finally:
        loop.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.examples_seen += cfg.batch_size
    state.tokens_seen += loop.tokens
    job.tokens_here += loop.tokens
    job.window.append(step_loss)
    elapsed = time.perf_counter() - started
    if loop.bar is not None:
        loop.bar.update(1)
        loop.bar.set_postfix(loss=f"{step_loss:.4f}")
    if state.step % cfg.log_every == 0 or state.step == loop.total_steps:
        finite = [v for v in job.window if math.isfinite(v)]
        append_log(out, ctx, {
            "step": state.step, "epoch": round(loop.stream.epoch_of(state.examples_seen), 4),
            "loss": sum(finite) / max(len(finite), 1), "lr": loop.schedule(state.step - 1), "grad_norm": norm,
            "tokens_per_s": job.tokens_here / max(elapsed - job.eval_seconds, 1e-9),
            "elapsed_s": loop.seconds_before + elapsed, "memory_mb": peak_memory_mb(ctx.device),
        }, loop.tracker)
        job.window = []
    evaluated = (loop.eval_every and state.step % loop.eval_every == 0) or state.step == loop.total_steps
    if evaluated:
        _evaluate(job, sm, ctx)
    checkpointed = state.step % loop.ckpt_every == 0 or state.step == loop.total_steps
    if checkpointed:
        checkpoint(job, sm, started)
    if evaluated and patience_spent(cfg, state, ctx):
        if not checkpointed:
            checkpoint(job, sm, started)
        job.early_stopped = True
    if state.step >= loop.total_steps or job.early_stopped:
        finish(job, sm, ctx, memory, wall, started)


def _evaluate(job: Job, sm: SharedModel, ctx: DistContext) -> None:
    """train_loop's evaluation and best-adapter selection, on the model viewed as this job."""
    loop, state, out = job.loop, job.state, Path(job.p.cfg.out)
    began = time.perf_counter()
    with sm.view(job.number) as model:
        metrics = loop.evaluate(model)
        state.last_eval = metrics
        append_log(out, ctx, {"step": state.step, "eval": metrics}, loop.tracker)
        value = metrics.get(loop.selection.metric, float("nan"))
        if loop.selection.better(value, state.best_metric):
            state.best_metric, state.best_step, state.best_eval = value, state.step, metrics
            state.evals_since_best = 0
            save_tensors_atomic(trainable_tensors(model), loop.best_path)
        else:
            state.evals_since_best += 1
    job.eval_seconds += time.perf_counter() - began


def checkpoint(job: Job, sm: SharedModel, started: float) -> None:
    """The job's resumable checkpoint, holding its own RNG stream."""
    job.state.train_seconds = job.loop.seconds_before + time.perf_counter() - started
    with sm.view(job.number) as model:
        save_checkpoint(Path(job.p.cfg.out) / CHECKPOINT, model, job.loop.optimizer, job.state,
                        [sm.rows.rng[job.number]])


def finish(job: Job, sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float, started: float) -> None:
    """The job leaves the batch: best weights, final evaluation, adapter/, metrics.json, loss.png."""
    loop = job.loop
    seconds = time.perf_counter() - started
    best = loop.best_path if loop.best_path.is_file() else None
    result = LoopResult(job.state, "done", seconds, job.tokens_here / max(seconds - job.eval_seconds, 1e-9),
                        best, job.early_stopped)
    summary = {"stopped": "done", "step": job.state.step, "total_steps": loop.total_steps, **job.summary}
    with sm.view(job.number) as model:
        job.metrics = finish_run(job.p, model, result, summary, job.base_metrics, loop.selection, loop.tracker, False,
                                 lambda: {"wall_seconds": time.perf_counter() - wall,
                                          "peak_memory_mb": memory.overall(), "peak_memory_phases_mb": memory.peaks,
                                          "device": str(ctx.device), "processes": 1,
                                          "train_many": {"jobs": len(sm.jobs)}})
    job.status = "done"
    loop.optimizer.state.clear()  # its AdamW moments are no longer needed
