"""Sequence packing on E2E: training throughput in real (non-padding) tokens per second, packed vs not.

Each run is a fresh process that loads smollm2 with a q,v r=8 LoRA adapter, reads the E2E training
split (the same examples either way) and runs ``--steps`` optimizer steps of ``--batch-size`` rows
through ``lorakit.train.loop.train_loop`` with no evaluation. Unpacked rows are single examples
(batched by length, lorakit's default, so padding is already small); packed rows hold several
examples up to ``--max-length`` tokens (``--packing``). The loop's own throughput counts only real
tokens (the attention mask of the examples), so both modes are measured in the same unit. Runs
alternate (unpacked, packed, unpacked, packed, …) so that load from other processes on a shared
machine hits both alike; the report gives each run and the medians.

    python -m benchmarks.packing     # writes benchmarks/results/packing_e2e.md
    python -m benchmarks.packing --rounds 2 --steps 10 --threads 1

The data set is found as ``lorakit train`` finds it (``$LORAKIT_DATA``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS, machine, provenance_line, write_results


def one_run(args: argparse.Namespace) -> dict:
    """Train ``args.steps`` steps in this process; return the measurement (printed as JSON)."""
    import torch

    torch.set_num_threads(args.threads)
    from lorakit.train.config import TrainConfig
    from lorakit.train.distributed import DistContext
    from lorakit.train.loop import train_loop
    from lorakit.train.runner import make_trainable, prepare, seed_everything

    cfg = TrainConfig(model="smollm2", data="e2e", packing=args.packing, max_steps=args.steps,
                      batch_size=args.batch_size, max_length=args.max_length, eval_every=0, base_eval=False,
                      progress=False, threads=args.threads, eval_limit=1, base_dtype=args.base_dtype)
    p = prepare(cfg, DistContext())
    seed_everything(1)
    make_trainable(p.loaded.model, p.cfg)
    slots = [0]  # token positions computed, padding included

    def counting(rows: list) -> dict:
        batch = p.train_collate(rows)
        slots[0] += batch["input_ids"].numel()
        return batch

    started, cpu = time.perf_counter(), time.process_time()
    result = train_loop(p.loaded.model, p.train_rows, counting, p.cfg, args.steps)
    cpu = time.process_time() - cpu
    return {"packing": args.packing, "tokens_per_second": result.tokens_per_second,
            "tokens_per_cpu_second": result.state.tokens_seen / cpu, "padding": 1 - result.state.tokens_seen / slots[0],
            "real_tokens": result.state.tokens_seen, "seconds": time.perf_counter() - started,
            "rows_per_step": args.batch_size, "train_examples": len(p.train),
            "train_rows": len(p.train_rows), "packing_stats": p.packing}


def main() -> None:
    """Alternate packed and unpacked runs in fresh processes; write the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-dtype", default="fp32", help="the frozen base's precision (pinned: lorakit's default is auto)")
    parser.add_argument("--one", choices=["packed", "unpacked"], help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--out", default=str(RESULTS / "packing_e2e.md"))
    args = parser.parse_args()
    if args.one:
        args.packing = args.one == "packed"
        print("RESULT " + json.dumps(one_run(args)))
        return
    runs = []
    for _ in range(args.rounds):
        for mode in ("unpacked", "packed"):
            cmd = [sys.executable, "-m", "benchmarks.packing", "--one", mode, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--threads",
                   str(args.threads), "--base-dtype", args.base_dtype]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
            line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
            runs.append(json.loads(line[len("RESULT "):]))
            print(mode, f"{runs[-1]['tokens_per_second']:.0f} real tokens/s", flush=True)
    write_report(args, runs)


def write_report(args: argparse.Namespace, runs: list[dict]) -> None:
    """The markdown table: every run, the medians and the speed-up."""
    median = {m: statistics.median(r["tokens_per_second"] for r in runs if r["packing"] == m) for m in (False, True)}
    stats = next(r["packing_stats"] for r in runs if r["packing"])
    unpacked = next(r for r in runs if not r["packing"])
    info = machine()
    lines = [
        "# Sequence packing on E2E (smollm2, LoRA q,v r=8)",
        "",
        f"Command: `{info['command']}`",
        "",
        provenance_line(info),
        "",
        f"Torch threads {args.threads} per run, base {args.base_dtype}; runs alternate so load from other "
        f"processes hits both modes alike. {args.steps} optimizer steps of "
        f"{args.batch_size} rows per run, max length {args.max_length}.",
        "",
        f"E2E train split: {unpacked['train_examples']:,} examples; packed into {stats['rows']:,} rows "
        f"({stats['examples'] / stats['rows']:.2f} examples per row, rows {stats['fill']:.1%} full).",
        "",
        "| run | mode | real tokens/s (wall) | real tokens per CPU-second | padding | real tokens | seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        mode = "packed" if r["packing"] else "unpacked (grouped by length)"
        lines.append(f"| {i} | {mode} | {r['tokens_per_second']:.0f} | {r['tokens_per_cpu_second']:.0f} | "
                     f"{r['padding']:.1%} | {r['real_tokens']:,} | {r['seconds']:.1f} |")
    cpu = {m: statistics.median(r["tokens_per_cpu_second"] for r in runs if r["packing"] == m) for m in (False, True)}
    lines += [
        "",
        f"Median real tokens/s (wall clock): unpacked {median[False]:.0f}, packed {median[True]:.0f}: "
        f"**{median[True] / median[False]:.2f}×** with packing. Per CPU-second of the (single-threaded) process, "
        f"less sensitive to the other sessions' load: unpacked {cpu[False]:.0f}, packed {cpu[True]:.0f}: "
        f"**{cpu[True] / cpu[False]:.2f}×**.",
        "",
    ]
    out = Path(args.out)  # NAME.md, with NAME.json (provenance, every run) beside it
    write_results(out.stem, {"machine": info, "setup": {k: v for k, v in vars(args).items() if k != "one"},
                             "median_tokens_per_s": {"unpacked": median[False], "packed": median[True]}, "runs": runs},
                  "\n".join(lines), out=out.parent)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
