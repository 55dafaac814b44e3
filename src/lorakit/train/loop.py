"""The training loop: one :class:`Run` per adapter and one driver, :func:`fit`, for every loop.

``lorakit train`` fits one run with the data-parallel forward (:func:`train_loop`); ``lorakit
train-many`` fits one run per job with the mixed forward (:mod:`lorakit.train.many.runner`). Each
optimizer step of a run takes the next ``batch_size`` examples of its seeded stream, gives each
process its rows, splits them into ``grad_accum`` micro-batches and divides every summed loss by the
global number of loss terms before ``backward`` (see :mod:`lorakit.train.objectives`), so the update
does not depend on how the batch was split. Gradients are summed over processes by
DistributedDataParallel during the last micro-batch's backward (see :mod:`lorakit.train.distributed`);
then clip, AdamW with the rate ``lr_at(step)``. A non-finite loss or gradient skips the step
(counted; ``max_bad_steps`` in a row abort). Evaluation, best-adapter selection and checkpoints happen
at fixed step intervals; SIGTERM finishes the current step, writes a checkpoint and returns cleanly.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.core import lora_layers
from lorakit.errors import LorakitError
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
        raise LorakitError("nothing to train: no parameter requires a gradient")
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


def _alone(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """The view of a run that owns its model (``lorakit train``): the model itself."""

    @contextmanager
    def view() -> Iterator[nn.Module]:
        yield model

    return view()


class Run:
    """One adapter being trained: its optimizer, schedule, data stream, counters, tracker, best adapter
    and checkpoint. :func:`fit` calls :meth:`begin_step`, feeds :meth:`add` from the forward, then
    :meth:`end_step` (update, log, :meth:`maybe_eval`, :meth:`checkpoint`); :meth:`finish` ends it.

    ``view()`` shows the model as this run alone has it (train-many: one job's layers in the shared
    base). ``rng_states()`` gives the torch RNG states its checkpoint holds (every process's, by
    default); ``rng_restored()`` is called after a resumed checkpoint set torch's RNG (train-many
    takes the job's stream from it). ``status``: running, done, interrupted or failed (``error``).
    """

    def __init__(self, name: str, cfg: TrainConfig, examples: Sequence[Any],
                 collate: Callable[[list[Any]], dict[str, torch.Tensor]], total_steps: int, *,
                 ctx: DistContext, view: Callable[[], AbstractContextManager[nn.Module]],
                 out_dir: str | Path | None = None, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 selection: Selection = Selection("loss", False), resume: bool = False,
                 tracker: Trackers | None = None, progress: bool = True, bar_position: int | None = None,
                 rng_states: Callable[[], list[dict[str, torch.Tensor]]] | None = None,
                 rng_restored: Callable[[], None] | None = None) -> None:
        world_rows = ctx.world_size * cfg.grad_accum
        if cfg.batch_size % world_rows:
            raise LorakitError(f"batch_size {cfg.batch_size} must be divisible by processes × grad_accum = {world_rows}")
        self.name, self.cfg, self.examples, self.collate, self.total_steps = name, cfg, examples, collate, total_steps
        self.ctx, self.view, self.evaluate, self.selection, self.tracker = ctx, view, evaluate, selection, tracker
        self.out = Path(out_dir) if out_dir is not None else None
        self._rng_states = rng_states or (lambda: ctx.gather_rng(rng_tensors()))
        self.status, self.error, self.early_stopped = "running", None, False
        if self.out is not None and ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        with view() as model:
            self.optimizer = make_optimizer(model, cfg)
            self.state = self._restore(model, resume, rng_restored)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.schedule = Schedule(cfg.lr, total_steps, round(cfg.warmup_ratio * total_steps), cfg.decay)
        self.eval_every, self.ckpt_every = intervals(cfg, total_steps)
        self.best_path = self.out / BEST / "trainable.safetensors" if self.out is not None else None
        lengths = [example_length(e) for e in examples] if cfg.group_by_length else None
        self.stream = ExampleStream(len(examples), cfg.seed, cfg.batch_size, lengths)
        self.bar = _progress(cfg, ctx, total_steps, self.state.step, name, bar_position) if progress else None
        self.seconds_before = self.state.train_seconds
        self.started, self.tokens_here, self.eval_seconds, self.window = time.perf_counter(), 0, 0.0, []
        # The step in progress: its micro-batches, its global loss terms, what the forward added up.
        self.micro: list[dict[str, torch.Tensor]] = []
        self.terms, self.loss_sum, self.tokens = 0.0, torch.zeros((), dtype=torch.float64), 0

    def _restore(self, model: nn.Module, resume: bool, rng_restored: Callable[[], None] | None) -> TrainState:
        """The checkpoint in the output folder (with ``resume``), else a fresh start with no stale log or best."""
        out, ctx = self.out, self.ctx
        found = find_checkpoint(out) if (resume and out is not None) else None
        if found is not None:
            state = load_checkpoint(found, model, self.optimizer, ctx.rank)
            if rng_restored is not None:
                rng_restored()
            if ctx.is_main:
                truncate_log(out / LOG_FILE, state.step)
            return state
        if out is not None and ctx.is_main:
            if resume:
                print(f"note: no checkpoint in {out}; starting from step 0", file=sys.stderr)
            (out / LOG_FILE).unlink(missing_ok=True)
            shutil.rmtree(out / BEST, ignore_errors=True)  # a stale best of an earlier run must never be loaded
        return TrainState()

    @property
    def complete(self) -> bool:
        """Whether every step is taken (a resumed run may start complete)."""
        return self.state.step >= self.total_steps

    def begin_step(self, stop: bool) -> bool:
        """Draw this process's rows of the next batch as micro-batches and set the rate; returns whether
        every process agrees to stop (SIGTERM): the run is then checkpointed and ``interrupted``."""
        cfg, ctx = self.cfg, self.ctx
        rows = ctx.shard(self.stream.take(self.state.examples_seen, cfg.batch_size))
        size = len(rows) // cfg.grad_accum
        self.micro = [self.collate([self.examples[i] for i in rows[k * size:(k + 1) * size]])
                      for k in range(cfg.grad_accum)]
        head = torch.tensor([sum(loss_terms(cfg.task, b) for b in self.micro), float(stop)],
                            dtype=torch.float64, device=ctx.device)
        self.terms, stop_now = ctx.all_reduce_(head).tolist()
        if stop_now:  # every process agrees, since the flags were summed
            self.checkpoint()
            self.status = "interrupted"
            return True
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.state.step) * group.get("lr_scale", 1.0)
        self.loss_sum, self.tokens = torch.zeros((), dtype=torch.float64), 0
        return False

    def add(self, loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Count one micro-batch's loss (already divided by :attr:`terms`) and its tokens."""
        self.loss_sum += loss.detach().double().cpu()
        self.tokens += batch_tokens(batch)

    def end_step(self) -> None:
        """After the backward: clip, step (or skip a non-finite one), log, then evaluate, checkpoint
        and stop early when due; ``status`` becomes done after the last step."""
        cfg, ctx, state = self.cfg, self.ctx, self.state
        totals = ctx.all_reduce_(torch.tensor([self.loss_sum.item(), float(self.tokens)], dtype=torch.float64,
                                              device=ctx.device))
        step_loss, step_tokens = totals[0].item(), int(totals[1].item())
        norm = clip_gradients(self.params, cfg.max_grad_norm)
        try:
            self._update(step_loss, norm)
        finally:
            self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.examples_seen += cfg.batch_size
        state.tokens_seen += step_tokens
        self.tokens_here += step_tokens
        self.window.append(step_loss)
        elapsed = time.perf_counter() - self.started
        speed = self.tokens_here / max(elapsed - self.eval_seconds, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{speed:.0f}")
        if state.step % cfg.log_every == 0 or state.step == self.total_steps:
            finite = [v for v in self.window if math.isfinite(v)]
            self._log({"step": state.step, "epoch": round(self.stream.epoch_of(state.examples_seen), 4),
                       "loss": sum(finite) / max(len(finite), 1), "lr": self.schedule(state.step - 1),
                       "grad_norm": norm, "tokens_per_s": speed, "elapsed_s": self.seconds_before + elapsed,
                       "memory_mb": peak_memory_mb(ctx.device)})
            self.window = []
        evaluated = self.maybe_eval()
        checkpointed = state.step % self.ckpt_every == 0 or state.step == self.total_steps
        if checkpointed:
            self.checkpoint()
        if evaluated and patience_spent(cfg, state, ctx):
            if not checkpointed:
                self.checkpoint()
            self.early_stopped = True
        if self.complete or self.early_stopped:
            self.status = "done"

    def _update(self, step_loss: float, norm: float) -> None:
        """AdamW's step for a finite loss and gradient, else a counted skip; too many skips abort."""
        state = self.state
        if math.isfinite(step_loss) and math.isfinite(norm):
            self.optimizer.step()
            state.bad_in_a_row = 0
            # A finite loss and gradient can still yield a non-finite weight (an overflow in low
            # precision, an optimizer bug): stop before any checkpoint can hold it.
            if not all(bool(torch.isfinite(p).all()) for p in self.params):
                raise TrainingAborted(f"step {state.step + 1} produced non-finite weights; the last "
                                      f"checkpoint is intact: resume it with a lower --lr")
        else:
            state.bad_in_a_row += 1
            state.skipped_steps += 1
            self._log({"step": state.step + 1, "skipped": True, "loss": str(step_loss)})
        if state.bad_in_a_row >= self.cfg.max_bad_steps:
            raise TrainingAborted(f"{state.bad_in_a_row} non-finite losses in a row at step {state.step + 1}; "
                                  f"try a lower --lr")

    def _log(self, record: dict[str, Any]) -> None:
        append_log(self.out, self.ctx, record, self.tracker)

    def maybe_eval(self) -> bool:
        """Evaluate when due (main process) and keep the best adapter; returns whether it was due."""
        state = self.state
        if not ((self.eval_every and state.step % self.eval_every == 0) or state.step == self.total_steps):
            return False
        if self.evaluate is None:
            return True
        began = time.perf_counter()
        with self.view() as model:
            if self.ctx.is_main:
                metrics = self.evaluate(model)
                state.last_eval = metrics
                self._log({"step": state.step, "eval": metrics})
                value = metrics.get(self.selection.metric, float("nan"))
                if self.selection.better(value, state.best_metric):
                    state.best_metric, state.best_step, state.best_eval = value, state.step, metrics
                    state.evals_since_best = 0
                    if self.best_path is not None:
                        save_tensors_atomic(trainable_tensors(model), self.best_path)
                else:
                    state.evals_since_best += 1
            model.train()
        self.ctx.barrier()
        self.eval_seconds += time.perf_counter() - began
        return True

    def checkpoint(self) -> None:
        """The resumable checkpoint: weights, optimizer, counters and the RNG states."""
        self.state.train_seconds = self.seconds_before + time.perf_counter() - self.started
        rngs = self._rng_states()
        if self.out is not None and self.ctx.is_main:
            with self.view() as model:
                save_checkpoint(self.out / CHECKPOINT, model, self.optimizer, self.state, rngs)
        self.ctx.barrier()

    def finish(self) -> LoopResult:
        """How the run ended (the progress bar is closed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        seconds = time.perf_counter() - self.started
        has_best = self.best_path is not None and self.best_path.is_file()
        speed = self.tokens_here / max(seconds - self.eval_seconds, 1e-9)
        stopped = "interrupted" if self.status == "interrupted" else "done"
        return LoopResult(self.state, stopped, seconds, speed, self.best_path if has_best else None,
                          self.early_stopped)


def _direct(run: Run, action: Callable[[], Any]) -> None:
    """The default guard of :func:`fit`: an error ends the loop."""
    action()


def fit(runs: Sequence[Run], forward_backward: Callable[[list[Run]], None], *,
        guard: Callable[[Run, Callable[[], Any]], None] = _direct,
        on_done: Callable[[Run], None] | None = None) -> None:
    """Train every run to its end: per step, each running run's :meth:`~Run.begin_step`, one
    ``forward_backward(running)`` (the backward of every run's micro-batches, calling
    :meth:`~Run.add`), then each run's :meth:`~Run.end_step`.

    ``guard(run, action)`` runs each per-run action (train-many: an error fails that job alone);
    ``on_done(run)`` is called, guarded, once a run is done. SIGTERM stops every run after its step.
    """
    for run in runs:  # a resumed run may already be complete
        if run.status == "running" and run.complete:
            run.status = "done"
            if on_done is not None:
                guard(run, partial(on_done, run))
    with StopFlag() as stop:
        while True:
            active = [r for r in runs if r.status == "running"]
            if not active:
                return
            flag = stop.set  # one verdict for every run of this step
            for run in active:
                guard(run, partial(run.begin_step, flag))
            active = [r for r in active if r.status == "running"]
            if not active:
                return
            forward_backward(active)
            for run in active:
                guard(run, run.end_step)
                if run.status == "done" and on_done is not None:
                    guard(run, partial(on_done, run))


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
    run = Run("train", cfg, examples, collate, total_steps, ctx=ctx, view=partial(_alone, model), out_dir=out_dir,
              evaluate=evaluate, selection=selection, resume=resume, tracker=tracker)
    model.train()
    try:
        fit([run], partial(_data_parallel_step, ctx.wrap(model), ctx))
    finally:
        result = run.finish()
    return result


def _data_parallel_step(forward: nn.Module, ctx: DistContext, runs: list[Run]) -> None:
    """The one run's micro-batches through the model (DistributedDataParallel across processes)."""
    (run,) = runs
    for k, batch in enumerate(run.micro):
        batch = to_device(batch, ctx.device)
        # DDP all-reduces (bucketed, during backward) on the last micro-batch only, and *averages*
        # over processes: scaling by the world size turns that average into the global sum / terms.
        with ctx.sync_gradients(forward, k == len(run.micro) - 1):
            loss = summed_loss(run.cfg.task, forward, batch, run.cfg.label_smoothing) / max(run.terms, 1.0)
            (loss * ctx.world_size).backward()
        run.add(loss, batch)


def _progress(cfg: TrainConfig, ctx: DistContext, total: int, initial: int, desc: str, position: int | None):
    if not (cfg.progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", position=position, dynamic_ncols=True)
