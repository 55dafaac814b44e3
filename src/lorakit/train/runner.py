"""One training run from a :class:`TrainConfig`: data and model in, adapter and metrics out.

The order of events (:func:`setup_run`, shared with train-many's jobs): seed → read the data → load
the model for the data set's task → evaluate the base (the "before") → make it trainable (LoRA /
full / BitFit); then :func:`train_loop` → reload the best weights → final evaluation → ``adapter/``
(or ``model/``), ``metrics.json``, ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lorakit.core.targeting import CLASSIFIER_HEADS
from lorakit.data.split_plan import SPLIT_SEED
from lorakit.errors import LorakitError
from lorakit.io.config import PEFT_TASK_TYPES
from lorakit.train.checkpoint import load_tensors_into
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext, init_distributed, shutdown_distributed
from lorakit.train.evaluate import evaluate_dataset, evaluate_loss
from lorakit.train.loop import LoopResult, Selection, train_loop
from lorakit.train.memory import apply_memory_options, resolve_memory_options
from lorakit.train.outputs import METRICS_FILE, PLOT_FILE, PeakMemory, folder_bytes, plot_loss, write_json
from lorakit.train.run_data import run_splits, training_rows
from lorakit.train.trackers import open_trackers

DATA_SPLIT_SEED = SPLIT_SEED  # seeded splits stay fixed when --seed changes (lorakit eval uses it too)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) alike."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def head_names(model: nn.Module) -> tuple[str, ...]:
    """The classification head's module name(s) among the model's direct children."""
    children = dict(model.named_children())
    return tuple(n for n in CLASSIFIER_HEADS if n in children)


def make_trainable(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """Apply the method: inject LoRA (head in modules_to_save), unfreeze all, or biases + head."""
    heads = head_names(model) if cfg.task == "classify" else ()
    if cfg.method == "lora":
        from lorakit.core import inject

        targets = inject(model, cfg.lora_spec(modules_to_save=heads))
        return {"lora_modules": len(targets), **apply_memory_options(model, cfg)}
    for name, param in model.named_parameters():
        if cfg.method == "full":
            param.requires_grad = True
        else:  # BitFit (Ben Zaken et al. 2022): biases, plus the task head that starts from scratch
            param.requires_grad = name.endswith("bias") or name.split(".")[0] in heads
    return apply_memory_options(model, cfg)


@dataclass
class Prepared:
    """Everything a run needs, loaded once."""

    cfg: TrainConfig  # resolved
    train: Any  # Dataset of the train split
    eval_set: Any  # Dataset picking the best checkpoint
    test_set: Any  # Dataset of the final report
    loaded: Any  # lorakit.models.LoadedModel
    collate: Any
    splits: dict[str, Any] | None = None  # how train/eval/test were made (split_plan report)
    train_rows: Any = None  # what the loop batches: the train examples, or packed rows (run_data.py)
    train_collate: Any = None
    packing: dict[str, Any] | None = None


def load_for(cfg: TrainConfig, train: Any, ctx: DistContext) -> Any:
    """The run's model (``LoadedModel``) for its resolved task; a classifier gets the data set's labels."""
    from lorakit.models import load_model
    from lorakit.models.precision import load_dtype

    return load_model(cfg.model, cfg.task, num_labels=train.num_labels if cfg.task == "classify" else None,
                      dtype=load_dtype(cfg.base_dtype, ctx.device))


def prepare(cfg: TrainConfig, ctx: DistContext, load: Callable[..., Any] = load_for) -> Prepared:
    """Seed, read the splits, resolve the task's defaults and load the model on ``ctx.device``
    (``load(cfg, train_split, ctx)``; train-many passes one that shares a single base)."""
    from lorakit.data.batches import CausalLMCollator, ClassificationCollator

    if cfg.model is None or cfg.data is None:
        raise LorakitError("give a MODEL and a DATA set (on the command line or as model/data in --config)")
    seed_everything(cfg.seed)
    splits = run_splits(cfg, announce=ctx.is_main)
    train, eval_set, test_set = splits.train, splits.eval, splits.test
    cfg = dataclasses.replace(cfg.resolve(train.task, cfg.model, cfg.data), test_split=splits.report["test"]["split"])
    cfg = resolve_memory_options(cfg, ctx.device)
    loaded = load(cfg, train, ctx)
    loaded.model.to(ctx.device)
    if cfg.task == "classify":
        collate = ClassificationCollator(loaded.tokenizer, cfg.max_length, pad_multiple=cfg.pad_multiple)
    else:
        collate = CausalLMCollator(loaded.tokenizer, cfg.max_length, pad_multiple=cfg.pad_multiple)
    rows, train_collate, packing = training_rows(cfg, train.examples, collate, loaded.model)
    return Prepared(cfg, train, eval_set, test_set, loaded, collate, splits.report, rows, train_collate, packing)


def final_eval(p: Prepared, model: nn.Module, progress: bool) -> dict[str, Any]:
    """The report's evaluation on the test split (generation for generate tasks)."""
    c = p.cfg
    return evaluate_dataset(model, p.loaded.tokenizer, p.test_set, collate=p.collate, batch_size=c.eval_batch_size,
                            num_beams=c.num_beams, max_new_tokens=c.max_new_tokens, length_penalty=c.length_penalty,
                            no_repeat_ngram_size=c.no_repeat_ngram_size, progress=progress)


