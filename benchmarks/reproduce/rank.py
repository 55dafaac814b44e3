"""Tables 5 and 6 analogues: SST-2 accuracy of minilm LoRA by rank, and by which attention matrices.

Claims tested (paper §7.1-7.2): a very low rank already suffices (Table 6: r = 1..64 on W_q, W_v);
at an equal parameter budget, adapting more matrices at a lower rank beats one matrix at a higher rank
(Table 5: W_q at r=8 vs W_q,W_v at r=4 vs W_q,W_k,W_v,W_o at r=2).

Every row is an SST-2 run of nlu.py's recipe (``--steps`` steps of batch 32, alpha = 2r, one final
evaluation, accuracy on the test split, seed 0), so the q,v r=8 row *is* nlu.py's LoRA q,v r=8 seed-0
row and the q,v r=4 row of Table 6 is Table 5's middle row: each is trained once. The r=8 and r=64
adapters also feed figure3.py.

Time: about 3.5 minutes a row on 2 CPU cores shared with one other run; 7 rows ≈ 25 minutes when none
is cached. Cached, resumable, and safe to run beside nlu.py (rows are locked while they run).

    python -m benchmarks.reproduce.rank [--ranks 1,2,4,8,64] [--steps 120]
"""

from __future__ import annotations

import argparse

from benchmarks.common import machine, markdown_table, write_results
from benchmarks.reproduce.nlu import COMMON, nlu_row
from benchmarks.reproduce.sweep import Row, main_metric, run_row

# Table 5: name -> (targets argument, rank). Equal budgets: each adds 6,144 LoRA parameters per layer
# (q r=8: 2*384*8; q,v r=4: 2*2*384*4; q,k,v,o r=2: 4*2*384*2), 36,864 over minilm's 6 layers.
# minilm's query module is named "query".
BUDGET = {"q r=8": ("query", 8), "qv r=4": ("qv", 4), "qkvo r=2": ("attention", 2)}


def sst2_row(targets: str, rank: int, steps: int, seed: int = 0, labels: dict | None = None) -> Row:
    """An SST-2 LoRA run with alpha = 2r; q,v at r=8 is nlu.py's own row (default alpha 16 = 2r)."""
    if targets == "qv" and rank == 8:
        row = nlu_row("sst2", "lora-qv-r8", seed, steps)
        return Row(row.key, row.args, labels or {}, row.verb)
    args = ("minilm", "sst2", "--targets", targets, "--rank", str(rank), "--alpha", str(2 * rank),
            "--max-steps", str(steps), "--seed", str(seed), *COMMON)
    return Row(f"rank-sst2-{targets}-r{rank}-s{seed}-n{steps}", args, labels or {})


def rank_row(rank: int, steps: int, seed: int = 0) -> Row:
    """The SST-2 q,v run at ``rank`` (Table 6; shared with figure3.py)."""
    return sst2_row("qv", rank, steps, seed, {"table": "6 (rank)", "targets": "q,v", "rank": rank})


def budget_row(name: str, steps: int, seed: int = 0) -> Row:
    """An equal-budget row of Table 5."""
    targets, rank = BUDGET[name]
    return sst2_row(targets, rank, steps, seed, {"table": "5 (budget)", "targets": name.split()[0], "rank": rank})


def main() -> None:
    """Run (or read) the rows and write results/rank.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4,8,64")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--skip-budget", action="store_true")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per row before it is left resumable")
    args = parser.parse_args()
    rows = [rank_row(int(r), args.steps) for r in args.ranks.split(",")]
    if not args.skip_budget:
        rows += [budget_row(name, args.steps) for name in BUDGET]
    table = []
    for row in rows:
        metrics = run_row(row, args.timeout)
        if metrics is None:
            continue
        table.append({**row.labels, "accuracy": main_metric(metrics), "lora_params": metrics["lora_params"],
                      "trainable_params": metrics["trainable_params"], "command": row.command})
    payload = {"machine": machine(), "steps": args.steps, "rows_done": len(table), "rows_total": len(rows),
               "table": table}
    md = (f"# Tables 5-6 analogue: minilm on SST-2 test, {args.steps} steps of batch 32, seed 0\n\n"
          f"{len(table)}/{len(rows)} runs finished. Accuracy in %. `lora_params` counts A and B only; "
          "`trainable_params` adds the classification head (Linear 384 -> labels).\n\n"
          + markdown_table(table, ["table", "targets", "rank", "accuracy", "lora_params", "trainable_params"]))
    for path in write_results("rank", payload, md):
        print("wrote", path)


if __name__ == "__main__":
    main()
