"""LoRA variants side by side (issue 12): LoRA vs DoRA vs rsLoRA (r=64, next to plain LoRA r=64) vs
PiSSA vs LoRA+ on SST-2 and TREC (minilm) and E2E (smollm2, first 100 test MRs).

Same short budgets, seeds and evaluation as Tables 2–3 (``benchmarks/reproduce/nlu.py``, ``nlg.py``):
every row is the plain LoRA q,v row of those tables plus one variant option, so the plain rows are
shared with (and cached from) them. Rows are ``lorakit train`` command lines run through
``reproduce/sweep.py`` (cached in runs/reproduce/, resumable, lockable across invocations); the table
carries each row's command and its training tokens/s.

    python -m benchmarks.variants [--parts nlu,nlg] [--datasets sst2,trec] [--methods lora-r8,dora-r8,...]
                                  [--steps 120] [--nlg-steps 40] [--eval-limit 100] [--seed 0]

Time (estimated from Tables 2–3, not measured for this script): ≈ 3.5 min per NLU row and ≈ 10 min per
NLG row on 2 shared CPU cores, so the full table (7 methods × (2 + 1) data sets) is about 2 hours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import machine, markdown_table, provenance_line, write_results
from benchmarks.reproduce import nlg, nlu
from benchmarks.reproduce.sweep import Row, main_metric, run_row, test_metrics

# method -> options added to the plain LoRA q,v row of Tables 2–3 (later options win in argparse).
VARIANTS = {
    "lora-r8": (),
    "dora-r8": ("--dora",),
    "lora-r64": ("--rank", "64"),
    "rslora-r64": ("--rank", "64", "--rslora"),
    "pissa-r8": ("--init", "pissa"),
    "olora-r8": ("--init", "olora"),
    "loraplus-r8": ("--lora-plus-ratio", "16"),
}


def nlu_rows(datasets: list[str], methods: list[str], seed: int, steps: int) -> list[Row]:
    """One row per (data set, method); ``lora-r8`` is Table 2's own ``lora-qv-r8`` row (same key, cached)."""
    rows = []
    for data in datasets:
        plain = nlu.nlu_row(data, "lora-qv-r8", seed, steps)
        for method in methods:
            extra = VARIANTS[method]
            key = plain.key if not extra else f"var-nlu-{data}-{method}-s{seed}-n{steps}"
            rows.append(Row(key, (*plain.args, *extra), {"part": "nlu", "data": data, "method": method}))
    return rows


def nlg_rows(methods: list[str], steps: int, eval_limit: int) -> list[Row]:
    """One E2E row per method; ``lora-r8`` is Table 3's ``lora-qv-r8`` row (alpha 16, lr 5e-4)."""
    plain = next(r for r in nlg.train_rows(steps, eval_limit, 1) if r.labels["method"] == "lora-qv-r8")
    return [Row(plain.key if not VARIANTS[m] else f"var-nlg-e2e-{m}-n{steps}-l{eval_limit}",
                (*plain.args, *VARIANTS[m]), {"part": "nlg", "data": "e2e", "method": m}) for m in methods]


def summarise(row: Row, result: dict) -> dict:
    """One table line: the task metric (accuracy, or BLEU/ROUGE-L on E2E), size and speed."""
    line = {"data": row.labels["data"], "method": row.labels["method"], "commands": [row.command], "runs": [row.key],
            "trainable_params": result["trainable_params"], "tokens_per_s": result["tokens_per_second"],
            "train_minutes": result["train_seconds"] / 60, "peak_memory_mb": result["peak_memory_mb"]}
    if row.labels["part"] == "nlu":
        line["accuracy"] = main_metric(result)
    else:
        scores = test_metrics(result)
        line.update({"bleu": scores.get("bleu"), "rouge_l": scores.get("rouge_l")})
    return line


def write(args: argparse.Namespace, table: list[dict], rows_total: int,
          out: Path | None = None) -> tuple[Path, Path | None]:
    """``results/variants.{json,md}`` (or under ``out``): the finished rows, with the run's provenance."""
    info = machine(module="benchmarks.variants")
    payload = {"machine": info, "rows_done": len(table), "rows_total": rows_total, "steps": args.steps,
               "nlg_steps": args.nlg_steps, "eval_limit": args.eval_limit, "seed": args.seed, "table": table}
    md = (f"# LoRA variants: minilm {args.steps} steps (batch 32), smollm2 E2E {args.nlg_steps} steps (batch 8), "
          f"seed {args.seed}\n\n{provenance_line(info)}\n\n{len(table)}/{rows_total} rows finished. Accuracy in % "
          f"on the test split (SST-2, TREC); BLEU / ROUGE-L on the first {args.eval_limit} E2E test MRs; `vs_lora`: "
          "above (+) or below (-) plain LoRA q,v r=8 on the same data; tokens/s: training tokens per second, one "
          "torch thread.\n\n"
          + markdown_table(table, ["data", "method", "accuracy", "bleu", "rouge_l", "vs_lora", "trainable_params",
                                   "tokens_per_s", "train_minutes", "peak_memory_mb"]))
    paths = write_results("variants", payload, md, out=out)
    for path in paths:
        print("wrote", path)
    return paths


def main() -> None:
    """Run (or read) every row, then write results/variants.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="nlu,nlg")
    parser.add_argument("--datasets", default="sst2,trec", help="NLU data sets")
    parser.add_argument("--methods", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=120, help="NLU steps of batch 32 (Table 2)")
    parser.add_argument("--nlg-steps", type=int, default=40, help="E2E steps of batch 8 (Table 3)")
    parser.add_argument("--eval-limit", type=int, default=100, help="E2E test MRs scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per row before it is left resumable")
    args = parser.parse_args()
    methods, parts = args.methods.split(","), args.parts.split(",")
    unknown = sorted(set(methods) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    rows = nlu_rows(args.datasets.split(","), methods, args.seed, args.steps) if "nlu" in parts else []
    rows += nlg_rows(methods, args.nlg_steps, args.eval_limit) if "nlg" in parts else []
    table = [summarise(row, result) for row in rows if (result := run_row(row, args.timeout)) is not None]
    for line in table:  # points / BLEU above (+) or below (-) plain LoRA r=8 on the same data set
        plain = next((p for p in table if p["data"] == line["data"] and p["method"] == "lora-r8"), None)
        metric = "accuracy" if "accuracy" in line else "bleu"
        if plain is not None and line.get(metric) is not None and plain.get(metric) is not None:
            line["vs_lora"] = f"{line[metric] - plain[metric]:+.2f}"
    write(args, table, len(rows))


if __name__ == "__main__":
    main()
