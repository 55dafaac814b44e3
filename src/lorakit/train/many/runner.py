"""``train_many``: train many LoRA adapters at once over one frozen base, in one mixed batch.

Each job is set up exactly as ``lorakit train`` sets up a run (:func:`~lorakit.train.runner.setup_run`:
seed, splits, collators; the base evaluation; ``seed + 1`` then ``inject``), then its layers are taken
aside (:class:`~lorakit.train.many.model.SharedModel`) so the next job injects into the plain base.
Each optimizer step then draws every active job's next micro-batch from its own seeded stream, runs
them as one padded batch through the shared base (a per-row job index selects each row's A and B),
and backpropagates the sum of the jobs' losses, each divided by its own number of terms: the jobs'
parameters are disjoint, so each one's gradient is exactly its solo gradient. Each job is a
:class:`~lorakit.train.loop.Run` and :func:`~lorakit.train.loop.fit` drives them, as it drives
``lorakit train``'s one run: clipping, AdamW, the schedule, evaluation, best-adapter selection and
checkpoints are per job, on the model viewed as that job alone. A job whose data is bad or whose loss diverges stops with its message; the others go on.
Finished jobs leave the batch. ``max_rows`` splits a step's mixed batch into several forwards of whole
jobs (activation memory of about ``max_rows`` rows instead of all jobs' rows); with checkpointing the
recomputed blocks replay each job's rows and dropout stream (``MixedRows.checkpoint_contexts``).
A base with its own dropout gives each job's rows their own forward, in the job's own RNG stream
(:func:`_forward_backward`), so every job equals its solo run then too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from lorakit.errors import LorakitError
from lorakit.train.checkpoint import rng_tensors, set_rng_tensors
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext, init_distributed
from lorakit.train.loop import Run, TrainingAborted, fit
from lorakit.train.many.batch import job_losses, merge_batches
from lorakit.train.many.jobs import check_jobs, job_configs, read_jobs
from lorakit.train.many.model import SharedModel
from lorakit.train.many.steps import Job, finish, start
from lorakit.train.memory import enable_checkpointing
from lorakit.train.objectives import to_device
from lorakit.train.outputs import PeakMemory, write_json
from lorakit.train.runner import head_names, load_for, setup_run

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
    check_max_rows(max_rows)  # a bad value is an error before any model is loaded
    if ctx.world_size != 1:
        raise LorakitError("train-many runs in one process (its jobs share the model); run it without torchrun")
    memory = PeakMemory(ctx.device)
    base = _SharedBase(ctx, memory)
    entries = [Job(i, name, cfg) for i, (name, cfg) in enumerate(configs.items())]
    for job in entries:
        memory.phase("load")
        _guard(job, partial(base.setup, job))
    live = [j for j in entries if j.status == "running"]
    if live:
        sm = base.shared
        sm.assemble()
        if first.checkpointing:  # recomputed blocks must replay each job's rows and dropout stream
            enable_checkpointing(sm.model, sm.rows.checkpoint_contexts)
        memory.phase("train")
        # "auto" is decided from the resolved configs: a job's batch size may be its task's default.
        max_rows = resolve_max_rows(max_rows, ctx.device, [j.p.cfg for j in live])
        for job in live:
            _guard(job, lambda job=job: start(job, sm, ctx, progress))
        try:
            _train([j for j in live if j.run is not None], sm, ctx, memory, wall, max_rows)
        finally:
            for job in live:
                if job.run is not None:
                    job.run.finish()  # closes its progress bar
                    if job.run.tracker is not None:
                        job.run.tracker.close()
    results = {j.name: j.metrics if j.metrics is not None else _unfinished(j) for j in entries}
    write_json(Path(out) / SUMMARY_FILE, {"jobs": results, "wall_seconds": time.perf_counter() - wall,
                                          "peak_memory_mb": memory.overall(), "device": str(ctx.device)})
    return results


def _guard(job: Job, action: Callable[[], Any]) -> None:
    """Run one job's setup; a user-level error ends that job alone, with its message."""
    try:
        action()
    except JOB_ERRORS as exc:
        job.status, job.error = "failed", _report(job.name, exc)


