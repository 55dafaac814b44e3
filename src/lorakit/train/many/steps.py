"""train-many's jobs: each one a :class:`~lorakit.train.loop.Run` over the model viewed as that job alone.

The forward/backward is shared (:func:`lorakit.train.many.runner._train`); everything else is the
run's own, as in ``lorakit train``: clipping, AdamW, logging, evaluation with best-adapter selection,
checkpoints (holding the job's own RNG stream) and, once the job is done, its outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lorakit.train.checkpoint import rng_tensors
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext
from lorakit.train.loop import Run
from lorakit.train.many.model import SharedModel
from lorakit.train.outputs import PeakMemory
from lorakit.train.runner import Prepared, finish_run, selection_eval, total_steps_for


@dataclass
class Job:
    """One adapter of a train-many run: its setup, then its :class:`Run`."""

    number: int
    name: str
    cfg: TrainConfig
    status: str = "setup"  # setup, running (then the run's status), failed
    error: str | None = None
    p: Prepared | None = None
    base_metrics: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    run: Run | None = None
    metrics: dict[str, Any] | None = None

    @property
    def outcome(self) -> str:
        """The job's status: its run's once it has one."""
        return self.run.status if self.run is not None and self.status != "failed" else self.status


def start(job: Job, sm: SharedModel, ctx: DistContext, progress: bool) -> None:
    """The job's :class:`Run` (optimizer, schedule, stream; with resume, its checkpoint) on its view."""
    from lorakit.train.trackers import open_trackers

    p, cfg, number = job.p, job.p.cfg, job.number
    evaluate, selection = selection_eval(p)
    tracker = open_trackers(cfg.report_to, cfg.out, job.name, cfg.to_json())

    def restored() -> None:  # the job's dropout stream continues where it stopped
        sm.rows.rng[number] = rng_tensors()

    try:
        job.run = Run(job.name, cfg, p.train_rows, p.train_collate,
                      total_steps_for(cfg, len(p.train_rows)), ctx=ctx, view=partial(sm.view, number),
                      out_dir=cfg.out, evaluate=evaluate, selection=selection, resume=cfg.resume, tracker=tracker,
                      progress=progress, bar_position=number, rng_states=lambda: [sm.rows.rng[number]], rng_restored=restored)
    except BaseException:
        if tracker is not None:
            tracker.close()
        raise


def finish(job: Job, sm: SharedModel, ctx: DistContext, memory: PeakMemory, wall: float) -> None:
    """The job leaves the batch: best weights, final evaluation, adapter/, metrics.json, loss.png."""
    run = job.run
    result = run.finish()
    summary = {"stopped": "done", "step": run.state.step, "total_steps": run.total_steps, **job.summary}
    with sm.view(job.number) as model:
        job.metrics = finish_run(job.p, model, result, summary, job.base_metrics, run.selection, run.tracker, False,
                                 lambda: {"wall_seconds": time.perf_counter() - wall,
                                          "peak_memory_mb": memory.overall(), "peak_memory_phases_mb": memory.peaks,
                                          "device": str(ctx.device), "processes": 1,
                                          "train_many": {"jobs": len(sm.jobs)}})
    run.optimizer.state.clear()  # its AdamW moments are no longer needed
