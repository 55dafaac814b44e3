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
Finished jobs leave the batch. ``max_rows`` splits a step's mixed batch into several forwards of whole
jobs (activation memory of about ``max_rows`` rows instead of all jobs' rows); with checkpointing the
recomputed blocks replay each job's rows and dropout stream (``MixedRows.checkpoint_contexts``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from lorakit.train.checkpoint import rng_tensors
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext, init_distributed
from lorakit.train.loop import TrainingAborted
from lorakit.train.many_batch import job_losses, merge_batches
from lorakit.train.many_jobs import check_jobs, job_configs, read_jobs
from lorakit.train.many_model import SharedModel
from lorakit.train.many_steps import Job, checkpoint, draw, finish, start, update
from lorakit.train.memory import enable_checkpointing
from lorakit.train.objectives import batch_tokens, to_device
from lorakit.train.outputs import PeakMemory, write_json
from lorakit.train.runner import (
    final_eval,
    head_names,
    load_for,
    make_trainable,
    prepare,
    seed_everything,
)
from lorakit.train.step_parts import StopFlag

SUMMARY_FILE = "train_many.json"
# What stops one job and not the others: its data, its options, its divergence.
JOB_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
              PermissionError, TrainingAborted)


def train_many(jobs: Mapping[str, TrainConfig] | str | Path, out: str | Path, *, resume: bool = False,
               progress: bool = True, max_rows: int | str | None = None) -> dict[str, dict[str, Any]]:
    """Train every job of ``jobs`` (``{name: TrainConfig}`` or a jobs file) into ``out/<name>/``.

    ``max_rows``: rows per mixed forward, whole jobs per forward (see :func:`resolve_max_rows`: a
    number, ``"all"`` or ``"auto"``; None: the jobs file's top-level ``max_rows``, else ``"auto"``).
    Each job's result does not depend on it.

    Returns ``{name: metrics}`` (``metrics.json`` of a finished job; ``{"error": ...}`` for a failed
    one; ``{"stopped": "interrupted", ...}`` after SIGTERM) and writes it to ``out/train_many.json``.
    """
    wall = time.perf_counter()
    if isinstance(jobs, str | Path):
        jobs, options = read_jobs(jobs)
        max_rows = max_rows if max_rows is not None else options.get("max_rows")
    jobs = dict(jobs)
    check_jobs(jobs)
    configs = job_configs(jobs, out, resume)
    first = next(iter(configs.values()))
    if first.threads:
        torch.set_num_threads(first.threads)
    ctx = init_distributed(first.device)
    max_rows = resolve_max_rows(max_rows, ctx.device, configs.values())
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
        if first.checkpointing:  # recomputed blocks must replay each job's rows and dropout stream
            enable_checkpointing(sm.model, sm.rows.checkpoint_contexts)
        memory.phase("train")
        for job in live:
            _guard(job, lambda job=job: start(job, sm, ctx, progress))
            trackers += [job.loop.tracker] if job.loop is not None and job.loop.tracker is not None else []
        try:
            _train(runs, sm, ctx, memory, wall, max_rows)
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
        from lorakit.report import parameter_report

        report = parameter_report(model)
    finally:
        from lorakit.core.inject import lora_layers

        if lora_layers(model):
            sm.harvest(job.number, tuple(heads))
    sm.rows.rng[job.number] = rng_tensors()
    job.summary = {"trainable_params": report.trainable, "total_params": report.total,
                   "trainable_percent": report.percent, "lora_params": report.lora, **extra}
    job.status = "running"


def _train(runs: list[Job], sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float,
           max_rows: int | None) -> None:
    """The mixed loop: every active job's micro-batches in one forward and one backward per micro-step
    (in forwards of at most ``max_rows`` rows when that is set)."""
    from lorakit.data.batches import resolve_pad_id

    started = time.perf_counter()
    pad_id = resolve_pad_id(runs[0].p.loaded.tokenizer if runs[0].p else next(j for j in runs if j.p).p.loaded.tokenizer)
    for job in runs:  # a resumed job may already be complete
        if job.status == "running" and job.state.step >= job.loop.total_steps:
            _guard(job, lambda job=job: finish(job, sm, ctx, memory, wall, started))
    sm.model.train()
    with StopFlag() as stop:
        while True:
            active = [j for j in runs if j.status == "running"]
            if not active:
                return
            if stop.set:
                for job in active:
                    _guard(job, lambda job=job: checkpoint(job, sm, started))
                    job.status = "interrupted"
                return
            for job in active:
                _guard(job, lambda job=job: draw(job))
            active = [j for j in active if j.status == "running"]
            for k in range(max((len(j.loop.micro) for j in active), default=0)):
                parts = [(j, j.loop.micro[k]) for j in active if k < len(j.loop.micro)]
                for chunk in row_chunks(parts, max_rows):  # one mixed batch, or several when capped
                    _forward_backward(chunk, sm, ctx, pad_id)
            for job in active:
                _guard(job, lambda job=job: update(job, sm, ctx, memory, wall, started))


def resolve_max_rows(value: int | str | None, device: torch.device, configs: Iterable[TrainConfig]) -> int | None:
    """Rows per mixed forward: a positive number; ``"all"`` (None: every job's micro-batch in one
    forward); ``"auto"`` (the default): ``"all"`` on a GPU, whose throughput grows with the batch, and
    the largest job's micro-batch on a CPU, where one big forward is no faster per row (measured:
    benchmarks/README.md "train-many") but holds every job's activations and pads every job to the
    longest. Raises ValueError for anything else."""
    if value is None or value == "auto":
        if device.type == "cuda":
            return None
        return max(cfg.batch_size // max(cfg.grad_accum, 1) for cfg in configs)
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_rows must be a positive number of rows, 'auto' or 'all', got {value!r}")
    return value


def row_chunks(parts: list[tuple[Job, dict]], max_rows: int | None) -> list[list[tuple[Job, dict]]]:
    """Split one micro-step's ``(job, batch)`` parts into mixed batches of at most ``max_rows`` rows.

    Each chunk holds whole jobs (at least one, even one larger than the cap), in job order; None: one
    chunk. The jobs' losses and parameters are disjoint, so every job's gradient is the same either
    way; a cap trades the size of one forward (activation memory) for more, smaller forwards.
    """
    if max_rows is None:
        return [parts]
    chunks: list[list[tuple[Job, dict]]] = [[]]
    rows = 0
    for part in parts:
        n = part[1]["input_ids"].shape[0]
        if chunks[-1] and rows + n > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(part)
        rows += n
    return chunks


def _forward_backward(parts: list[tuple[Job, dict]], sm: SharedModel, ctx: DistContext, pad_id: int) -> None:
    """One mixed forward of ``parts``, each job's loss normalised by its own terms, one backward."""
    task = parts[0][0].p.cfg.task
    batch, spans = merge_batches([(j.number, to_device(b, ctx.device)) for j, b in parts], pad_id)
    sm.rows.set(spans)
    try:
        losses = job_losses(task, sm.model, batch, spans,
                            {j.number: j.p.train.num_labels or 0 for j, _ in parts} if task == "classify" else {})
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