def _run_guard(run: Run, action: Callable[[], Any]) -> None:
    """:func:`~lorakit.train.loop.fit`'s guard: a user-level error in a step ends that job alone."""
    try:
        action()
    except JOB_ERRORS as exc:
        run.status, run.error = "failed", _report(run.name, exc)


def _report(name: str, exc: BaseException) -> str:
    """The first line of the error (printed, naming the job)."""
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    print(f"error: job {name!r}: {message}", file=sys.stderr)
    return message


def _unfinished(job: Job) -> dict[str, Any]:
    """The summary entry of a job without metrics: its error, or where it stopped."""
    error = job.error or (job.run.error if job.run is not None else None)
    if error:
        return {"error": error}
    return {"stopped": job.outcome, "step": job.run.state.step if job.run is not None else 0}


class _SharedBase:
    """The one base model of a train-many run, loaded by the first job and lent to every other one
    (with a fresh classification head each, initialised as ``lorakit train``'s load would)."""

    def __init__(self, ctx: DistContext, memory: PeakMemory) -> None:
        self.ctx, self.memory = ctx, memory
        self.loaded: Any = None  # lorakit.models.LoadedModel of the first job
        self.task: str | None = None
        self.shared: SharedModel | None = None
        self.heads: dict[str, Any] = {}  # module path -> the job being set up's own head

    def load(self, cfg: TrainConfig, train: Any, ctx: DistContext) -> Any:
        """:func:`~lorakit.train.runner.setup_run`'s ``load``: the shared model (the first job loads it)."""
        if self.loaded is None:
            self.loaded, self.task = load_for(cfg, train, ctx), cfg.task
            model = self.loaded.model
            self.heads = {h: model.get_submodule(h) for h in head_names(model)} if cfg.task == "classify" else {}
            self.shared = SharedModel(model)
            return self.loaded
        if cfg.task != self.task:
            raise LorakitError(f"its data set's task is {cfg.task}, the first job's {self.task}; "
                               f"one train-many run trains one task")
        self.heads = {}
        if cfg.task == "classify":  # a fresh load initialises the head exactly as lorakit train's does
            fresh = load_for(cfg, train, ctx).model
            self.heads = {h: fresh.get_submodule(h).to(ctx.device) for h in head_names(fresh)}
        return self.loaded

    def install_heads(self, p: Any) -> None:
        """``before_eval``: the job's own head in the model, for its base evaluation and training."""
        from lorakit.core.inject import replace_submodule

        for path, head in self.heads.items():
            replace_submodule(p.loaded.model, path, head)

    def setup(self, job: Job) -> None:
        """``lorakit train``'s preparation of ``job`` over the shared base; its layers are then taken aside
        (the base is plain again for the next job) with the RNG state its training starts from."""
        from lorakit.core.inject import lora_layers

        try:
            setup = setup_run(job.cfg, self.ctx, self.memory, load=self.load, before_eval=self.install_heads,
                              progress=False)
        finally:
            if self.shared is not None and lora_layers(self.shared.model):
                self.shared.harvest(job.number, tuple(self.heads))
        self.shared.rows.rng[job.number] = rng_tensors()
        job.p, job.base_metrics, job.summary, job.status = setup.p, setup.base_metrics, setup.summary, "running"


def _train(jobs: list[Job], sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float,
           max_rows: int | None) -> None:
    """:func:`~lorakit.train.loop.fit` over the jobs' runs with the mixed forward: every running job's
    micro-batches in one forward and one backward per micro-step (in forwards of at most ``max_rows``
    rows when that is set); a done job leaves the batch with its outputs written."""
    from lorakit.data.batches import resolve_pad_id

    pad_id = resolve_pad_id(jobs[0].p.loaded.tokenizer)
    by_run = {id(j.run): j for j in jobs}
    sm.model.train()
    fit([j.run for j in jobs], partial(_mixed_step, by_run, sm, ctx, pad_id, max_rows), guard=_run_guard,
        on_done=lambda run: finish(by_run[id(run)], sm, ctx, memory, wall))


