"""``train_many``: train many LoRA adapters at once over one frozen base, in one mixed batch.

Each job is set up exactly as ``lorakit train`` sets up a run (:func:`~lorakit.train.runner.prepare`:
seed, splits, collators; the base evaluation; ``seed + 1`` then ``inject``), then its layers are taken
aside (:class:`~lorakit.train.many_model.SharedModel`) so the next job injects into the plain base.
Each optimizer step then draws every active job's next micro-batch from its own seeded stream, runs
them as one padded batch through the shared base (a per-row job index selects each row's A and B),
and backpropagates the sum of the jobs' losses, each divided by its own number of terms: the jobs'
parameters are disjoint, so each one's gradient is exactly its solo gradient. Clipping, AdamW, the
schedule, evaluation, best-adapter selection and checkpoints are per job, on the model viewed as that
job alone. A job whose data is bad or whose loss diverges stops with its message; the others go on.
Finished jobs leave the batch.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Mapping
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
from lorakit.train.distributed import DistContext, init_distributed
from lorakit.train.loop import (
    BEST,
    LOG_FILE,
    LoopResult,
    TrainingAborted,
    _append_log,
    _clip,
    _patience_spent,
    _StopFlag,
    _truncate_log,
    intervals,
    make_optimizer,
)
from lorakit.train.many_batch import job_losses, merge_batches
from lorakit.train.many_jobs import check_jobs, job_configs, read_jobs
from lorakit.train.many_model import SharedModel
from lorakit.train.objectives import batch_tokens, loss_terms, to_device
from lorakit.train.outputs import PeakMemory, peak_memory_mb, write_json
from lorakit.train.runner import (
    Prepared,
    final_eval,
    finish_run,
    head_names,
    load_for,
    make_trainable,
    prepare,
    seed_everything,
    selection_eval,
    total_steps_for,
)
from lorakit.train.sampling import ExampleStream, example_length
from lorakit.train.schedule import Schedule

SUMMARY_FILE = "train_many.json"
# What stops one job and not the others: its data, its options, its divergence.
JOB_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
              PermissionError, TrainingAborted)


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


def train_many(jobs: Mapping[str, TrainConfig] | str | Path, out: str | Path, *, resume: bool = False,
               progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train every job of ``jobs`` (``{name: TrainConfig}`` or a jobs file) into ``out/<name>/``.

    Returns ``{name: metrics}`` (``metrics.json`` of a finished job; ``{"error": ...}`` for a failed
    one; ``{"stopped": "interrupted", ...}`` after SIGTERM) and writes it to ``out/train_many.json``.
    """
    wall = time.perf_counter()
    jobs = read_jobs(jobs) if isinstance(jobs, str | Path) else dict(jobs)
    check_jobs(jobs)
    configs = job_configs(jobs, out, resume)
    first = next(iter(configs.values()))
    if first.threads:
        torch.set_num_threads(first.threads)
    ctx = init_distributed(first.device)
    if ctx.world_size != 1:
        raise ValueError("train-many runs in one process (its jobs share the model); run it without torchrun")
    memory = PeakMemory(ctx.device)
    memory.phase("load")
    shared: dict[str, Any] = {}
    runs = [Job(i, name, cfg) for i, (name, cfg) in enumerate(configs.items())]
    model_holder: list[SharedModel] = []
    for job in runs:
        _guard(job, lambda job=job: _setup(job, shared, model_holder, ctx))
    live = [j for j in runs if j.status == "running"]
    trackers = []
    if live:
        sm = model_holder[0]
        sm.assemble()
        memory.phase("train")
        for job in live:
            _guard(job, lambda job=job: _start(job, sm, ctx, progress))
            trackers += [job.loop.tracker] if job.loop is not None and job.loop.tracker is not None else []
        try:
            _train(runs, sm, ctx, memory, wall)
        finally:
            for job in runs:
                if job.loop is not None and job.loop.bar is not None:
                    job.loop.bar.close()
            for tracker in trackers:
                tracker.close()
    results = {j.name: j.metrics if j.metrics is not None else
               {"error": j.error} if j.error else {"stopped": j.status, "step": j.state.step} for j in runs}
    write_json(Path(out) / SUMMARY_FILE, {"jobs": results, "wall_seconds": time.perf_counter() - wall,
                                          "peak_memory_mb": memory.overall(), "device": str(ctx.device)})
    return results


def _guard(job: Job, action) -> None:
    """Run one job's step; a user-level error ends that job alone, with its message."""
    try:
        action()
    except JOB_ERRORS as exc:
        job.status, job.error = "failed", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: job {job.name!r}: {job.error}", file=sys.stderr)