def selection_eval(p: Prepared):
    """(evaluate function, selection rule) used during training to pick the best weights."""
    c = p.cfg
    if c.task == "classify":
        def run(model: nn.Module) -> dict[str, float]:
            return evaluate_dataset(model, p.loaded.tokenizer, p.eval_set, collate=p.collate,
                                    batch_size=c.eval_batch_size)
        return run, Selection("accuracy", True)

    def run_loss(model: nn.Module) -> dict[str, float]:
        return evaluate_loss(model, p.eval_set.examples, p.collate, "generate", c.eval_batch_size)
    return run_loss, Selection("loss", False)


def total_steps_for(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps of the run: ``epochs`` over the data, capped by ``max_steps``."""
    steps = max(1, math.ceil(cfg.epochs * n_train / cfg.batch_size))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training as configured; returns the metrics written to ``metrics.json``.

    Under torchrun every process calls this; only rank 0 evaluates and writes files. A SIGTERM
    returns early with ``{"stopped": "interrupted", ...}`` after writing a checkpoint.
    """
    wall = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    trackers: list[Any] = []
    try:
        return _run(cfg, ctx, wall, trackers)
    finally:
        for tracker in trackers:
            tracker.close()
        shutdown_distributed(ctx)


@dataclass
class Setup:
    """A run made ready to train: its pieces, the base's evaluation and what was made trainable."""

    p: Prepared
    base_metrics: dict[str, Any] | None  # the base's test metrics (None without base_eval or off the main process)
    summary: dict[str, Any]  # parameter counts and the memory options that ran, for metrics.json


def setup_run(cfg: TrainConfig, ctx: DistContext, memory: PeakMemory, *, load: Callable[..., Any] = load_for,
              before_eval: Callable[[Prepared], None] | None = None, progress: bool = True) -> Setup:
    """``lorakit train``'s preparation of one run, shared by train-many's jobs: :func:`prepare` (with
    ``load``), ``train_config.json``, the base evaluation (kept from before an interruption), then
    ``seed + 1`` and :func:`make_trainable`. ``before_eval(p)`` runs between loading and the base
    evaluation (train-many puts the job's own head in place)."""
    p = prepare(cfg, ctx, load)
    cfg, model, out = p.cfg, p.loaded.model, Path(p.cfg.out)
    if before_eval is not None:
        before_eval(p)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", cfg.to_json())
    base_metrics, base_file = None, out / "base_metrics.json"
    memory.phase("base_eval")
    if cfg.base_eval and ctx.is_main:
        if cfg.resume and base_file.is_file():  # evaluated before the interruption: same base, same result
            base_metrics = json.loads(base_file.read_text())
        else:
            base_metrics = final_eval(p, model, progress and cfg.progress)
            write_json(base_file, base_metrics)
    ctx.barrier()
    # Re-seed so the adapter's initialisation does not depend on whether the base was evaluated.
    seed_everything(cfg.seed + 1)
    extra = make_trainable(model, cfg)
    from lorakit.core.report import parameter_report

    report = parameter_report(model)
    return Setup(p, base_metrics, {"trainable_params": report.trainable, "total_params": report.total,
                                   "trainable_percent": report.percent, "lora_params": report.lora, **extra})


def _run(cfg: TrainConfig, ctx: DistContext, wall: float, trackers: list[Any]) -> dict[str, Any]:
    memory = PeakMemory(ctx.device)  # each phase's own peak: evaluation must not set the run's peak
    memory.phase("load")
    setup = setup_run(cfg, ctx, memory)
    p, base_metrics = setup.p, setup.base_metrics
    cfg, model, out = p.cfg, p.loaded.model, Path(p.cfg.out)
    show = cfg.progress and ctx.is_main
    total_steps = total_steps_for(cfg, len(p.train_rows))
    evaluate, selection = selection_eval(p)
    memory.phase("train")
    tracker = open_trackers(cfg.report_to, out, out.name, cfg.to_json()) if ctx.is_main else None
    trackers += [tracker] if tracker is not None else []
    result: LoopResult = train_loop(model, p.train_rows, p.train_collate, cfg, total_steps, ctx=ctx, out_dir=out,
                                    evaluate=evaluate, selection=selection, resume=cfg.resume, tracker=tracker)
    memory.phase("final_eval")
    summary: dict[str, Any] = {"stopped": result.stopped, "step": result.state.step, "total_steps": total_steps,
                               **setup.summary}
    if result.stopped != "done" or not ctx.is_main:
        return summary
    return finish_run(p, model, result, summary, base_metrics, selection, tracker, show,
                      lambda: {"wall_seconds": time.perf_counter() - wall, "peak_memory_mb": memory.overall(),
                               "peak_memory_phases_mb": memory.peaks, "device": str(ctx.device),
                               "processes": ctx.world_size})


def finish_run(p: Prepared, model: nn.Module, result: LoopResult, summary: dict[str, Any],
               base_metrics: dict[str, Any] | None, selection: Selection, tracker: Any, show: bool,
               process: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """After a finished loop: reload the best weights, final evaluation, ``adapter/``, ``metrics.json``,
    ``loss.png`` (``process()``: wall time, memory and device figures of the run's process, taken last)."""
    cfg, out = p.cfg, Path(p.cfg.out)
    if result.best_path is not None:
        load_tensors_into(model, result.best_path)
    if cfg.task == "classify" and cfg.test_split == cfg.eval_split and result.state.best_eval:
        test_metrics = result.state.best_eval  # the same weights on the same split: no need to rerun
    else:
        test_metrics = final_eval(p, model, show)
    saved = _save_model(p, model, out, result.state.step)
    metrics = {
        "model": cfg.model, "data": cfg.data, "task": cfg.task, "method": cfg.method,
        "test_split": cfg.test_split, "test": test_metrics, "base": base_metrics,
        "best_step": result.state.best_step, "best_eval": {selection.metric: result.state.best_metric},
        "last_eval": result.state.last_eval, **summary,
        "skipped_steps": result.state.skipped_steps, "tokens_seen": result.state.tokens_seen,
        "tokens_per_second": result.tokens_per_second, "train_seconds": result.state.train_seconds,
        **process(), **saved,
        "data_splits": p.splits, "packing": p.packing, "early_stopped": result.early_stopped,
        "config": cfg.to_json(),
    }
    if tracker is not None:
        tracker.log({"step": result.state.step, "test": test_metrics})
    write_json(out / METRICS_FILE, metrics)
    plot_loss(out / "log.jsonl", out / PLOT_FILE, selection.metric, cfg.label_smoothing)
    return metrics


def _save_model(p: Prepared, model: nn.Module, out: Path, steps: int) -> dict[str, Any]:
    """Write ``adapter/`` (LoRA, PEFT layout) or ``model/`` (full, BitFit: a whole HF folder)."""
    cfg = p.cfg
    if cfg.method == "lora":
        from lorakit.io import save_adapter

        path = save_adapter(model, out / "adapter", task_type=PEFT_TASK_TYPES[cfg.task], base_model=p.loaded.name,
                            extra={"trained_with": {"data": cfg.data, "steps": steps, "seed": cfg.seed}})
        weights = path / "adapter_model.safetensors"
        return {"adapter_dir": str(path), "adapter_bytes": folder_bytes(weights)}
    path = out / "model"
    model.save_pretrained(path, safe_serialization=True)
    p.loaded.tokenizer.save_pretrained(path)
    return {"model_dir": str(path), "model_bytes": folder_bytes(path / "model.safetensors")}
