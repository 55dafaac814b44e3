"""Quality at a lower frozen-base precision: does a bf16 or nf4 base change what LoRA learns?

Claim tested (issue 11): training LoRA over a bf16 (or 4-bit NF4) frozen base instead of fp32 leaves
quality unchanged: SST-2 accuracy within the seed spread, E2E BLEU within 1 point at the same steps.

- SST-2: minilm, LoRA q,v r=8, seeds 0, 1, 2, 120 steps of batch 32 (Table 2's budget), test split,
  base fp32 vs bf16.
- E2E: smollm2, LoRA q,v r=8, 40 steps of batch 8 (Table 3's budget), the first 100 test MRs with all
  references, base fp32 vs bf16 vs nf4.

Every row is one ``lorakit train`` command, cached in runs/reproduce/ (``sweep.py``) and resumable;
2 torch threads per run, one run at a time.

    python -m benchmarks.reproduce.precision [--seeds 0,1,2] [--dtypes fp32,bf16] [--e2e-dtypes fp32,bf16,nf4]
"""

from __future__ import annotations

import argparse

from benchmarks.common import machine, markdown_table, write_results
from benchmarks.reproduce.sweep import Row, main_metric, mean_std, process_wall, run_row, test_metrics

SST2 = ("--targets", "qv", "--max-steps", "120", "--eval-every", "0", "--no-base-eval",
        "--test-split", "test", "--threads", "2")
E2E = ("--targets", "qv", "--rank", "8", "--alpha", "16", "--lr", "5e-4", "--batch-size", "8", "--max-steps", "40",
       "--eval-every", "0", "--no-base-eval", "--eval-limit", "100", "--eval-batch-size", "50", "--threads", "2",
       "--seed", "0")


def sst2_row(dtype: str, seed: int) -> Row:
    """SST-2 LoRA q,v r=8 at one base dtype and seed (shared with many_tables.py's sequential runs)."""
    return Row(f"prec-sst2-qv-r8-{dtype}-s{seed}-n120", ("minilm", "sst2", *SST2, "--rank", "8", "--seed", str(seed),
                                                          "--base-dtype", dtype), {"dtype": dtype, "seed": seed})


def e2e_row(dtype: str) -> Row:
    """E2E LoRA q,v r=8 at one base dtype."""
    return Row(f"prec-e2e-qv-r8-{dtype}-n40-l100", ("smollm2", "e2e", *E2E, "--base-dtype", dtype), {"dtype": dtype})


def summarise_sst2(rows: list[Row], results: list[dict | None]) -> list[dict]:
    """One line per dtype: accuracy mean ± std over seeds, speed, peak memory."""
    lines = []
    for dtype in dict.fromkeys(r.labels["dtype"] for r in rows):
        done = [(r, m) for r, m in zip(rows, results, strict=True) if m is not None and r.labels["dtype"] == dtype]
        if not done:
            continue
        accs = [main_metric(m) for _, m in done]
        mean, std = mean_std(accs)
        lines.append({"data": "sst2", "base": dtype, "seeds": len(done),
                      "accuracy": f"{mean:.2f} ± {std:.2f}" if len(done) > 1 else f"{mean:.2f}",
                      "per_seed": ", ".join(f"{a:.2f}" for a in accs), "accuracy_mean": mean, "accuracy_std": std,
                      "tokens_per_s": sum(m["tokens_per_second"] for _, m in done) / len(done),
                      "peak_memory_mb": max(m["peak_memory_mb"] for _, m in done),
                      "process_s": sum(process_wall(r) or 0.0 for r, _ in done) / len(done),
                      "commands": [r.command for r, _ in done]})
    return lines


def summarise_e2e(rows: list[Row], results: list[dict | None]) -> list[dict]:
    """One line per dtype: BLEU and ROUGE-L on the first 100 test MRs, speed, peak memory."""
    lines = []
    for row, m in zip(rows, results, strict=True):
        if m is None:
            continue
        scores = test_metrics(m)
        lines.append({"data": "e2e", "base": row.labels["dtype"], "bleu": scores.get("bleu"),
                      "rouge_l": scores.get("rouge_l"), "tokens_per_s": m["tokens_per_second"],
                      "peak_memory_mb": m["peak_memory_mb"], "process_s": process_wall(row),
                      "commands": [row.command]})
    return lines


def main() -> None:
    """Run (or read) every row, then write results/precision.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dtypes", default="fp32,bf16", help="SST-2 base dtypes")
    parser.add_argument("--e2e-dtypes", default="fp32,bf16,nf4", help="E2E base dtypes ('' skips E2E)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per row before it is left resumable")
    args = parser.parse_args()
    sst2 = [sst2_row(d, int(s)) for d in args.dtypes.split(",") if d for s in args.seeds.split(",")]
    e2e = [e2e_row(d) for d in args.e2e_dtypes.split(",") if d]
    sst2_results = [run_row(r, args.timeout) for r in sst2]
    e2e_results = [run_row(r, args.timeout) for r in e2e]
    table_sst2, table_e2e = summarise_sst2(sst2, sst2_results), summarise_e2e(e2e, e2e_results)
    fp32 = next((t for t in table_e2e if t["base"] == "fp32"), None)
    for line in table_e2e:
        line["bleu_vs_fp32"] = f"{line['bleu'] - fp32['bleu']:+.2f}" if fp32 and line["bleu"] is not None else ""
    payload = {"machine": machine(), "sst2": table_sst2, "e2e": table_e2e}
    md = ("# LoRA quality over a lower-precision frozen base\n\n"
          "SST-2: minilm, LoRA q,v r=8, 120 steps of batch 32, test accuracy in % (mean ± sample std over seeds). "
          "E2E: smollm2, LoRA q,v r=8, 40 steps of batch 8, first 100 test MRs, all references. "
          "2 torch threads, one run at a time; `process_s`: the whole lorakit process (loading and evaluation "
          "included).\n\n"
          + markdown_table(table_sst2, ["data", "base", "seeds", "accuracy", "per_seed", "tokens_per_s",
                                        "peak_memory_mb", "process_s"])
          + "\n" + markdown_table(table_e2e, ["data", "base", "bleu", "bleu_vs_fp32", "rouge_l", "tokens_per_s",
                                              "peak_memory_mb", "process_s"]))
    for path in write_results("precision", payload, md):
        print("wrote", path)


if __name__ == "__main__":
    main()
