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

from lorakit.cli.common import write_json
from lorakit.cli.options import add_config_options, add_json_option, check_config_options, one_line_errors
from lorakit.errors import LorakitError
from lorakit.io.config import TASK_OF_PEFT_TYPE
from lorakit.train.config import DEFAULT_MAX_LENGTH

# TrainConfig fields eval shares with train (cli/options.py): same names, formats and defaults.
SHARED = ("data_root", "max_length", "eval_limit", "eval_batch_size", "generation", "seed", "runtime", "base_dtype")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit eval``."""
    parser.add_argument("model", metavar="MODEL", help="model name (minilm, smollm2) or a local Hugging Face folder")
    parser.add_argument("data", metavar="DATA", help="data set: a recipe (sst2, trec, subj, mr, e2e) or a file")
    parser.add_argument("--adapter", metavar="DIR", help="adapter folder (PEFT layout); without it: the base model")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    add_json_option(parser, "the metrics")
    parser.add_argument("--predictions", metavar="FILE",
                        help="write every example's prediction to FILE, one JSON object per line (generation: "
                             "prompt, output, references; classification: text, label, predicted)")
    add_config_options(parser, SHARED, flags={"eval_limit": ("--limit",), "eval_batch_size": ("--batch-size",)},
                       helps={"max_length": "tokens kept per classified text (default: the adapter's training run's "
                                            "max_length when its train_config.json is next to it, else train's "
                                            "default for the task: classify 64, generate 192)",
                              "seed": "seed of a fresh (untrained) classification head"})
    one_line_errors(parser)


def max_length_for(adapter_dir: str | None, task: str) -> int:
    """The training run's ``max_length`` (``train_config.json`` beside the adapter), else train's default."""
    if adapter_dir:
        run_config = Path(adapter_dir).parent / "train_config.json"
        if run_config.is_file():
            value = json.loads(run_config.read_text(encoding="utf-8")).get("max_length")
            if isinstance(value, int) and value > 0:
                return value
    return DEFAULT_MAX_LENGTH[task]


def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    """Load data, model (and adapter) and evaluate; returns the metrics with provenance."""
    import torch

    from lorakit.data import load_dataset
    from lorakit.models import load_model
    from lorakit.models.precision import QUANTIZED, finish_base_precision, load_dtype, resolve_base_dtype
    from lorakit.train.distributed import resolve_device
    from lorakit.train.evaluate import evaluate_dataset
    from lorakit.train.runner import DATA_SPLIT_SEED, seed_everything

    check_config_options(args, SHARED)
    for option, path in (("--predictions", args.predictions), ("--json", args.json)):
        if path not in (None, "-") and Path(path).is_dir():  # say so now, not after a long evaluation
            raise LorakitError(f"{option} {path} is a folder; give a file name")
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, args.split, args.data_root, seed=DATA_SPLIT_SEED, limit=args.eval_limit)
    adapter = None
    if args.adapter:
        from lorakit.io import read_adapter

        adapter = read_adapter(args.adapter)
        task = TASK_OF_PEFT_TYPE.get(adapter.config.task_type or "", dataset.task)
        if task != dataset.task:
            raise LorakitError(f"the adapter was trained for {task} ({adapter.config.task_type}) but "
                               f"{args.data!r} is a {dataset.task} data set")
    device = resolve_device(args.device)
    base_dtype = resolve_base_dtype(args.base_dtype, device)
    if base_dtype in QUANTIZED:
        raise LorakitError(f"lorakit eval runs a float base (fp32, bf16, fp16), not {base_dtype}")
    seed_everything(args.seed)  # an untrained head is random: make "before" numbers reproducible
    loaded = load_model(args.model, dataset.task, dtype=load_dtype(base_dtype, device),
                        num_labels=dataset.num_labels if dataset.task == "classify" else None)
    model = loaded.model.to(device)
    if adapter is not None:
        from lorakit.io import load_adapter

        load_adapter(model, adapter, trainable=True)
    # The precision training evaluated in: adapter (and head) in fp32 over the base type, so that the
    # figure a training run reported is reproduced by this command over the same --base-dtype.
    finish_base_precision(model, base_dtype, device)
    model.requires_grad_(False)
    started = time.perf_counter()
    max_length = args.max_length or max_length_for(args.adapter, dataset.task)
    metrics = evaluate_dataset(model, loaded.tokenizer, dataset, batch_size=args.eval_batch_size,
                               max_length=max_length, num_beams=args.num_beams, length_penalty=args.length_penalty,
                               no_repeat_ngram_size=args.no_repeat_ngram_size, max_new_tokens=args.max_new_tokens,
                               progress=args.progress, keep_predictions=bool(args.predictions))
    if dataset.label_names and "predictions" in metrics:  # class names next to the indices, as the data spells them
        for row in metrics["predictions"]:
            row["label"], row["predicted"] = dataset.label_names[row["label"]], dataset.label_names[row["predicted"]]
    return {"model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split,
            "task": dataset.task, "limit": args.eval_limit, "max_length": max_length, "base_dtype": base_dtype,
            "num_beams": args.num_beams,
            "seconds": time.perf_counter() - started, "metrics": metrics}


def decoding(metrics: dict) -> str:
    """How a generation run decoded (its metrics' ``decoding``), for the report's title: ``; greedy, ...``."""
    d = metrics.get("decoding")
    if not d:
        return ""
    how = "greedy" if d["num_beams"] == 1 else f"beam {d['num_beams']}, length penalty {d.get('length_penalty', 1):g}"
    if d.get("no_repeat_ngram_size"):
        how += f", no repeated {d['no_repeat_ngram_size']}-gram"
    return f"; {how}, up to {d['max_new_tokens']} new tokens"


def write_predictions(rows: list[dict], path: str) -> None:
    """``rows`` as JSON lines at ``path`` (written whole, then renamed: a kill leaves no half file)."""
    from lorakit.io.atomic import write_atomic

    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def run(args: argparse.Namespace) -> int:
    """Print the metrics (and write them with --json, the predictions with --predictions)."""
    result = evaluate_command(args)
    predictions = result["metrics"].pop("predictions", None)
    if predictions is not None:
        write_predictions(predictions, args.predictions)
        print(f"wrote {len(predictions)} predictions to {args.predictions}", file=sys.stderr)
    if args.json == "-":  # JSON alone on stdout, for pipes
        write_json(result, None)
        return 0
    metrics = result["metrics"]
    what = f"{args.model}" + (f" + {args.adapter}" if args.adapter else " (base)")
    print(f"{what} on {args.data} {args.split} ({metrics['examples']} examples{decoding(metrics)}, "
          f"{result['seconds']:.0f}s)")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<10} {value:.4f}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
