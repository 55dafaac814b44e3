"""Evaluate a base model, or a base model with an adapter, on a data set split.

Examples::

    lorakit eval minilm sst2 --split dev                               # the "before" (untrained head)
    lorakit eval minilm sst2 --split dev --adapter runs/minilm-sst2/adapter
    lorakit eval smollm2 e2e --adapter runs/smollm2-e2e/adapter --limit 100 --json e2e.json

Classification reports accuracy, macro-F1 and MCC; generation decodes greedily (``--num-beams`` for
beam search) and reports BLEU, NIST, ROUGE-L and chrF with all references of each input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lorakit.cli.train import one_line_errors

TASK_OF_PEFT = {"SEQ_CLS": "classify", "CAUSAL_LM": "generate"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit eval``."""
    parser.add_argument("model", metavar="MODEL", help="model name (minilm, smollm2) or a local Hugging Face folder")
    parser.add_argument("data", metavar="DATA", help="data set: a recipe (sst2, trec, subj, mr, e2e) or a file")
    parser.add_argument("--adapter", metavar="DIR", help="adapter folder (PEFT layout); without it: the base model")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N examples (for generation: N inputs)")
    parser.add_argument("--json", metavar="FILE", help="also write the metrics to FILE as JSON")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per batch (default: 32)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens kept per classified text (default: 128)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam width for generation (default: 1, greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="generation length cap (default: 64)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the shared data sets")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0, help="seed of a fresh (untrained) classification head")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    one_line_errors(parser)


def _check(args: argparse.Namespace) -> None:
    for name in ("limit", "batch_size", "max_length", "num_beams", "max_new_tokens", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    """Load data, model (and adapter) and evaluate; returns the metrics with provenance."""
    import torch

    from lorakit.data import load_dataset
    from lorakit.models import load_model
    from lorakit.train.distributed import resolve_device
    from lorakit.train.evaluate import evaluate_dataset
    from lorakit.train.runner import DATA_SPLIT_SEED, seed_everything

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, args.split, args.data_root, seed=DATA_SPLIT_SEED, limit=args.limit)
    adapter = None
    if args.adapter:
        from lorakit.io import read_adapter

        adapter = read_adapter(args.adapter)
        task = TASK_OF_PEFT.get(adapter.config.task_type or "", dataset.task)
        if task != dataset.task:
            raise ValueError(f"the adapter was trained for {task} ({adapter.config.task_type}) but "
                             f"{args.data!r} is a {dataset.task} data set")
    seed_everything(args.seed)  # an untrained head is random: make "before" numbers reproducible
    loaded = load_model(args.model, dataset.task,
                        num_labels=dataset.num_labels if dataset.task == "classify" else None)
    model = loaded.model.to(resolve_device(args.device))
    if adapter is not None:
        from lorakit.io import load_adapter

        load_adapter(model, adapter)
    started = time.perf_counter()
    metrics = evaluate_dataset(model, loaded.tokenizer, dataset, batch_size=args.batch_size,
                               max_length=args.max_length, num_beams=args.num_beams,
                               max_new_tokens=args.max_new_tokens, progress=args.progress)
    return {"model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split,
            "task": dataset.task, "limit": args.limit, "num_beams": args.num_beams,
            "seconds": time.perf_counter() - started, "metrics": metrics}


def run(args: argparse.Namespace) -> int:
    """Print the metrics (and write them with --json)."""
    result = evaluate_command(args)
    metrics = result["metrics"]
    what = f"{args.model}" + (f" + {args.adapter}" if args.adapter else " (base)")
    print(f"{what} on {args.data} {args.split} ({metrics['examples']} examples, {result['seconds']:.0f}s)")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<10} {value:.4f}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0