def _setup(job: Job, shared: dict[str, Any], holder: list[SharedModel], ctx: DistContext) -> None:
    """``lorakit train``'s preparation for one job, over the shared base; its layers are then taken aside."""
    heads: dict[str, Any] = {}

    def load(cfg: TrainConfig, train: Any, ctx: DistContext) -> Any:
        if "loaded" not in shared:
            shared["loaded"], shared["task"] = load_for(cfg, train, ctx), cfg.task
            model = shared["loaded"].model
            heads.update({h: model.get_submodule(h) for h in head_names(model)} if cfg.task == "classify" else {})
            return shared["loaded"]
        if cfg.task != shared["task"]:
            raise ValueError(f"its data set's task is {cfg.task}, the first job's {shared['task']}; "
                             f"one train-many run trains one task")
        if cfg.task == "classify":  # a fresh load initialises the head exactly as lorakit train's does
            fresh = load_for(cfg, train, ctx).model
            heads.update({h: fresh.get_submodule(h).to(ctx.device) for h in head_names(fresh)})
        return shared["loaded"]

    job.p = prepare(job.cfg, ctx, load)
    cfg, model = job.p.cfg, job.p.loaded.model
    if not holder:
        holder.append(SharedModel(model))
    sm = holder[0]
    from lorakit.core.inject import replace_submodule

    for path, head in heads.items():
        replace_submodule(model, path, head)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "train_config.json", cfg.to_json())
    base_file = out / "base_metrics.json"
    if cfg.base_eval:
        if cfg.resume and base_file.is_file():
            import json

            job.base_metrics = json.loads(base_file.read_text())
        else:
            job.base_metrics = final_eval(job.p, model, False)
            write_json(base_file, job.base_metrics)
    seed_everything(cfg.seed + 1)  # as lorakit train: the init does not depend on the base evaluation
    try:
        extra = make_trainable(model, cfg)
        from lorakit.core import parameter_report

        report = parameter_report(model)
    finally:
        from lorakit.core.inject import lora_layers

        if lora_layers(model):
            sm.harvest(job.number, tuple(heads))
    sm.rows.rng[job.number] = rng_tensors()
    job.summary = {"trainable_params": report.trainable, "total_params": report.total,
                   "trainable_percent": report.percent, "lora_params": report.lora, **extra}
    job.status = "running"


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


def _start(job: Job, sm: SharedModel, ctx: DistContext, progress: bool) -> None:
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
            _truncate_log(out / LOG_FILE, job.state.step)
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


def _train(runs: list[Job], sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float) -> None:
    """The mixed loop: every active job's micro-batches in one forward and one backward per micro-step."""
    from lorakit.data.batches import resolve_pad_id

    started = time.perf_counter()
    pad_id = resolve_pad_id(runs[0].p.loaded.tokenizer if runs[0].p else next(j for j in runs if j.p).p.loaded.tokenizer)
    for job in runs:  # a resumed job may already be complete
        if job.status == "running" and job.state.step >= job.loop.total_steps:
            _guard(job, lambda job=job: _finish(job, sm, ctx, memory, wall, started))
    sm.model.train()
    with _StopFlag() as stop:
        while True:
            active = [j for j in runs if j.status == "running"]
            if not active:
                return
            if stop.set:
                for job in active:
                    _guard(job, lambda job=job: _checkpoint(job, sm, started))
                    job.status = "interrupted"
                return
            for job in active:
                _guard(job, lambda job=job: _draw(job))
            active = [j for j in active if j.status == "running"]
            for k in range(max((len(j.loop.micro) for j in active), default=0)):
                parts = [(j, j.loop.micro[k]) for j in active if k < len(j.loop.micro)]
                batch, spans = merge_batches([(j.number, to_device(b, ctx.device)) for j, b in parts], pad_id)
                sm.rows.set(spans)
                try:
                    losses = job_losses(active[0].p.cfg.task, sm.model, batch, spans,
                                        {j.number: j.p.train.num_labels or 0 for j, _ in parts}
                                        if active[0].p.cfg.task == "classify" else {})
                finally:
                    sm.rows.set([])
                total = None
                for (job, b), loss in zip(parts, losses, strict=True):
                    loss = loss / max(job.loop.terms, 1.0)
                    job.loop.loss_sum += loss.detach().double().cpu()
                    job.loop.tokens += batch_tokens(b)
                    if torch.isfinite(loss):  # a diverged job's NaN must not reach the others' gradients
                        total = loss if total is None else total + loss
                if total is not None and total.requires_grad:
                    total.backward()
            for job in active:
                _guard(job, lambda job=job: _update(job, sm, ctx, memory, wall, started))


def _draw(job: Job) -> None:
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


def _update(job: Job, sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float, started: float) -> None:
    """Clip, step, log, evaluate and checkpoint one job (train_loop's step tail, per job)."""
    loop, cfg, state, out = job.loop, job.p.cfg, job.state, Path(job.p.cfg.out)
    step_loss = loop.loss_sum.item()
    norm = _clip(loop.params, cfg.max_grad_norm)
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
            _append_log(out, ctx, {"step": state.step + 1, "skipped": True, "loss": str(step_loss)}, loop.tracker)
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
        _append_log(out, ctx, {
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
        _checkpoint(job, sm, started)
    if evaluated and _patience_spent(cfg, state, ctx):
        if not checkpointed:
            _checkpoint(job, sm, started)
        job.early_stopped = True
    if state.step >= loop.total_steps or job.early_stopped:
        _finish(job, sm, ctx, memory, wall, started)


def _evaluate(job: Job, sm: SharedModel, ctx: DistContext) -> None:
    """train_loop's evaluation and best-adapter selection, on the model viewed as this job."""
    loop, state, out = job.loop, job.state, Path(job.p.cfg.out)
    began = time.perf_counter()
    with sm.view(job.number) as model:
        metrics = loop.evaluate(model)
        state.last_eval = metrics
        _append_log(out, ctx, {"step": state.step, "eval": metrics}, loop.tracker)
        value = metrics.get(loop.selection.metric, float("nan"))
        if loop.selection.better(value, state.best_metric):
            state.best_metric, state.best_step, state.best_eval = value, state.step, metrics
            state.evals_since_best = 0
            save_tensors_atomic(trainable_tensors(model), loop.best_path)
        else:
            state.evals_since_best += 1
    job.eval_seconds += time.perf_counter() - began


def _checkpoint(job: Job, sm: SharedModel, started: float) -> None:
    """The job's resumable checkpoint, holding its own RNG stream."""
    job.state.train_seconds = job.loop.seconds_before + time.perf_counter() - started
    with sm.view(job.number) as model:
        save_checkpoint(Path(job.p.cfg.out) / CHECKPOINT, model, job.loop.optimizer, job.state,
                        [sm.rows.rng[job.number]])


def _finish(job: Job, sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float, started: float) -> None:
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
