"""Table 6 (the rank sweep) and Table 2's three SST-2 seeds, each as ONE ``lorakit train-many`` run.

The same rows are also run as separate ``lorakit train`` processes, one after another (what a sweep did
before train-many), and the two are compared: wall time of the whole work, peak memory, and the test
accuracy of each adapter (each job draws minilm's own dropout from its own RNG stream, see
``train/many/model.py``, so in fp32 a job equals its solo run to 1e-5).

- Table 6: SST-2, LoRA q,v, r = 1, 2, 4, 8, 64 (alpha = 2r), seed 0.
- Table 2: SST-2, LoRA q,v r=8, seeds 0, 1, 2.

Both at Table 2's budget (120 steps of batch 32, one evaluation at the end, test split), bf16 base,
2 torch threads. Solo rows are cached in runs/reproduce/ (``sweep.py``; the seed rows are
``precision.py``'s bf16 rows); a train-many run is cached by its ``train_many.json``.

    python -m benchmarks.reproduce.many_tables
"""

from __future__ import annotations

import argparse
import json

from benchmarks.common import machine, markdown_table, write_results
from benchmarks.reproduce.precision import SST2, sst2_row
from benchmarks.reproduce.sweep import RUNS, Row, main_metric, process_wall, run_row

DTYPE = "bf16"
RANKS = (1, 2, 4, 8, 64)
SEEDS = (0, 1, 2)


def solo_rank_row(rank: int) -> Row:
    """SST-2 q,v at ``rank`` (alpha 2r), seed 0; r=8 is the seed-0 row of the seeds table."""
    if rank == 8:
        return sst2_row(DTYPE, 0)
    return Row(f"prec-sst2-qv-r{rank}-{DTYPE}-s0-n120", ("minilm", "sst2", *SST2, "--rank", str(rank), "--alpha",
                                                          str(2 * rank), "--seed", "0", "--base-dtype", DTYPE),
               {"rank": rank})


def jobs_toml(jobs: list[dict]) -> str:
    """A jobs file with the solo rows' options at the top level (targets, steps, evaluation, dtype)."""
    top = {"model": "minilm", "targets": ["qv"], "max_steps": 120, "eval_every": 0, "base_eval": False,
           "test_split": "test", "threads": 2, "base_dtype": DTYPE, "data": "sst2"}
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for job in jobs:
        lines += ["[[job]]"] + [f"{k} = {json.dumps(v)}" for k, v in job.items()]
    return "\n".join(lines) + "\n"


def many_row(key: str, jobs: list[dict]) -> Row:
    """One train-many run as a sweep row (cached by its train_many.json); its jobs file written first."""
    jobs_file = RUNS / key / "jobs.toml"
    jobs_file.parent.mkdir(parents=True, exist_ok=True)
    jobs_file.write_text(jobs_toml(jobs))
    return Row(key, (str(jobs_file),), verb="train-many")


def compare(name: str, labels: list[str], solo: list[Row], many_key: str, jobs: list[dict]) -> dict:
    """Run both ways; one line per job plus the totals."""
    solo_results = [run_row(r) for r in solo]
    if any(r is None for r in solo_results):
        raise SystemExit(f"{name}: a solo row failed (see its sweep.log)")
    many = many_row(many_key, jobs)
    summary = run_row(many)
    if summary is None:
        raise SystemExit(f"{name}: the train-many run failed (see {many.out / 'sweep.log'})")
    lines = []
    for label, row, result, job in zip(labels, solo, solo_results, jobs, strict=True):
        m = summary["jobs"][job["name"]]
        lines.append({"table": name, "job": label, "solo_accuracy": main_metric(result),
                      "many_accuracy": main_metric(m), "solo_process_s": process_wall(row),
                      "solo_peak_mb": result["peak_memory_mb"]})
    solo_wall = sum(process_wall(r) for r in solo)
    many_wall = process_wall(many)
    total = {"table": name, "jobs": len(jobs), "sequential_wall_s": solo_wall, "train_many_wall_s": many_wall,
             "ratio": many_wall / solo_wall, "sequential_peak_mb": max(r["peak_memory_mb"] for r in solo_results),
             "train_many_peak_mb": summary["peak_memory_mb"], "train_many_command": many.command,
             "solo_commands": [r.command for r in solo]}
    return {"lines": lines, "total": total}


def main() -> None:
    """Both tables, both ways; results/many_tables.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    rank = compare("6 (rank)", [f"r={r}" for r in RANKS], [solo_rank_row(r) for r in RANKS],
                   f"many-sst2-ranks-{DTYPE}-n120",
                   [{"name": f"r{r}", "rank": r, "alpha": 2 * r, "seed": 0} for r in RANKS])
    seeds = compare("2 (seeds)", [f"seed {s}" for s in SEEDS], [sst2_row(DTYPE, s) for s in SEEDS],
                    f"many-sst2-seeds-{DTYPE}-n120", [{"name": f"s{s}", "rank": 8, "seed": s} for s in SEEDS])
    lines, totals = rank["lines"] + seeds["lines"], [rank["total"], seeds["total"]]
    md = ("# Table 6 and Table 2's SST-2 seeds as one train-many run each, vs separate lorakit train runs\n\n"
          "minilm, SST-2, LoRA q,v, 120 steps of batch 32, bf16 base, 2 torch threads, one process at a time; "
          "test accuracy in %; wall = whole processes (start-up, loading, training, evaluation).\n\n"
          + markdown_table(totals, ["table", "jobs", "sequential_wall_s", "train_many_wall_s", "ratio",
                                    "sequential_peak_mb", "train_many_peak_mb"])
          + "\n" + markdown_table(lines, ["table", "job", "solo_accuracy", "many_accuracy", "solo_process_s"]))
    for path in write_results("many_tables", {"machine": machine(), "totals": totals, "jobs": lines}, md):
        print("wrote", path)


if __name__ == "__main__":
    main()