def _mixed_step(by_run: dict[int, Job], sm: SharedModel, ctx: DistContext, pad_id: int, max_rows: int | None,
                runs: list[Run]) -> None:
    """One optimizer step's forwards and backwards of every running job, micro-step by micro-step."""
    active = [by_run[id(r)] for r in runs]
    for k in range(max(len(j.run.micro) for j in active)):
        parts = [(j, j.run.micro[k]) for j in active if k < len(j.run.micro)]
        # One mixed batch, or several when capped; one per job once the base is seen to draw.
        for chunk in row_chunks(parts, 1 if sm.base_draws else max_rows):
            _forward_backward(chunk, sm, ctx, pad_id)


def resolve_max_rows(value: int | str | None, device: torch.device, configs: Iterable[TrainConfig]) -> int | None:
    """Rows per mixed forward: a positive number; ``"all"`` (None: every job's micro-batch in one
    forward); ``"auto"`` (the default): ``"all"`` on a GPU, whose throughput grows with the batch, and
    the largest job's micro-batch on a CPU, where one big forward is no faster per row (measured:
    benchmarks/README.md "train-many") but holds every job's activations and pads every job to the
    longest. ``configs`` are resolved (:meth:`TrainConfig.resolve`: their batch sizes are numbers).
    Raises LorakitError for anything else (see :func:`check_max_rows`)."""
    check_max_rows(value)
    if value is None or value == "auto":
        if device.type == "cuda":
            return None
        return max(cfg.batch_size // max(cfg.grad_accum, 1) for cfg in configs)
    return None if value == "all" else value


def check_max_rows(value: int | str | None) -> None:
    """Raise LorakitError unless ``value`` is a positive number of rows, ``"auto"``, ``"all"`` or None."""
    if value is None or value in ("auto", "all"):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LorakitError(f"max_rows must be a positive number of rows, 'auto' or 'all', got {value!r}")


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
    """One mixed forward of ``parts``, each job's loss normalised by its own terms, one backward.

    One job's rows run in that job's RNG stream (all their dropout is the solo run's). Several jobs'
    rows run in one forward only while the base draws no random numbers: the first mixed forward in
    which torch's RNG state moved (the base's own dropout, one mask over every job's rows) is thrown
    away unused, the jobs' streams are put back, and from then on each job's rows get their own forward.
    """
    if len(parts) > 1:
        before, streams = rng_tensors(), dict(sm.rows.rng)  # stream() replaces states, never mutates them
        losses = _losses(parts, sm, ctx, pad_id)
        if not _same_rng(before, rng_tensors()):
            sm.base_draws, sm.rows.rng = True, streams
            set_rng_tensors(before)
            for part in parts:
                _forward_backward([part], sm, ctx, pad_id)
            return
    else:
        with sm.rows.running(parts[0][0].number):
            losses = _losses(parts, sm, ctx, pad_id)
    total = None
    for (job, b), loss in zip(parts, losses, strict=True):
        loss = loss / max(job.run.terms, 1.0)
        job.run.add(loss, b)
        if torch.isfinite(loss):  # a diverged job's NaN must not reach the others' gradients
            total = loss if total is None else total + loss
    if total is not None and total.requires_grad:
        total.backward()


def _losses(parts: list[tuple[Job, dict]], sm: SharedModel, ctx: DistContext, pad_id: int) -> list[torch.Tensor]:
    """Each job's summed loss from one forward of its rows merged with the others' (in job order)."""
    task = parts[0][0].p.cfg.task
    batch, spans = merge_batches([(j.number, to_device(b, ctx.device)) for j, b in parts], pad_id)
    sm.rows.set(spans)
    try:
        return job_losses(task, sm.model, batch, spans,
                          {j.number: j.p.train.num_labels or 0 for j, _ in parts} if task == "classify" else {},
                          {j.number: j.p.cfg.label_smoothing for j, _ in parts})
    finally:
        sm.rows.set([])


def _same_rng(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two :func:`rng_tensors` snapshots are the same states (nothing was drawn in between)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
