"""Dry run: list what LoRA would adapt in MODEL (modules, shapes, LoRA parameters, totals).

With ``--adapter DIR`` the adapter is loaded onto MODEL and validated instead, and the report says
what it adapts (modules, ranks, alpha, parameter count).
"""

from __future__ import annotations

import argparse

from lorakit.cli.common import load_model_for_adapter, print_table, spec_from_args, write_json
from lorakit.cli.options import add_config_options, add_json_option
from lorakit.core import select_targets
from lorakit.core.report import parameter_report
from lorakit.io import adapter_summary, load_adapter, read_adapter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit inspect``."""
    parser.add_argument("model", help="embedded model name (minilm, smollm2) or a local Hugging Face folder")
    add_config_options(parser, ["lora"])
    parser.add_argument("--adapter", default=None, help="inspect this adapter folder (PEFT layout) on MODEL")
    add_json_option(parser, "the report")


def run(args: argparse.Namespace) -> int:
    """Print the dry run or the adapter report."""
    if args.adapter:
        adapter = read_adapter(args.adapter)
        loaded = load_model_for_adapter(args.model, adapter)
        load_adapter(loaded.model, adapter)
        rows = adapter_summary(loaded.model)
        total = parameter_report(loaded.model).total
        lora = sum(r["params"] for r in rows)
        result = {"model": args.model, "adapter": str(args.adapter), "modules": len(rows), "lora_params": lora,
                  "model_params": total, "r": adapter.config.r, "alpha": adapter.config.lora_alpha,
                  "task_type": adapter.config.task_type, "rows": rows}
        if args.json:
            write_json(result, args.json)
            return 0
        print_table(rows, ["module", "kind", "rank", "alpha", "scaling", "params"])
        print(f"\nadapter {args.adapter} is valid for {args.model}: {len(rows)} modules, "
              f"{lora:,} LoRA parameters ({100 * lora / total:.4f}% of {total:,})")
        return 0
    from lorakit.models import load_model

    loaded = load_model(args.model)
    spec = spec_from_args(args)
    targets = select_targets(loaded.model, spec)
    total = sum(p.numel() for p in loaded.model.parameters())
    lora = sum(t.num_params for t in targets)
    rows = [{"module": t.path, "kind": t.kind, "shape": f"{t.in_features}->{t.out_features}", "rank": t.r,
             "slices": f"{t.slices[1]}/{t.slices[0]}" if t.slices else "", "params": t.num_params} for t in targets]
    result = {"model": args.model, "targets": list(spec.targets), "rank": spec.r, "modules": len(targets),
              "lora_params": lora, "model_params": total, "percent": 100 * lora / total, "rows": rows}
    if args.json:
        write_json(result, args.json)
        return 0
    print_table(rows, ["module", "kind", "shape", "rank", "slices", "params"])
    print(f"\n{len(targets)} modules, {lora:,} LoRA parameters "
          f"({100 * lora / total:.4f}% of {total:,} model parameters)")
    return 0
