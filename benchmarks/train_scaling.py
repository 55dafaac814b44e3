"""How training cost grows with model size: lean LoRA vs full fine-tuning on Llama checkpoints of growing size.

The models have random weights (speed and memory do not depend on the values) at about 135M
(SmolLM2-135M's shape), 360M (SmolLM2-360M's) and 1.1B parameters (TinyLlama-1.1B's). Each size is
built once and saved as a checkpoint (``benchmarks.llama_sizes``: safetensors, bf16, under
``--cache``); every run then loads it from disk through ``lorakit.models.load_model``, as a user
would. Each point is a fresh process measured like ``benchmarks.train_speed`` (tokens/s and the run's
own peak memory, max over its load and train phases, model loading included), medians of
round-robin repetitions with the peak's min–max; the plot shows peak memory and tokens/s against
parameter count.

    python -m benchmarks.train_scaling                        # results/train_scaling.{json,md,png}
    python -m benchmarks.train_scaling --sizes llama-135m --methods lorakit-bf16-ckpt --reps 1 --steps 1
    python -m benchmarks.train_scaling --sizes tiny --reps 1 --steps 1 --warmup 0 --name smoke   # seconds

Full fine-tuning in fp32 needs ≈ 16 bytes per parameter (weights, gradients, two AdamW moments) plus
activations: a size whose estimate exceeds ``--max-full-gb`` is not run for ``full-*`` methods, and the
table says so instead of a number.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common import machine, provenance_line, spread, write_results
from benchmarks.llama_sizes import LLAMA_SIZES, checkpoint, param_count
from benchmarks.train_speed import common_options, run_worker_if_asked, spawn

METHODS = ("lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "full-fp32")
FULL_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq


def plot(rows: list[dict], path: Path) -> None:
    """Peak memory and tokens/s against parameter count, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, speed) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method and "peak_memory_mb" in r), key=lambda r: r["params"])
        if not mine:
            continue
        x = [r["params"] / 1e6 for r in mine]
        mem.plot(x, [r["peak_memory_mb"] / 1024 for r in mine], "o-", label=method)
        speed.plot(x, [r["tokens_per_s"] for r in mine], "o-", label=method)
    for ax, label in ((mem, "peak memory (GiB)"), (speed, "training tokens/s")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("LoRA (lean) vs full fine-tuning as the model grows (Llama checkpoints, random weights, CPU)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    """Measure every (size, method) round-robin; write JSON, markdown and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_options(parser)
    parser.add_argument("--sizes", nargs="+", default=[s for s in LLAMA_SIZES if s != "tiny"], choices=list(LLAMA_SIZES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--max-full-gb", type=float, default=12.0,
                        help="skip full fine-tuning where 16 bytes/parameter exceed this")
    args = parser.parse_args()
    if run_worker_if_asked(args):
        return 0
    info = machine()
    for size in args.sizes:  # built once (not inside a measured process), then loaded by every run
        checkpoint(size, args.cache)
    runs, skipped = [], []
    for rep in range(args.reps):
        for size in args.sizes:
            for method in args.methods:
                need_gb = param_count(size) * FULL_BYTES_PER_PARAM / 2**30
                if method.startswith("full") and need_gb > args.max_full_gb:
                    if rep == 0:
                        skipped.append({"model": size, "method": method, "params": param_count(size),
                                        "skipped": f"needs ≈ {need_gb:.0f} GiB for weights+grads+AdamW"})
                    continue
                result = spawn(size, method, args, args.batch, args.length, module="benchmarks.train_scaling")
                runs.append({**result, "rep": rep})
                shown = f"failed: {result['error']}" if "error" in result else (
                    f"{result['tokens_per_s']:8.1f} tokens/s {result['peak_memory_mb']:7.0f} MiB")
                print(f"rep {rep} {size:11s} {method:18s} {shown}", flush=True)
    rows = []
    for size in args.sizes:
        for method in args.methods:
            mine = [r for r in runs if r["model"] == size and r["method"] == method and "error" not in r]
            if mine:
                peaks = spread([r["peak_memory_mb"] for r in mine])
                rows.append({"model": size, "method": method, "params": param_count(size),
                             "tokens_per_s": statistics.median(r["tokens_per_s"] for r in mine),
                             "peak_memory_mb": peaks["median"], "peak_memory_mb_min": peaks["min"],
                             "peak_memory_mb_max": peaks["max"],
                             "trainable_params": mine[0]["trainable_params"], "reps": len(mine)})
            else:
                failed = [r for r in runs if r["model"] == size and r["method"] == method]
                rows.extend(s for s in skipped if s["model"] == size and s["method"] == method)
                if failed:
                    rows.append({"model": size, "method": method, "params": param_count(size),
                                 "error": failed[0]["error"]})
    name = args.name or "train_scaling"
    lines = [f"# Training cost vs model size (Llama checkpoints loaded from disk, batch {args.batch}×{args.length})",
             "", provenance_line(info), "",
             f"{args.threads} thread(s) per run; median of {args.reps} repetitions, each a fresh process loading a "
             f"saved checkpoint: {args.warmup} warm-up + {args.steps} timed steps; peak = the run's own "
             "peak_memory_mb (max over its load and train phases), median (min–max).", "",
             f"Command: `{info['command']}`", "", f"![plot]({name}.png)", "",
             "| size | params | method | trainable | tokens/s | peak memory (MiB) |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        if "tokens_per_s" in r:
            peak = f"{r['peak_memory_mb']:.0f} ({r['peak_memory_mb_min']:.0f}–{r['peak_memory_mb_max']:.0f})"
            lines.append(f"| {r['model']} | {r['params'] / 1e6:.0f}M | {r['method']} | {r['trainable_params']:,} "
                         f"| {r['tokens_per_s']:.1f} | {peak} |")
        else:
            lines.append(f"| {r['model']} | {r['params'] / 1e6:.0f}M | {r['method']} | | "
                         f"{r.get('skipped') or 'failed: ' + ' '.join(r['error'])[:100]} | |")
    write_results(name, {"machine": info, "batch": args.batch, "length": args.length,
                         "checkpoints": {s: str(checkpoint(s, args.cache)) for s in args.sizes},
                         "rows": rows, "runs": runs}, "\n".join(lines) + "\n", out=args.out)
    plot(rows, args.out / f"{name}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
