"""How training cost grows with model size: lean LoRA vs full fine-tuning on random-init Llama configs.

Models are built from a config with random weights (no checkpoint needed; speed and memory do not
depend on the values) at about 135M (SmolLM2-135M's shape), 360M (SmolLM2-360M's) and 1.1B
parameters (TinyLlama-1.1B's). Each point is a fresh process measured like ``train_speed.py`` (tokens/s
and the process's VmHWM, model construction included), medians of round-robin repetitions; the plot
shows peak memory and tokens/s against parameter count.

    python benchmarks/train_scaling.py                        # results/train_scaling.{json,md,png}
    python benchmarks/train_scaling.py --sizes llama-135m --methods lorakit-bf16-ckpt --reps 1 --steps 1
    python benchmarks/train_scaling.py --sizes tiny --reps 1 --steps 1 --warmup 0 --name smoke   # seconds

Full fine-tuning in fp32 needs ≈ 16 bytes per parameter (weights, gradients, two AdamW moments) plus
activations: a size whose estimate exceeds ``--max-full-gb`` is not run for ``full-*`` methods, and the
table says so instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import common_options, run_worker_if_asked, spawn  # noqa: E402

# name -> LlamaConfig fields (vocab, hidden, intermediate, layers, heads, kv heads)
LLAMA_SIZES = {
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "llama-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3),
    "llama-360m": dict(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                       num_attention_heads=15, num_key_value_heads=5),
    "llama-1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                     num_attention_heads=32, num_key_value_heads=4),
}
METHODS = ("lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "full-fp32")
FULL_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq


def random_llama(name: str, dtype):
    """A randomly initialised ``LlamaForCausalLM`` of size ``name``, built directly in ``dtype``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**LLAMA_SIZES[name], tie_word_embeddings=True, max_position_embeddings=2048)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # never materialise an fp32 copy of a bf16 model
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model


def param_count(name: str) -> int:
    """Parameters of a size, computed from its config (tied embeddings)."""
    c = LLAMA_SIZES[name]
    h, i, layers, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return v * h + layers * per_layer + h


def plot(rows: list[dict], path: Path) -> None:
    """Peak memory and tokens/s against parameter count, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, speed) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method and "peak_rss_mb" in r), key=lambda r: r["params"])
        if not mine:
            continue
        x = [r["params"] / 1e6 for r in mine]
        mem.plot(x, [r["peak_rss_mb"] / 1024 for r in mine], "o-", label=method)
        speed.plot(x, [r["tokens_per_s"] for r in mine], "o-", label=method)
    for ax, label in ((mem, "peak RSS (GiB)"), (speed, "training tokens/s")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("LoRA (lean) vs full fine-tuning as the model grows (random-init Llama, CPU)")
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
                result = spawn(size, method, args, args.batch, args.length, script=__file__)
                runs.append({**result, "rep": rep})
                shown = f"failed: {result['error']}" if "error" in result else (
                    f"{result['tokens_per_s']:8.1f} tokens/s {result['peak_rss_mb']:7.0f} MiB")
                print(f"rep {rep} {size:11s} {method:18s} {shown}", flush=True)
    rows = []
    for size in args.sizes:
        for method in args.methods:
            mine = [r for r in runs if r["model"] == size and r["method"] == method and "error" not in r]
            if mine:
                rows.append({"model": size, "method": method, "params": param_count(size),
                             "tokens_per_s": statistics.median(r["tokens_per_s"] for r in mine),
                             "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in mine),
                             "trainable_params": mine[0]["trainable_params"], "reps": len(mine)})
            else:
                failed = [r for r in runs if r["model"] == size and r["method"] == method]
                rows.extend(s for s in skipped if s["model"] == size and s["method"] == method)
                if failed:
                    rows.append({"model": size, "method": method, "params": param_count(size),
                                 "error": failed[0]["error"]})
    name = args.name or "train_scaling"
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/train_scaling.py " + " ".join(sys.argv[1:])
    (args.out / f"{name}.json").write_text(json.dumps({"command": command, "batch": args.batch, "length": args.length,
                                                       "rows": rows, "runs": runs}, indent=2) + "\n")
    lines = [f"# Training cost vs model size (random-init Llama, batch {args.batch}×{args.length})", "",
             f"CPU, {os.cpu_count()} cores, {args.threads} thread(s) per run; median of {args.reps} repetitions, "
             f"each a fresh process: {args.warmup} warm-up + {args.steps} timed steps; peak = VmHWM.", "",
             f"Command: `{command}`", "", f"![plot]({name}.png)", "",
             "| size | params | method | trainable | tokens/s | peak RSS (MiB) |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        if "tokens_per_s" in r:
            lines.append(f"| {r['model']} | {r['params'] / 1e6:.0f}M | {r['method']} | {r['trainable_params']:,} "
                         f"| {r['tokens_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")
        else:
            lines.append(f"| {r['model']} | {r['params'] / 1e6:.0f}M | {r['method']} | | "
                         f"{r.get('skipped') or 'failed: ' + ' '.join(r['error'])[:100]} | |")
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / f"{name}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
