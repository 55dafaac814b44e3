"""Fine-tune a LoRA adapter (or the full / BitFit baselines) on a data set.

Examples::

    lorakit train minilm sst2 --targets qv --rank 8
    lorakit train smollm2 e2e --max-steps 300 --eval-limit 100
    lorakit train minilm my.jsonl --skip-bad-rows     # 10% held out as dev; bad rows skipped and listed
    lorakit train smollm2 chat.jsonl --packing --report-to tensorboard
    lorakit train --config run.toml --seed 1          # options on the command line win over the file
    torchrun --nproc-per-node 2 -m lorakit train minilm sst2

Every option is a field of ``lorakit.train.config.TrainConfig``; a config file (TOML or YAML) uses the same
names (``max_steps`` or ``max-steps``). The run folder (``--out``) receives ``adapter/`` (PEFT layout;
``model/`` for --full/--bitfit), ``metrics.json``, ``log.jsonl``, ``loss.png`` and a resumable
``checkpoint/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lorakit.cli.options import add_config_options, one_line_errors
from lorakit.train.config import TrainConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field (defaults are SUPPRESSed so a config file can set them)."""
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML or YAML file of options (same names as below); command-line options win")
    add_config_options(parser, [f.name for f in dataclasses.fields(TrainConfig)], suppress=True)
    one_line_errors(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig given by ``--config`` (if any) with the command line's options on top."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}
    if getattr(args, "config", None):
        return load_config(args.config, given)
    return TrainConfig.from_mapping(given, source="options")


def run(args: argparse.Namespace) -> int:
    """Train, then print where the results are."""
    from lorakit.train.loop import TrainingAborted
    from lorakit.train.runner import run_training

    cfg = config_from_args(args)
    try:
        metrics = run_training(cfg)
    except TrainingAborted as exc:  # diverged: the last checkpoint is still there, say so in one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if metrics.get("stopped") == "interrupted":
        print(f"interrupted at step {metrics['step']}: checkpoint written; continue with --resume", file=sys.stderr)
        return 0
    if "test" not in metrics:  # a non-main process of a distributed run
        return 0
    _print_summary(metrics)
    return 0


def _print_summary(m: dict[str, Any]) -> None:
    test, base = m["test"], m.get("base") or {}
    keys = [k for k in ("accuracy", "macro_f1", "mcc", "bleu", "rouge_l", "nist", "chrf") if k in test]
    out = m["config"]["out"]
    cfg = m["config"]
    steps = f"{m['step']} steps"
    if not m.get("early_stopped") and (cfg.get("max_steps") is None or m["step"] < cfg["max_steps"]):
        steps += f" ({cfg['epochs']:g} epochs of batch {cfg['batch_size']}; --epochs or --max-steps to change)"
    print(f"trained {m['method']} on {m['data']} for {steps} in {m['train_seconds']:.0f}s "
          f"({m['tokens_per_second']:.0f} tokens/s); trainable {m['trainable_params']:,} of "
          f"{m['total_params']:,} ({m['trainable_percent']:.3f}%)")
    print(f"  evaluated on {_split_line(m.get('data_splits'), m['test_split'])}")
    for k in keys:
        before = f"{base[k]:.4f}" if isinstance(base.get(k), float) else "-"
        print(f"  {m['test_split']} {k:<9} before {before:>8}   after {test[k]:.4f}")
    if m.get("early_stopped"):
        print(f"  stopped early at step {m['step']} (no improvement for --early-stopping-patience "
              f"evaluations); the adapter is the best one, from step {m['best_step']}")
    where = m.get("adapter_dir") or m.get("model_dir")
    print(f"saved {where}, {out}/metrics.json, {out}/loss.png")


def _split_line(report: dict[str, Any] | None, split: str) -> str:
    """Where the reported metrics come from, in words (and a warning when they are not held out)."""
    if not report:
        return split
    test = report["test"]
    source = Path(test["source"]).name if test["source"] else test["source"]
    if test["how"] == "held out":
        line = f"{split} ({test['examples']:,} examples held out of {source}, never trained on)"
        if report["inputs_also_in_train"]["test"]:
            line += f"; {report['inputs_also_in_train']['test']} of them repeat a training text"
    elif test["how"] == "train":
        line = f"{split} = the training rows ({test['examples']:,} examples)"
    else:
        line = f"{split} ({test['examples']:,} examples from {source})"
    if not report["held_out"]:
        line += "\n  WARNING: these metrics are on rows that were trained on (--eval-on-train-rows)"
    bad = report["bad_rows"]
    if bad["count"]:
        line += f"\n  skipped {bad['count']} bad row(s) (--skip-bad-rows), e.g. {bad['first'][0]}; all in metrics.json"
    return line
