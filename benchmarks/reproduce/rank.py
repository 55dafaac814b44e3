"""Tables 5 and 6 analogues: SST-2 accuracy of minilm LoRA by rank, and by which attention matrices.

Claims tested (paper §7.1-7.2): a very low rank already suffices (Table 6: r = 1..64 on W_q, W_v);
at an equal parameter budget, adapting more matrices at a lower rank beats one matrix at a higher rank
(Table 5: W_q at r=8 vs W_q,W_v at r=4 vs W_q,W_k,W_v,W_o at r=2).

Time: about 6 minutes a row on 2 quiet CPU cores at the default 400 steps; 5 + 3 rows ≈ 50 minutes
(the qv r=8 row of Table 6 and Table 5's qv r=4 row are separate runs). Cached and resumable.
The r=8 and r=64 adapters also feed figure3.py.

    python benchmarks/reproduce/rank.py [--ranks 1,2,4,8,64] [--steps 400]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, write_results  # noqa: E402
from sweep import Row, main_metric, run_row  # noqa: E402

BUDGET = {"q r=8": ("q", 8), "qv r=4": ("qv", 4), "qkvo r=2": ("attention", 2)}
# minilm's query module is named "query"; the q-only row uses that suffix.
TARGET_ARG = {"q": "query", "qv": "qv", "attention": "attention"}


def rank_row(rank: int, steps: int, seed: int = 0) -> Row:
    """The SST-2 qv run at ``rank`` (shared with figure3.py)."""
    args = ("minilm", "sst2", "--targets", "qv", "--rank", str(rank), "--alpha", str(2 * rank),
            "--max-steps", str(steps), "--seed", str(seed))
    return Row(f"rank-sst2-qv-r{rank}-s{seed}-n{steps}", args, {"table": "rank", "rank": rank, "targets": "qv"})


def budget_row(name: str, steps: int, seed: int = 0) -> Row:
    """An equal-budget row of Table 5."""
    targets, rank = BUDGET[name]
    args = ("minilm", "sst2", "--targets", TARGET_ARG[targets], "--rank", str(rank), "--alpha", str(2 * rank),
            "--max-steps", str(steps), "--seed", str(seed))
    return Row(f"budget-sst2-{targets}-r{rank}-s{seed}-n{steps}", args, {"table": "budget", "rank": rank,
                                                                        "targets": name})


def main() -> None:
    """Run (or read) the rows and write results/rank.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4,8,64")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--skip-budget", action="store_true")
    parser.add_argument("--timeout", type=float, default=None)
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
    payload = {"machine": machine(), "rows_done": len(table), "rows_total": len(rows), "table": table}
    md = (f"# Tables 5-6 analogue: minilm on SST-2 dev, {args.steps} steps, seed 0\n\n"
          f"{len(table)}/{len(rows)} runs finished. Accuracy in %.\n\n"
          + markdown_table(table, ["table", "targets", "rank", "accuracy", "lora_params", "trainable_params"]))
    for path in write_results("rank", payload, md):
        print("wrote", path)


if __name__ == "__main__":
    main()
