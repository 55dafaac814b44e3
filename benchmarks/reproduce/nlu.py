"""Table 2 analogue (NLU): minilm on SST-2, TREC, SUBJ (and MR): full FT vs BitFit vs LoRA qv vs LoRA all-linear.

Claim tested (paper §5.1, Table 2): LoRA is within about 1 point of full fine-tuning with < 1% of the
parameters trainable. SST-2 runs 3 seeds, the other sets 1 seed. Every row trains ``--steps``
optimizer steps of batch 32, evaluates once at the end and reports accuracy on the held-out **test**
split (SST-2's given test.txt; TREC's given test set; SUBJ/MR's seeded 10% test split).

Learning rates: LoRA and BitFit 2e-3 (lorakit's default for classification), full fine-tuning 5e-5
(2.5x lorakit's default of 2e-5, because a 120-step schedule is short).

Time: on 2 CPU cores shared with one other run, about 3.5 minutes a LoRA/BitFit row and 5 minutes a
full fine-tuning row at the default 120 steps; the table (20 rows) is ≈ 80 minutes. Rows are cached in
runs/reproduce/ and resumable, and several invocations can run side by side (each row is locked while
it runs); ``--datasets sst2 --seeds 0`` runs a slice.

    python -m benchmarks.reproduce.nlu [--datasets sst2,trec,subj] [--seeds 0,1,2] [--steps 120]
"""

from __future__ import annotations

import argparse

from benchmarks.common import machine, markdown_table, write_results
from benchmarks.reproduce.sweep import Row, main_metric, mean_std, run_row, saved_bytes

METHODS = {
    "full": ("--full", "--lr", "5e-5"),
    "bitfit": ("--bitfit",),
    "lora-qv-r8": ("--targets", "qv", "--rank", "8"),
    "lora-all-linear-r8": ("--targets", "all-linear", "--rank", "8"),
}


# Shared by every row: one evaluation at the end (no checkpoint picking), reported on the test split, and
# the base precision pinned: the table was measured in fp32, before `--base-dtype` existed, and its
# default (`auto`) now picks bf16 where the CPU has it. fp32 is allowed for --full / --bitfit too.
COMMON = ("--eval-every", "0", "--no-base-eval", "--test-split", "test", "--threads", "1", "--base-dtype", "fp32")


def nlu_row(data: str, method: str, seed: int, steps: int) -> Row:
    """One (data set, method, seed) run of the table."""
    args = ("minilm", data, *METHODS[method], "--max-steps", str(steps), "--seed", str(seed), *COMMON)
    return Row(f"nlu-{data}-{method}-s{seed}-n{steps}", args, {"data": data, "method": method, "seed": seed})


def rows_for(datasets: list[str], seeds: list[int], steps: int) -> list[Row]:
    """Every run of the table, first seed of every data set first; seeds beyond the first only on SST-2."""
    return [nlu_row(data, method, seed, steps)
            for seed in seeds for data in datasets if seed == seeds[0] or data == "sst2"
            for method in METHODS]


def summarise(rows: list[Row], results: list[dict | None]) -> list[dict]:
    """One table line per (data set, method): accuracy mean ± std over the seeds that finished."""
    groups: dict[tuple[str, str], list[tuple[Row, dict]]] = {}
    for row, metrics in zip(rows, results, strict=True):
        if metrics is not None:
            groups.setdefault((row.labels["data"], row.labels["method"]), []).append((row, metrics))
    table = []
    for (data, method), runs in groups.items():
        accs = [main_metric(m) for _, m in runs]
        mean, std = mean_std(accs)
        first = runs[0][1]
        table.append({
            "data": data, "method": method, "seeds": len(runs),
            "accuracy": f"{mean:.2f} ± {std:.2f}" if len(runs) > 1 else f"{mean:.2f}",
            "accuracy_mean": mean, "accuracy_std": std, "trainable_params": first["trainable_params"],
            "trainable_percent": first["trainable_percent"],
            "tokens_per_s": sum(m["tokens_per_second"] for _, m in runs) / len(runs),
            "peak_memory_mb": max(m["peak_memory_mb"] for _, m in runs),
            "saved_mb": saved_bytes(first) / 2**20,
            "commands": [r.command for r, _ in runs], "runs": [r.key for r, _ in runs],
        })
    for line in table:  # points above (+) or below (-) full fine-tuning on the same data set
        full = next((f for f in table if f["data"] == line["data"] and f["method"] == "full"), None)
        line["vs_full"] = f"{line['accuracy_mean'] - full['accuracy_mean']:+.2f}" if full else ""
    return table


def main() -> None:
    """Run (or read) every row, then write results/nlu.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="sst2,trec,subj")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per row before it is left resumable")
    args = parser.parse_args()
    rows = rows_for(args.datasets.split(","), [int(s) for s in args.seeds.split(",")], args.steps)
    results = [run_row(row, args.timeout) for row in rows]
    table = summarise(rows, results)
    done = sum(r is not None for r in results)
    payload = {"machine": machine(), "rows_done": done, "rows_total": len(rows), "table": table}
    md = (f"# Table 2 analogue: minilm, {args.steps} steps of batch 32\n\n{done}/{len(rows)} runs finished. "
          "Accuracy in % on the test split (mean ± sample std over seeds); `vs_full`: points above full "
          "fine-tuning; `saved_mb`: the adapter file (LoRA) or the whole model folder's weights (full, BitFit); "
          "tokens/s: training tokens per second, one torch thread, two runs side by side on 2 cores.\n\n"
          + markdown_table(table, ["data", "method", "seeds", "accuracy", "vs_full", "trainable_params",
                                   "trainable_percent",
                                   "tokens_per_s", "peak_memory_mb", "saved_mb"]))
    for path in write_results("nlu", payload, md):
        print("wrote", path)


if __name__ == "__main__":
    main()
